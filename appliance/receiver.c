/* receiver.c - verification of an incoming cycle: every extent is in order, in range and intact
 * before it is stored, and CYCLE_END proves nothing was lost or reordered on the way. */
#include "receiver.h"

#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "rpl_log.h"

struct receiver {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t disk_size;
  uint64_t last_committed;
  uint64_t cycle;            /* in progress, or 0 */
  uint8_t kind;
  bool ended;                /* CYCLE_END verified, commit pending */
  struct receiver_totals totals;
  struct proto_digest digest;
  ZSTD_DCtx *dctx;
  uint8_t *scratch;          /* PROTO_MAX_EXTENT bytes: decompressed payloads */
  uint8_t zero_hash[PROTO_HASH_SIZE];
  uint32_t zero_hash_len;    /* length zero_hash was computed for (0: none yet) */
};

rpl_err receiver_create(const uint8_t disk_id[PROTO_ID_SIZE], uint64_t disk_size, uint64_t last_committed,
                        struct receiver **out)
{
  *out = NULL;
  struct receiver *r = calloc(1, sizeof *r);
  if (!r)
    return RPL_E_NOMEM;
  r->dctx = ZSTD_createDCtx();
  r->scratch = malloc(PROTO_MAX_EXTENT);
  if (!r->dctx || !r->scratch) {
    receiver_destroy(r);
    return RPL_E_NOMEM;
  }
  memcpy(r->disk_id, disk_id, PROTO_ID_SIZE);
  r->disk_size = disk_size;
  r->last_committed = last_committed;
  *out = r;
  return RPL_OK;
}

void receiver_destroy(struct receiver *r)
{
  if (!r)
    return;
  ZSTD_freeDCtx(r->dctx);
  free(r->scratch);
  free(r);
}

rpl_err receiver_begin(struct receiver *r, uint64_t cycle, uint8_t kind)
{
  if (cycle != r->last_committed + 1) {
    log_err("cycle %llu refused: the last committed cycle is %llu", (unsigned long long)cycle,
            (unsigned long long)r->last_committed);
    return RPL_E_CYCLE_ORDER;
  }
  r->cycle = cycle;
  r->kind = kind;
  r->ended = false;
  memset(&r->totals, 0, sizeof r->totals);
  proto_digest_init(&r->digest);
  return RPL_OK;
}

static const uint8_t *zero_hash(struct receiver *r, uint32_t length)
{
  if (r->zero_hash_len != length) {
    memset(r->scratch, 0, length);
    proto_hash128(r->scratch, length, r->zero_hash);
    r->zero_hash_len = length;
  }
  return r->zero_hash;
}

rpl_err receiver_extent(struct receiver *r, const struct proto_extent *m, const uint8_t **raw)
{
  return receiver_extent_into(r, m, NULL, raw);
}

rpl_err receiver_extent_into(struct receiver *r, const struct proto_extent *m, uint8_t *into, const uint8_t **raw)
{
  if (raw)
    *raw = NULL;
  if (!r->cycle || r->ended || m->cycle != r->cycle || memcmp(m->disk_id, r->disk_id, PROTO_ID_SIZE))
    return RPL_E_CYCLE_MISMATCH;
  if (m->offset > r->disk_size || m->length > r->disk_size - m->offset)
    return RPL_E_EXTENT_RANGE;
  uint8_t h[PROTO_HASH_SIZE];
  switch (m->codec) {
  case PROTO_CODEC_ZERO:
    memcpy(h, zero_hash(r, m->length), sizeof h);
    break;
  case PROTO_CODEC_NONE:
    proto_hash128(m->payload.ptr, m->payload.len, h);
    if (raw)
      *raw = m->payload.ptr;
    break;
  case PROTO_CODEC_ZSTD: {
    /* The frame must declare exactly the extent's size before we spend anything on it. */
    unsigned long long declared = ZSTD_getFrameContentSize(m->payload.ptr, m->payload.len);
    if (declared != m->length)
      return RPL_E_EXTENT_DECOMPRESS;
    uint8_t *out = into ? into : r->scratch;
    size_t n = ZSTD_decompressDCtx(r->dctx, out, m->length, m->payload.ptr, m->payload.len);
    if (ZSTD_isError(n) || n != m->length)
      return RPL_E_EXTENT_DECOMPRESS;
    if (!into)
      r->zero_hash_len = 0; /* scratch was overwritten */
    proto_hash128(out, m->length, h);
    if (raw)
      *raw = out;
    break;
  }
  default:
    return RPL_E_PROTO_FIELD;
  }
  if (memcmp(h, m->hash, sizeof h) != 0)
    return RPL_E_CHECKSUM;
  proto_digest_update(&r->digest, m->hash);
  r->totals.extents++;
  r->totals.raw_bytes += m->length;
  r->totals.payload_bytes += m->payload.len;
  return RPL_OK;
}

rpl_err receiver_end(struct receiver *r, const struct proto_cycle_end *m, struct receiver_totals *totals)
{
  if (!r->cycle || r->ended || m->cycle != r->cycle || memcmp(m->disk_id, r->disk_id, PROTO_ID_SIZE))
    return RPL_E_CYCLE_MISMATCH;
  uint8_t d[PROTO_HASH_SIZE];
  proto_digest_final(&r->digest, d);
  if (m->extents != r->totals.extents || m->raw_bytes != r->totals.raw_bytes ||
      m->payload_bytes != r->totals.payload_bytes || memcmp(d, m->digest, sizeof d) != 0)
    return RPL_E_CYCLE_TOTALS;
  r->ended = true;
  if (totals)
    *totals = r->totals;
  return RPL_OK;
}

void receiver_committed(struct receiver *r)
{
  if (r->cycle && r->ended)
    r->last_committed = r->cycle;
  r->cycle = 0;
  r->ended = false;
}

void receiver_abort(struct receiver *r)
{
  r->cycle = 0;
  r->ended = false;
}

uint64_t receiver_last_committed(const struct receiver *r) { return r->last_committed; }
bool receiver_in_cycle(const struct receiver *r) { return r->cycle != 0; }
void receiver_set_disk_size(struct receiver *r, uint64_t disk_size) { r->disk_size = disk_size; }
