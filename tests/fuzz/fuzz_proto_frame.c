/* fuzz_proto_frame.c - libFuzzer target for the frame decoder: one-shot parse, message decoders,
 * and the streaming decoder fed the same bytes in pieces whose sizes come from the input, also with
 * raw extents split off into buffers of their own. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  /* One-shot: every frame found is decoded by type. */
  size_t off = 0;
  int oneshot_frames = 0;
  for (;;) {
    struct proto_frame f;
    size_t used;
    rpl_err e = proto_frame_parse(data + off, size - off, &f, &used);
    if (e != RPL_OK)
      break;
    (void)proto_validate(&f);
    off += used;
    oneshot_frames++;
  }

  /* Streaming: the first byte picks the piece size; the decoder must find the same frames. */
  size_t piece = size ? (size_t)data[0] % 64 + 1 : 1;
  struct proto_decoder d;
  proto_decoder_init(&d);
  int stream_frames = 0;
  rpl_err e = RPL_OK;
  for (size_t pos = 0; pos < size && (e == RPL_OK || e == RPL_E_AGAIN);) {
    size_t n = size - pos < piece ? size - pos : piece;
    if (pos % 2) { /* alternate both input paths */
      e = proto_decoder_feed(&d, data + pos, n);
    } else {
      uint8_t *space;
      size_t avail;
      e = proto_decoder_reserve(&d, &space, &avail);
      if (e == RPL_OK) {
        if (n > avail)
          n = avail;
        memcpy(space, data + pos, n);
        proto_decoder_commit(&d, n);
      }
    }
    if (e != RPL_OK)
      break;
    pos += n;
    struct proto_frame f;
    while ((e = proto_decoder_next(&d, &f)) == RPL_OK) {
      (void)proto_validate(&f);
      stream_frames++;
    }
  }
  if (e == RPL_OK || e == RPL_E_AGAIN)
    (void)proto_decoder_finish(&d);
  /* Both paths read the same leading frames. */
  if (stream_frames > oneshot_frames)
    abort();
  proto_decoder_free(&d);

  /* Streaming with raw extents split off into buffers of their own (conn.c's extent sink): the same
   * leading frames, every split one a valid EXTENT whose bytes are the input's. */
  proto_decoder_init(&d);
  int split_frames = 0;
  e = RPL_OK;
  for (size_t pos = 0; pos < size && (e == RPL_OK || e == RPL_E_AGAIN);) {
    size_t n = size - pos < piece ? size - pos : piece;
    if ((e = proto_decoder_feed(&d, data + pos, n)) != RPL_OK)
      break;
    pos += n;
    struct proto_frame f;
    for (;;) {
      e = proto_decoder_next(&d, &f);
      if (e == RPL_OK) {
        (void)proto_validate(&f);
        split_frames++;
        continue;
      }
      struct proto_split x;
      if (e != RPL_E_AGAIN || proto_decoder_peek_extent(&d, 1, &x) != RPL_OK)
        break;
      uint8_t *dst = malloc(x.m.payload.len);
      if (!dst)
        abort();
      proto_decoder_split_extent(&d, &x, dst);
      size_t rest = x.m.payload.len - x.have;
      if (rest > size - pos) { /* the input ends inside the extent */
        free(dst);
        e = RPL_E_PROTO_TRUNCATED;
        break;
      }
      memcpy(dst + x.have, data + pos, rest);
      pos += rest;
      x.have = x.m.payload.len;
      e = proto_split_finish(&x, &f);
      struct proto_extent m;
      if (e == RPL_OK && (proto_decode_extent(&f, &m) != RPL_OK || m.payload.ptr != dst ||
                          memcmp(dst, data + pos - x.m.payload.len, x.m.payload.len) != 0))
        abort();
      free(dst);
      if (e != RPL_OK)
        break;
      split_frames++;
    }
  }
  if (split_frames > oneshot_frames)
    abort();
  proto_decoder_free(&d);
  return 0;
}
