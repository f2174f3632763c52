/* test_proto.c - Description: wire protocol round trips, every malformed-frame error, streaming at
 * every split point, CRC32C vectors and the hardware/portable paths agreeing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "proto.h"
#include "proto_internal.h"

#include <xxhash.h>

#define BYTES(s) ((struct proto_bytes){(const uint8_t *)(s), (uint32_t)strlen(s)})

static void fill_id(uint8_t *id, uint8_t seed)
{
  for (int i = 0; i < PROTO_ID_SIZE; i++)
    id[i] = (uint8_t)(seed + i * 7);
}

static struct proto_frame parse_one(const struct proto_buf *b)
{
  struct proto_frame f;
  size_t used;
  assert_int_equal(proto_frame_parse(b->data, b->len, &f, &used), RPL_OK);
  assert_int_equal(used, b->len);
  return f;
}

static void assert_bytes(struct proto_bytes got, struct proto_bytes want)
{
  assert_int_equal(got.len, want.len);
  if (want.len)
    assert_memory_equal(got.ptr, want.ptr, want.len);
}

/* Rewrites the header CRC of the frame at p (after a test changed its bytes). */
static void reseal(uint8_t *p, size_t frame_len)
{
  uint32_t crc = proto_crc32c(0, p, 12);
  crc = proto_crc32c(crc, p + PROTO_HEADER_SIZE, frame_len - PROTO_HEADER_SIZE);
  for (int i = 0; i < 4; i++)
    p[12 + i] = (uint8_t)(crc >> (8 * i));
}

/* ---- round trips -------------------------------------------------------------------------- */

static void test_roundtrip_hello_register(void **state)
{
  struct proto_buf b = {0};
  struct proto_hello h = {.version_min = 1, .version_max = 3, .capabilities = PROTO_CAP_ZSTD | PROTO_CAP_FREEZE,
                          .hostname = BYTES("db01.example")};
  fill_id(h.agent_id, 1);
  assert_int_equal(proto_encode_hello(&b, &h), RPL_OK);
  struct proto_frame f = parse_one(&b);
  assert_int_equal(f.type, PROTO_HELLO);
  struct proto_hello h2;
  assert_int_equal(proto_decode_hello(&f, &h2), RPL_OK);
  assert_memory_equal(h2.agent_id, h.agent_id, PROTO_ID_SIZE);
  assert_int_equal(h2.version_min, 1);
  assert_int_equal(h2.version_max, 3);
  assert_true(h2.capabilities == h.capabilities);
  assert_bytes(h2.hostname, h.hostname);

  proto_buf_reset(&b);
  struct proto_register r = {.hostname = BYTES("db01"), .csr_pem = BYTES("-----BEGIN CERTIFICATE REQUEST-----\nMII\n")};
  memset(r.secret, 0xa5, sizeof r.secret);
  assert_int_equal(proto_encode_register(&b, &r), RPL_OK);
  f = parse_one(&b);
  struct proto_register r2;
  assert_int_equal(proto_decode_register(&f, &r2), RPL_OK);
  assert_memory_equal(r2.secret, r.secret, PROTO_SECRET_SIZE);
  assert_bytes(r2.hostname, r.hostname);
  assert_bytes(r2.csr_pem, r.csr_pem);

  proto_buf_reset(&b);
  struct proto_registered rd = {.cert_pem = BYTES("-----BEGIN CERTIFICATE-----\nMII\n")};
  fill_id(rd.agent_id, 9);
  assert_int_equal(proto_encode_registered(&b, &rd), RPL_OK);
  f = parse_one(&b);
  struct proto_registered rd2;
  assert_int_equal(proto_decode_registered(&f, &rd2), RPL_OK);
  assert_memory_equal(rd2.agent_id, rd.agent_id, PROTO_ID_SIZE);
  assert_bytes(rd2.cert_pem, rd.cert_pem);
  proto_buf_free(&b);
}

static void test_roundtrip_disk_cycle(void **state)
{
  struct proto_buf b = {0};
  struct proto_disk d = {.size_bytes = 1ull << 40, .sector_size = 4096, .name = BYTES("/dev/sdb")};
  fill_id(d.disk_id, 3);
  assert_int_equal(proto_encode_disk(&b, &d), RPL_OK);
  struct proto_frame f = parse_one(&b);
  struct proto_disk d2;
  assert_int_equal(proto_decode_disk(&f, &d2), RPL_OK);
  assert_memory_equal(d2.disk_id, d.disk_id, PROTO_ID_SIZE);
  assert_true(d2.size_bytes == d.size_bytes);
  assert_int_equal(d2.sector_size, 4096);
  assert_bytes(d2.name, d.name);

  proto_buf_reset(&b);
  struct proto_cycle_start cs = {.cycle = 42, .kind = PROTO_CYCLE_RECOVERY_POINT, .group = 3};
  fill_id(cs.disk_id, 3);
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_OK);
  f = parse_one(&b);
  struct proto_cycle_start cs2;
  assert_int_equal(proto_decode_cycle_start(&f, &cs2), RPL_OK);
  assert_true(cs2.cycle == 42);
  assert_int_equal(cs2.kind, PROTO_CYCLE_RECOVERY_POINT);
  assert_int_equal(cs2.group, 3);
  assert_memory_equal(cs2.disk_id, cs.disk_id, PROTO_ID_SIZE);

  proto_buf_reset(&b);
  struct proto_cycle_end ce = {.cycle = 42, .extents = 3, .raw_bytes = 3 << 20, .payload_bytes = 12345,
                               .consistency = PROTO_FS_CONSISTENT};
  fill_id(ce.disk_id, 3);
  memset(ce.digest, 0x3c, sizeof ce.digest);
  assert_int_equal(proto_encode_cycle_end(&b, &ce), RPL_OK);
  f = parse_one(&b);
  struct proto_cycle_end ce2;
  assert_int_equal(proto_decode_cycle_end(&f, &ce2), RPL_OK);
  assert_memory_equal(&ce2, &ce, offsetof(struct proto_cycle_end, digest));
  assert_memory_equal(ce2.digest, ce.digest, PROTO_HASH_SIZE);
  assert_int_equal(ce2.consistency, PROTO_FS_CONSISTENT);

  /* Version 2: points without hooks, application-consistent and catch-up ends, the freeze's length. */
  proto_buf_reset(&b);
  cs.kind = PROTO_CYCLE_POINT_NO_HOOKS;
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_OK);
  f = parse_one(&b);
  assert_int_equal(proto_decode_cycle_start(&f, &cs2), RPL_OK);
  assert_int_equal(cs2.kind, PROTO_CYCLE_POINT_NO_HOOKS);
  assert_true(proto_cycle_is_point(cs2.kind) && !proto_cycle_is_point(PROTO_CYCLE_RESYNC));
  cs.kind = PROTO_CYCLE_REPLAY; /* a takeover's replay: not a point, one disk */
  cs.group = 1;
  proto_buf_reset(&b);
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_OK);
  f = parse_one(&b);
  assert_int_equal(proto_decode_cycle_start(&f, &cs2), RPL_OK);
  assert_int_equal(cs2.kind, PROTO_CYCLE_REPLAY);
  assert_false(proto_cycle_is_point(cs2.kind));
  cs.kind = PROTO_CYCLE_REPLAY + 1;
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_E_PROTO_FIELD);
  for (uint8_t c = PROTO_APP_CONSISTENT; c <= PROTO_PRECOPY; c++) {
    proto_buf_reset(&b);
    ce.consistency = c;
    ce.freeze_ms = 1234;
    assert_int_equal(proto_encode_cycle_end(&b, &ce), RPL_OK);
    f = parse_one(&b);
    assert_int_equal(proto_decode_cycle_end(&f, &ce2), RPL_OK);
    assert_int_equal(ce2.consistency, c);
    assert_int_equal(ce2.freeze_ms, 1234);
  }
  assert_string_equal(proto_consistency_name(PROTO_APP_CONSISTENT), "application-consistent");
  ce.consistency = PROTO_PRECOPY + 1;
  assert_int_equal(proto_encode_cycle_end(&b, &ce), RPL_E_PROTO_FIELD);
  proto_buf_free(&b);
}

static void test_roundtrip_extent_all_codecs(void **state)
{
  static uint8_t data[8192];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i * 31);
  struct proto_buf b = {0};
  const struct { uint8_t codec; uint32_t payload_len; } cases[] = {
    {PROTO_CODEC_NONE, sizeof data}, {PROTO_CODEC_ZSTD, 77}, {PROTO_CODEC_ZERO, 0}};
  for (size_t c = 0; c < 3; c++) {
    proto_buf_reset(&b);
    struct proto_extent e = {.cycle = 9, .offset = 1ull << 33, .length = sizeof data, .codec = cases[c].codec,
                             .payload = {data, cases[c].payload_len}};
    fill_id(e.disk_id, 5);
    proto_hash128(data, sizeof data, e.hash);
    assert_int_equal(proto_encode_extent(&b, &e), RPL_OK);
    struct proto_frame f = parse_one(&b);
    struct proto_extent e2;
    assert_int_equal(proto_decode_extent(&f, &e2), RPL_OK);
    assert_memory_equal(e2.disk_id, e.disk_id, PROTO_ID_SIZE);
    assert_true(e2.cycle == 9 && e2.offset == e.offset);
    assert_int_equal(e2.length, sizeof data);
    assert_int_equal(e2.codec, cases[c].codec);
    assert_memory_equal(e2.hash, e.hash, PROTO_HASH_SIZE);
    assert_bytes(e2.payload, e.payload);

    /* The zero-copy prefix + payload is the same frame, byte for byte. */
    uint8_t prefix[PROTO_EXTENT_PREFIX_SIZE];
    assert_int_equal(proto_encode_extent_prefix(prefix, &e), RPL_OK);
    assert_int_equal(b.len, sizeof prefix + e.payload.len);
    assert_memory_equal(b.data, prefix, sizeof prefix);
  }
  proto_buf_free(&b);
}

static void test_roundtrip_ack_nack_hb_error(void **state)
{
  struct proto_buf b = {0};
  struct proto_ack a = {.cycle = 77};
  fill_id(a.disk_id, 2);
  assert_int_equal(proto_encode_ack(&b, &a), RPL_OK);
  struct proto_frame f = parse_one(&b);
  struct proto_ack a2;
  assert_int_equal(proto_decode_ack(&f, &a2), RPL_OK);
  assert_true(a2.cycle == 77);
  assert_memory_equal(a2.disk_id, a.disk_id, PROTO_ID_SIZE);

  proto_buf_reset(&b);
  struct proto_stored st = {.cycle = 76};
  fill_id(st.disk_id, 3);
  assert_int_equal(proto_encode_stored(&b, &st), RPL_OK);
  f = parse_one(&b);
  assert_string_equal(proto_type_name(f.type), "STORED");
  struct proto_stored st2;
  assert_int_equal(proto_decode_stored(&f, &st2), RPL_OK);
  assert_true(st2.cycle == 76);
  assert_memory_equal(st2.disk_id, st.disk_id, PROTO_ID_SIZE);
  st.cycle = 0;
  assert_int_equal(proto_encode_stored(&b, &st), RPL_E_PROTO_FIELD);

  proto_buf_reset(&b);
  struct proto_members mb = {.count = 2, .address = {BYTES("10.0.0.5:9443"), BYTES("[fd00::6]:9443")}};
  assert_int_equal(proto_encode_members(&b, &mb), RPL_OK);
  f = parse_one(&b);
  struct proto_members mb2;
  assert_int_equal(proto_decode_members(&f, &mb2), RPL_OK);
  assert_int_equal(mb2.count, 2);
  assert_int_equal(mb2.address[1].len, strlen("[fd00::6]:9443"));
  assert_memory_equal(mb2.address[1].ptr, "[fd00::6]:9443", mb2.address[1].len);
  mb.count = 0;
  assert_int_equal(proto_encode_members(&b, &mb), RPL_E_PROTO_FIELD);
  mb.count = PROTO_MAX_MEMBERS + 1;
  assert_int_equal(proto_encode_members(&b, &mb), RPL_E_PROTO_FIELD);
  mb = (struct proto_members){.count = 1, .address = {BYTES("host name:1")}};
  assert_int_equal(proto_encode_members(&b, &mb), RPL_E_PROTO_FIELD); /* a blank is no address */
  /* A count past the limit is refused before any address is read. */
  proto_buf_reset(&b);
  mb = (struct proto_members){.count = 1, .address = {BYTES("a:1")}};
  assert_int_equal(proto_encode_members(&b, &mb), RPL_OK);
  b.data[PROTO_HEADER_SIZE + 3] = PROTO_MAX_MEMBERS + 1; /* big-endian u32 count */
  reseal(b.data, b.len);
  f = parse_one(&b);
  assert_int_equal(proto_decode_members(&f, &mb2), RPL_E_PROTO_FIELD);

  proto_buf_reset(&b);
  struct proto_nack n = {.cycle = 77, .reason = RPL_E_CHECKSUM, .message = BYTES("extent 3 hash mismatch")};
  assert_int_equal(proto_encode_nack(&b, &n), RPL_OK);
  f = parse_one(&b);
  struct proto_nack n2;
  assert_int_equal(proto_decode_nack(&f, &n2), RPL_OK);
  assert_int_equal(n2.reason, RPL_E_CHECKSUM);
  assert_true(n2.cycle == 77);
  assert_bytes(n2.message, n.message);

  proto_buf_reset(&b);
  struct proto_heartbeat hb = {.sequence = 5, .time_ns = 1700000000123456789ull, .dirty_bytes = 3ull << 30};
  assert_int_equal(proto_encode_heartbeat(&b, &hb), RPL_OK);
  f = parse_one(&b);
  struct proto_heartbeat hb2;
  assert_int_equal(proto_decode_heartbeat(&f, &hb2), RPL_OK);
  assert_true(hb2.sequence == 5 && hb2.time_ns == hb.time_ns && hb2.dirty_bytes == hb.dirty_bytes);

  proto_buf_reset(&b);
  struct proto_error er = {.code = RPL_E_PROTO_NO_COMMON_VERSION, .message = BYTES("peer speaks 2..3, we speak 1..1")};
  assert_int_equal(proto_encode_error(&b, &er), RPL_OK);
  f = parse_one(&b);
  struct proto_error er2;
  assert_int_equal(proto_decode_error(&f, &er2), RPL_OK);
  assert_int_equal(er2.code, RPL_E_PROTO_NO_COMMON_VERSION);
  assert_bytes(er2.message, er.message);
  proto_buf_free(&b);
}

static void test_roundtrip_unprotect(void **state)
{
  (void)state;
  struct proto_buf b = {0};
  struct proto_unprotect u = {.flags = 0};
  fill_id(u.disk_id, 9);
  assert_int_equal(proto_encode_unprotect(&b, &u), RPL_OK);
  struct proto_frame f = parse_one(&b);
  assert_string_equal(proto_type_name(f.type), "UNPROTECT");
  assert_int_equal(proto_validate(&f), RPL_OK);
  struct proto_unprotect u2;
  assert_int_equal(proto_decode_unprotect(&f, &u2), RPL_OK);
  assert_int_equal(u2.flags, 0);
  assert_memory_equal(u2.disk_id, u.disk_id, PROTO_ID_SIZE);
  /* The deletion flag round-trips. */
  proto_buf_reset(&b);
  u.flags = PROTO_UNPROTECT_DELETE_REPLICA;
  assert_int_equal(proto_encode_unprotect(&b, &u), RPL_OK);
  f = parse_one(&b);
  assert_int_equal(proto_decode_unprotect(&f, &u2), RPL_OK);
  assert_int_equal(u2.flags, PROTO_UNPROTECT_DELETE_REPLICA);
  /* A flag this build does not know is refused: it may ask for more than is done. */
  proto_buf_reset(&b);
  u.flags = 2;
  assert_int_equal(proto_encode_unprotect(&b, &u), RPL_E_PROTO_FIELD);
  proto_buf_free(&b);
}

/* UNPROTECT_REQUEST: the page's unprotect, appliance -> agent; the same checks as UNPROTECT, on the
 * way out and on the way in (a peer's frame is sealed here by hand). */
static void test_roundtrip_unprotect_request(void **state)
{
  (void)state;
  struct proto_buf b = {0};
  struct proto_unprotect_request u = {.flags = PROTO_UNPROTECT_DELETE_REPLICA};
  fill_id(u.disk_id, 21);
  assert_int_equal(proto_encode_unprotect_request(&b, &u), RPL_OK);
  struct proto_frame f = parse_one(&b);
  assert_int_equal(f.type, PROTO_UNPROTECT_REQUEST);
  assert_string_equal(proto_type_name(f.type), "UNPROTECT_REQUEST");
  assert_int_equal(proto_validate(&f), RPL_OK);
  struct proto_unprotect_request u2;
  assert_int_equal(proto_decode_unprotect_request(&f, &u2), RPL_OK);
  assert_int_equal(u2.flags, PROTO_UNPROTECT_DELETE_REPLICA);
  assert_memory_equal(u2.disk_id, u.disk_id, PROTO_ID_SIZE);
  /* It is not an UNPROTECT: the agent's decoder for that refuses it. */
  struct proto_unprotect other;
  assert_int_equal(proto_decode_unprotect(&f, &other), RPL_E_PROTO_UNEXPECTED);
  /* Without the flag: the replica is kept. */
  proto_buf_reset(&b);
  u.flags = 0;
  assert_int_equal(proto_encode_unprotect_request(&b, &u), RPL_OK);
  f = parse_one(&b);
  assert_int_equal(proto_decode_unprotect_request(&f, &u2), RPL_OK);
  assert_int_equal(u2.flags, 0);
  /* An unknown flag bit is refused when encoding, and in a frame received. */
  proto_buf_reset(&b);
  u.flags = 0x80;
  assert_int_equal(proto_encode_unprotect_request(&b, &u), RPL_E_PROTO_FIELD);
  u.flags = 0;
  assert_int_equal(proto_encode_unprotect_request(&b, &u), RPL_OK);
  uint8_t buf[64];
  assert_true(b.len <= sizeof buf);
  memcpy(buf, b.data, b.len);
  buf[PROTO_HEADER_SIZE + PROTO_ID_SIZE] = 0x82;
  reseal(buf, b.len);
  size_t used;
  assert_int_equal(proto_frame_parse(buf, b.len, &f, &used), RPL_OK);
  assert_int_equal(proto_decode_unprotect_request(&f, &u2), RPL_E_PROTO_FIELD);
  assert_int_equal(proto_validate(&f), RPL_E_PROTO_FIELD);
  /* A payload that stops before the flags byte is refused as short. */
  uint32_t plen = PROTO_ID_SIZE;
  for (int i = 0; i < 4; i++)
    buf[8 + i] = (uint8_t)(plen >> (8 * i));
  reseal(buf, b.len - 1);
  assert_int_equal(proto_frame_parse(buf, b.len - 1, &f, &used), RPL_OK);
  assert_int_equal(proto_decode_unprotect_request(&f, &u2), RPL_E_PROTO_SHORT);
  proto_buf_free(&b);
}

/* The group point's frames: GROUP_POINT_REQUEST's name rules, GROUP_FREEZE's count checked before
 * its ids are taken, GROUP_FROZEN's status and times, GROUP_THAW. */
static void test_roundtrip_group_frames(void **state)
{
  (void)state;
  struct proto_buf b = {0};
  struct proto_frame f;
  size_t used;
  struct proto_group_point_request rq = {.request = 7, .name = BYTES("db-tier.1_A")}, rq2;
  assert_int_equal(proto_encode_group_point_request(&b, &rq), RPL_OK);
  f = parse_one(&b);
  assert_string_equal(proto_type_name(f.type), "GROUP_POINT_REQUEST");
  assert_int_equal(proto_validate(&f), RPL_OK);
  assert_int_equal(proto_decode_group_point_request(&f, &rq2), RPL_OK);
  assert_int_equal(rq2.request, 7);
  assert_bytes(rq2.name, rq.name);
  const char *bad_names[] = {"", "a b", "x/y", "ümlaut", "0123456789012345678901234567890123456789012345678901234567890123456789"};
  for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
    rq.name = BYTES(bad_names[i]);
    assert_int_equal(proto_encode_group_point_request(&b, &rq), RPL_E_PROTO_FIELD);
  }
  /* A bad name sealed by hand is refused on the way in. */
  proto_buf_reset(&b);
  rq.name = BYTES("abc");
  assert_int_equal(proto_encode_group_point_request(&b, &rq), RPL_OK);
  uint8_t buf[128];
  memcpy(buf, b.data, b.len);
  buf[PROTO_HEADER_SIZE + 8 + 4 + 1] = ' ';
  reseal(buf, b.len);
  assert_int_equal(proto_frame_parse(buf, b.len, &f, &used), RPL_OK);
  assert_int_equal(proto_decode_group_point_request(&f, &rq2), RPL_E_PROTO_FIELD);

  uint8_t ids[2 * PROTO_ID_SIZE];
  fill_id(ids, 3);
  fill_id(ids + PROTO_ID_SIZE, 9);
  struct proto_group_freeze gf = {.attempt = 5, .limit_ms = 2000, .hooks = 1, .count = 2, .disk_ids = ids}, gf2;
  proto_buf_reset(&b);
  assert_int_equal(proto_encode_group_freeze(&b, &gf), RPL_OK);
  f = parse_one(&b);
  assert_string_equal(proto_type_name(f.type), "GROUP_FREEZE");
  assert_int_equal(proto_decode_group_freeze(&f, &gf2), RPL_OK);
  assert_int_equal(gf2.attempt, 5);
  assert_int_equal(gf2.limit_ms, 2000);
  assert_int_equal(gf2.hooks, 1);
  assert_int_equal(gf2.count, 2);
  assert_memory_equal(gf2.disk_ids, ids, sizeof ids);
  /* A count larger than the frame holds: refused as short, nothing read past the payload. */
  memcpy(buf, b.data, b.len);
  buf[PROTO_HEADER_SIZE + 8 + 4 + 1] = 3;
  reseal(buf, b.len);
  assert_int_equal(proto_frame_parse(buf, b.len, &f, &used), RPL_OK);
  assert_int_equal(proto_decode_group_freeze(&f, &gf2), RPL_E_PROTO_SHORT);
  /* A count over the cap: refused before the ids are taken. */
  buf[PROTO_HEADER_SIZE + 8 + 4 + 1] = 0xff;
  buf[PROTO_HEADER_SIZE + 8 + 4 + 2] = 0xff;
  reseal(buf, b.len);
  assert_int_equal(proto_frame_parse(buf, b.len, &f, &used), RPL_OK);
  assert_int_equal(proto_decode_group_freeze(&f, &gf2), RPL_E_PROTO_FIELD);
  struct proto_group_freeze badf[] = {
    {.attempt = 0, .limit_ms = 1, .count = 1, .disk_ids = ids},
    {.attempt = 1, .limit_ms = 0, .count = 1, .disk_ids = ids},
    {.attempt = 1, .limit_ms = PROTO_GROUP_FREEZE_MAX_MS + 1, .count = 1, .disk_ids = ids},
    {.attempt = 1, .limit_ms = 1, .hooks = 2, .count = 1, .disk_ids = ids},
    {.attempt = 1, .limit_ms = 1, .count = 0, .disk_ids = ids},
  };
  for (size_t i = 0; i < sizeof badf / sizeof badf[0]; i++)
    assert_int_equal(proto_encode_group_freeze(&b, &badf[i]), RPL_E_PROTO_FIELD);

  struct proto_group_frozen fz = {.attempt = 5, .frozen_at_us = 1700000000000001ull, .filesystems = 2}, fz2;
  proto_buf_reset(&b);
  assert_int_equal(proto_encode_group_frozen(&b, &fz), RPL_OK);
  f = parse_one(&b);
  assert_string_equal(proto_type_name(f.type), "GROUP_FROZEN");
  assert_int_equal(proto_decode_group_frozen(&f, &fz2), RPL_OK);
  assert_int_equal(fz2.attempt, 5);
  assert_int_equal(fz2.status, RPL_OK);
  assert_true(fz2.frozen_at_us == fz.frozen_at_us);
  assert_int_equal(fz2.filesystems, 2);
  /* A failure carries no freeze time; its message says why. */
  fz = (struct proto_group_frozen){.attempt = 5, .status = RPL_E_FREEZE, .message = BYTES("cannot freeze /mnt")};
  proto_buf_reset(&b);
  assert_int_equal(proto_encode_group_frozen(&b, &fz), RPL_OK);
  f = parse_one(&b);
  assert_int_equal(proto_decode_group_frozen(&f, &fz2), RPL_OK);
  assert_int_equal(fz2.status, RPL_E_FREEZE);
  assert_bytes(fz2.message, fz.message);
  fz.frozen_at_us = 1;
  assert_int_equal(proto_encode_group_frozen(&b, &fz), RPL_E_PROTO_FIELD);
  fz = (struct proto_group_frozen){.attempt = 0};
  assert_int_equal(proto_encode_group_frozen(&b, &fz), RPL_E_PROTO_FIELD);

  struct proto_group_thaw th = {.attempt = 9}, th2;
  proto_buf_reset(&b);
  assert_int_equal(proto_encode_group_thaw(&b, &th), RPL_OK);
  f = parse_one(&b);
  assert_string_equal(proto_type_name(f.type), "GROUP_THAW");
  assert_int_equal(proto_decode_group_thaw(&f, &th2), RPL_OK);
  assert_int_equal(th2.attempt, 9);
  /* Not another frame's: the decoders check the type. */
  assert_int_equal(proto_decode_group_freeze(&f, &gf2), RPL_E_PROTO_UNEXPECTED);
  /* Trailing bytes are refused. */
  memcpy(buf, b.data, b.len);
  buf[b.len] = 0;
  uint32_t plen = 9;
  for (int i = 0; i < 4; i++)
    buf[8 + i] = (uint8_t)(plen >> (8 * i));
  reseal(buf, b.len + 1);
  assert_int_equal(proto_frame_parse(buf, b.len + 1, &f, &used), RPL_OK);
  assert_int_equal(proto_decode_group_thaw(&f, &th2), RPL_E_PROTO_TRAILING);
  th.attempt = 0;
  assert_int_equal(proto_encode_group_thaw(&b, &th), RPL_E_PROTO_FIELD);
  proto_buf_free(&b);
}

static void test_roundtrip_points(void **state)
{
  struct proto_buf b = {0};
  uint8_t ids[3 * PROTO_ID_SIZE];
  for (size_t i = 0; i < sizeof ids; i++)
    ids[i] = (uint8_t)(i * 5);
  struct proto_point_request q = {.request = 99, .count = 3, .disk_ids = ids};
  assert_int_equal(proto_encode_point_request(&b, &q), RPL_OK);
  struct proto_frame f = parse_one(&b);
  struct proto_point_request q2;
  assert_int_equal(proto_decode_point_request(&f, &q2), RPL_OK);
  assert_true(q2.request == 99);
  assert_int_equal(q2.count, 3);
  assert_memory_equal(q2.disk_ids, ids, sizeof ids);
  q.count = 0;
  assert_int_equal(proto_encode_point_request(&b, &q), RPL_E_PROTO_FIELD);

  proto_buf_reset(&b);
  struct proto_point pt = {.request = 99, .status = RPL_OK, .consistency = PROTO_CRASH_CONSISTENT,
                           .point_id = BYTES("rp-20261128-153000-000042")};
  assert_int_equal(proto_encode_point(&b, &pt), RPL_OK);
  f = parse_one(&b);
  struct proto_point pt2;
  assert_int_equal(proto_decode_point(&f, &pt2), RPL_OK);
  assert_true(pt2.request == 99);
  assert_int_equal(pt2.consistency, PROTO_CRASH_CONSISTENT);
  assert_bytes(pt2.point_id, pt.point_id);
  pt.consistency = 7;
  assert_int_equal(proto_encode_point(&b, &pt), RPL_E_PROTO_FIELD);
  proto_buf_free(&b);
}

static void test_roundtrip_hashes_need(void **state)
{
  struct proto_buf b = {0};
  uint8_t hashes[5 * PROTO_HASH_SIZE];
  for (size_t i = 0; i < sizeof hashes; i++)
    hashes[i] = (uint8_t)i;
  struct proto_hashes h = {.chunk_size = 1 << 20, .first_chunk = 1000, .count = 5, .hashes = hashes};
  fill_id(h.disk_id, 8);
  assert_int_equal(proto_encode_hashes(&b, &h), RPL_OK);
  struct proto_frame f = parse_one(&b);
  struct proto_hashes h2;
  assert_int_equal(proto_decode_hashes(&f, &h2), RPL_OK);
  assert_int_equal(h2.count, 5);
  assert_int_equal(h2.chunk_size, 1 << 20);
  assert_true(h2.first_chunk == 1000);
  assert_memory_equal(h2.hashes, hashes, sizeof hashes);

  proto_buf_reset(&b);
  struct proto_need_range ranges[3] = {{0, 1}, {17, 4}, {1ull << 40, 100000}};
  struct proto_need n = {.chunk_size = 1 << 20, .count = 3};
  fill_id(n.disk_id, 8);
  assert_int_equal(proto_encode_need(&b, &n, ranges), RPL_OK);
  f = parse_one(&b);
  struct proto_need n2;
  assert_int_equal(proto_decode_need(&f, &n2), RPL_OK);
  assert_int_equal(n2.count, 3);
  for (uint32_t i = 0; i < 3; i++) {
    struct proto_need_range r = proto_need_range_at(&n2, i);
    assert_true(r.first_chunk == ranges[i].first_chunk);
    assert_int_equal(r.count, ranges[i].count);
  }
  proto_buf_free(&b);
}

/* ---- malformed frames --------------------------------------------------------------------- */

static void make_ack(struct proto_buf *b)
{
  struct proto_ack a = {.cycle = 1};
  proto_buf_reset(b);
  assert_int_equal(proto_encode_ack(b, &a), RPL_OK);
}

static rpl_err parse_err(const struct proto_buf *b)
{
  struct proto_frame f;
  size_t used;
  rpl_err e = proto_frame_parse(b->data, b->len, &f, &used);
  if (e == RPL_OK)
    e = proto_validate(&f);
  return e;
}

static void test_bad_header_fields(void **state)
{
  struct proto_buf b = {0};
  make_ack(&b);
  b.data[0] ^= 0xff;
  assert_int_equal(parse_err(&b), RPL_E_PROTO_MAGIC);

  make_ack(&b);
  b.data[4] = 2;
  assert_int_equal(parse_err(&b), RPL_E_PROTO_VERSION);

  make_ack(&b);
  b.data[5] = 0;
  assert_int_equal(parse_err(&b), RPL_E_PROTO_TYPE);
  b.data[5] = PROTO_TYPE_MAX + 1;
  assert_int_equal(parse_err(&b), RPL_E_PROTO_TYPE);

  make_ack(&b);
  b.data[6] = 1;
  assert_int_equal(parse_err(&b), RPL_E_PROTO_FLAGS);

  make_ack(&b);
  b.data[PROTO_HEADER_SIZE + 3] ^= 1; /* payload bit flip */
  assert_int_equal(parse_err(&b), RPL_E_PROTO_CRC);
  make_ack(&b);
  b.data[13] ^= 0x80; /* CRC bit flip */
  assert_int_equal(parse_err(&b), RPL_E_PROTO_CRC);
  proto_buf_free(&b);
}

static void test_length_over_cap_rejected_before_allocation(void **state)
{
  struct proto_buf b = {0};
  make_ack(&b);
  uint32_t len = PROTO_MAX_PAYLOAD + 1;
  for (int i = 0; i < 4; i++)
    b.data[8 + i] = (uint8_t)(len >> (8 * i));
  assert_int_equal(parse_err(&b), RPL_E_PROTO_TOO_LONG);

  /* The streaming decoder refuses the header before sizing a buffer for it. */
  struct proto_decoder d;
  proto_decoder_init(&d);
  assert_int_equal(proto_decoder_feed(&d, b.data, PROTO_HEADER_SIZE), RPL_OK);
  size_t before = d.alloc;
  uint8_t *space;
  size_t avail;
  assert_int_equal(proto_decoder_reserve(&d, &space, &avail), RPL_E_PROTO_TOO_LONG);
  assert_int_equal(d.alloc, before);
  struct proto_frame f;
  assert_int_equal(proto_decoder_next(&d, &f), RPL_E_PROTO_TOO_LONG); /* sticky */
  proto_decoder_free(&d);

  /* The largest legal frame is announced and the decoder grows to it, not beyond. */
  proto_decoder_init(&d);
  len = PROTO_MAX_PAYLOAD;
  for (int i = 0; i < 4; i++)
    b.data[8 + i] = (uint8_t)(len >> (8 * i));
  assert_int_equal(proto_decoder_feed(&d, b.data, PROTO_HEADER_SIZE), RPL_OK);
  assert_int_equal(proto_decoder_reserve(&d, &space, &avail), RPL_OK);
  assert_true(avail >= PROTO_MAX_PAYLOAD);
  assert_true(d.alloc <= PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD + (64u << 10));
  proto_decoder_free(&d);
  proto_buf_free(&b);
}

static void test_truncated_and_trailing(void **state)
{
  struct proto_buf b = {0};
  make_ack(&b);
  /* Truncated stream: decoder holds a partial frame at end of stream. */
  struct proto_decoder d;
  proto_decoder_init(&d);
  assert_int_equal(proto_decoder_feed(&d, b.data, b.len - 1), RPL_OK);
  struct proto_frame f;
  assert_int_equal(proto_decoder_next(&d, &f), RPL_E_AGAIN);
  assert_int_equal(proto_decoder_finish(&d), RPL_E_PROTO_TRUNCATED);
  proto_decoder_free(&d);

  /* One-shot parse of a partial frame says how much it needs. */
  size_t used;
  assert_int_equal(proto_frame_parse(b.data, b.len - 1, &f, &used), RPL_E_AGAIN);
  assert_int_equal(used, b.len);
  assert_int_equal(proto_frame_parse(b.data, 5, &f, &used), RPL_E_AGAIN);
  assert_int_equal(used, 0);

  /* Trailing bytes after the last field, with a valid CRC. */
  uint8_t buf[256];
  memcpy(buf, b.data, b.len);
  buf[b.len] = 0;
  uint32_t plen = (uint32_t)(b.len - PROTO_HEADER_SIZE + 1);
  for (int i = 0; i < 4; i++)
    buf[8 + i] = (uint8_t)(plen >> (8 * i));
  reseal(buf, b.len + 1);
  assert_int_equal(proto_frame_parse(buf, b.len + 1, &f, &used), RPL_OK);
  assert_int_equal(proto_validate(&f), RPL_E_PROTO_TRAILING);

  /* A payload ending inside a field. */
  plen = (uint32_t)(b.len - PROTO_HEADER_SIZE - 3);
  for (int i = 0; i < 4; i++)
    buf[8 + i] = (uint8_t)(plen >> (8 * i));
  reseal(buf, b.len - 3);
  assert_int_equal(proto_frame_parse(buf, b.len - 3, &f, &used), RPL_OK);
  assert_int_equal(proto_validate(&f), RPL_E_PROTO_SHORT);
  /* A decoder for the wrong type refuses the frame. */
  struct proto_nack n;
  make_ack(&b);
  f = parse_one(&b);
  assert_int_equal(proto_decode_nack(&f, &n), RPL_E_PROTO_UNEXPECTED);
  proto_buf_free(&b);
}

static void test_roundtrip_readiness(void **state)
{
  struct proto_buf b = {0};
  struct proto_readiness m = {.time_ns = 1700000000123456789ull, .generation = 2, .checks = 13, .failed = 1,
                              .warned = 2, .problems = BYTES("FAIL hv_storvsc: not in the initramfs\nWARN dhcp: static\n")};
  assert_int_equal(proto_encode_readiness(&b, &m), RPL_OK);
  struct proto_frame f = parse_one(&b);
  assert_string_equal(proto_type_name(f.type), "READINESS");
  struct proto_readiness m2;
  assert_int_equal(proto_decode_readiness(&f, &m2), RPL_OK);
  assert_true(m2.time_ns == m.time_ns);
  assert_int_equal(m2.generation, 2);
  assert_int_equal(m2.checks, 13);
  assert_int_equal(m2.failed, 1);
  assert_int_equal(m2.warned, 2);
  assert_bytes(m2.problems, m.problems);
  /* More failed and warned than checks, or a generation Azure does not have, is refused both ways. */
  m.failed = 12;
  assert_int_equal(proto_encode_readiness(&b, &m), RPL_E_PROTO_FIELD);
  m.failed = 1;
  m.generation = 3;
  assert_int_equal(proto_encode_readiness(&b, &m), RPL_E_PROTO_FIELD);
  b.data[PROTO_HEADER_SIZE + 8] = 3;
  reseal(b.data, b.len);
  assert_int_equal(parse_err(&b), RPL_E_PROTO_FIELD);
  proto_buf_free(&b);
}

static void test_fields_out_of_range(void **state)
{
  struct proto_buf b = {0};
  uint8_t data[1024] = {0};
  /* Encoders refuse out-of-range fields, so a bad frame is never sent... */
  struct proto_extent e = {.cycle = 1, .offset = 512, .length = 1024, .codec = PROTO_CODEC_NONE, .payload = {data, 1024}};
  e.length = 0;
  assert_int_equal(proto_encode_extent(&b, &e), RPL_E_PROTO_FIELD);
  e.length = 1000; /* not a multiple of 512 */
  assert_int_equal(proto_encode_extent(&b, &e), RPL_E_PROTO_FIELD);
  e.length = 1024;
  e.codec = 3;
  assert_int_equal(proto_encode_extent(&b, &e), RPL_E_PROTO_FIELD);
  e.codec = PROTO_CODEC_ZERO; /* zero extents carry no payload */
  assert_int_equal(proto_encode_extent(&b, &e), RPL_E_PROTO_FIELD);
  e.codec = PROTO_CODEC_NONE;
  e.offset = UINT64_MAX - 511;
  assert_int_equal(proto_encode_extent(&b, &e), RPL_E_PROTO_FIELD);
  e.offset = 512;
  e.cycle = 0;
  assert_int_equal(proto_encode_extent(&b, &e), RPL_E_PROTO_FIELD);
  assert_int_equal(b.len, 0); /* nothing appended on error */
  struct proto_disk d = {.size_bytes = 4096, .sector_size = 1000};
  assert_int_equal(proto_encode_disk(&b, &d), RPL_E_PROTO_FIELD);
  struct proto_hello h = {.version_min = 3, .version_max = 1};
  assert_int_equal(proto_encode_hello(&b, &h), RPL_E_PROTO_FIELD);
  struct proto_hashes hs = {.chunk_size = 3000, .count = 1, .hashes = data};
  assert_int_equal(proto_encode_hashes(&b, &hs), RPL_E_PROTO_FIELD);
  struct proto_cycle_start cs = {.cycle = 1, .kind = 9, .group = 1};
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_E_PROTO_FIELD);

  /* ...and decoders refuse them when a peer sends one anyway. */
  struct proto_cycle_start ok = {.cycle = 1, .kind = PROTO_CYCLE_PLAIN, .group = 1};
  assert_int_equal(proto_encode_cycle_start(&b, &ok), RPL_OK);
  b.data[b.len - 3] = 9; /* kind */
  reseal(b.data, b.len);
  assert_int_equal(parse_err(&b), RPL_E_PROTO_FIELD);
  /* a group of no cycle, or of plain cycles, is refused too */
  cs = (struct proto_cycle_start){.cycle = 1, .kind = PROTO_CYCLE_POINT_NO_HOOKS, .group = 0};
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_E_PROTO_FIELD);
  cs = (struct proto_cycle_start){.cycle = 1, .kind = PROTO_CYCLE_PLAIN, .group = 2};
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_E_PROTO_FIELD);
  cs = (struct proto_cycle_start){.cycle = 1, .kind = PROTO_CYCLE_RECOVERY_POINT, .group = PROTO_MAX_GROUP + 1};
  assert_int_equal(proto_encode_cycle_start(&b, &cs), RPL_E_PROTO_FIELD);

  /* A string length over its cap is refused before it is used. */
  proto_buf_reset(&b);
  struct proto_error er = {.code = 1, .message = BYTES("x")};
  assert_int_equal(proto_encode_error(&b, &er), RPL_OK);
  uint32_t big = PROTO_MAX_STRING + 1;
  for (int i = 0; i < 4; i++)
    b.data[PROTO_HEADER_SIZE + 4 + i] = (uint8_t)(big >> (8 * i));
  reseal(b.data, b.len);
  assert_int_equal(parse_err(&b), RPL_E_PROTO_FIELD);

  /* A hash count larger than the payload holds. */
  proto_buf_reset(&b);
  struct proto_hashes hs2 = {.chunk_size = 4096, .count = 1, .hashes = data};
  assert_int_equal(proto_encode_hashes(&b, &hs2), RPL_OK);
  b.data[PROTO_HEADER_SIZE + 16 + 4 + 8] = 2;
  reseal(b.data, b.len);
  assert_int_equal(parse_err(&b), RPL_E_PROTO_SHORT);
  proto_buf_free(&b);
}

static void test_buffer_cap(void **state)
{
  static uint8_t data[8192];
  struct proto_buf b = {.cap = 4096};
  struct proto_extent e = {.cycle = 1, .length = sizeof data, .codec = PROTO_CODEC_NONE, .payload = {data, sizeof data}};
  assert_int_equal(proto_encode_extent(&b, &e), RPL_E_LIMIT);
  assert_int_equal(b.len, 0);
  assert_true(b.alloc <= 4096);
  proto_buf_free(&b);
}

static void test_version_negotiation(void **state)
{
  uint16_t v = 0;
  char msg[128];
  assert_int_equal(proto_negotiate(1, 3, 2, 5, &v, msg, sizeof msg), RPL_OK);
  assert_int_equal(v, 3);
  assert_int_equal(proto_negotiate(1, 1, 1, 1, &v, msg, sizeof msg), RPL_OK);
  assert_int_equal(v, 1);
  assert_int_equal(proto_negotiate(1, 1, 2, 3, &v, msg, sizeof msg), RPL_E_PROTO_NO_COMMON_VERSION);
  assert_string_equal(msg, "no common protocol version: peer speaks 2..3, we speak 1..1");
  assert_int_equal(proto_negotiate(1, 4, 0, 0, &v, msg, sizeof msg), RPL_E_PROTO_NO_COMMON_VERSION);
}

/* ---- streaming ---------------------------------------------------------------------------- */

static size_t build_stream(struct proto_buf *b)
{
  static uint8_t data[2048];
  for (size_t i = 0; i < sizeof data; i++)
    data[i] = (uint8_t)(i ^ 0x5a);
  size_t frames = 0;
  struct proto_hello h = {.version_min = 1, .version_max = 1, .hostname = BYTES("host")};
  assert_int_equal(proto_encode_hello(b, &h), RPL_OK), frames++;
  struct proto_disk d = {.size_bytes = 1 << 30, .sector_size = 512, .name = BYTES("/dev/loop7")};
  assert_int_equal(proto_encode_disk(b, &d), RPL_OK), frames++;
  struct proto_cycle_start cs = {.cycle = 1, .group = 1};
  assert_int_equal(proto_encode_cycle_start(b, &cs), RPL_OK), frames++;
  for (int i = 0; i < 3; i++) {
    struct proto_extent e = {.cycle = 1, .offset = (uint64_t)i << 20, .length = sizeof data,
                             .codec = i == 1 ? PROTO_CODEC_ZERO : PROTO_CODEC_NONE,
                             .payload = {data, i == 1 ? 0 : sizeof data}};
    proto_hash128(data, sizeof data, e.hash);
    assert_int_equal(proto_encode_extent(b, &e), RPL_OK), frames++;
  }
  struct proto_cycle_end ce = {.cycle = 1, .extents = 3};
  assert_int_equal(proto_encode_cycle_end(b, &ce), RPL_OK), frames++;
  struct proto_heartbeat hb = {.sequence = 1};
  assert_int_equal(proto_encode_heartbeat(b, &hb), RPL_OK), frames++;
  return frames;
}

static size_t drain(struct proto_decoder *d, uint8_t *types)
{
  size_t n = 0;
  struct proto_frame f;
  rpl_err e;
  while ((e = proto_decoder_next(d, &f)) == RPL_OK) {
    assert_int_equal(proto_validate(&f), RPL_OK);
    types[n++] = f.type;
  }
  assert_int_equal(e, RPL_E_AGAIN);
  return n;
}

static void test_stream_split_at_every_byte(void **state)
{
  struct proto_buf b = {0};
  size_t frames = build_stream(&b);
  static const uint8_t want[] = {PROTO_HELLO, PROTO_DISK, PROTO_CYCLE_START, PROTO_EXTENT, PROTO_EXTENT,
                                 PROTO_EXTENT, PROTO_CYCLE_END, PROTO_HEARTBEAT};
  assert_int_equal(frames, sizeof want);
  for (size_t split = 0; split <= b.len; split++) {
    struct proto_decoder d;
    proto_decoder_init(&d);
    uint8_t types[16];
    assert_int_equal(proto_decoder_feed(&d, b.data, split), RPL_OK);
    size_t n = drain(&d, types);
    /* The second piece goes through reserve/commit, as a socket reader would. */
    size_t pos = split;
    while (pos < b.len) {
      uint8_t *space;
      size_t avail;
      assert_int_equal(proto_decoder_reserve(&d, &space, &avail), RPL_OK);
      assert_true(avail >= 1);
      size_t k = b.len - pos < avail ? b.len - pos : avail;
      memcpy(space, b.data + pos, k);
      proto_decoder_commit(&d, k);
      pos += k;
      n += drain(&d, types + n);
    }
    assert_int_equal(n, frames);
    assert_memory_equal(types, want, frames);
    assert_int_equal(proto_decoder_finish(&d), RPL_OK);
    proto_decoder_free(&d);
  }

  /* One byte at a time. */
  struct proto_decoder d;
  proto_decoder_init(&d);
  uint8_t types[16];
  size_t n = 0;
  for (size_t i = 0; i < b.len; i++) {
    assert_int_equal(proto_decoder_feed(&d, b.data + i, 1), RPL_OK);
    n += drain(&d, types + n);
  }
  assert_int_equal(n, frames);
  assert_int_equal(proto_decoder_finish(&d), RPL_OK);
  proto_decoder_free(&d);
  proto_buf_free(&b);
}

static void test_stream_corruption_is_sticky(void **state)
{
  struct proto_buf b = {0};
  build_stream(&b);
  b.data[PROTO_HEADER_SIZE + 2] ^= 0x10; /* inside the first frame */
  struct proto_decoder d;
  proto_decoder_init(&d);
  assert_int_equal(proto_decoder_feed(&d, b.data, b.len), RPL_OK);
  struct proto_frame f;
  assert_int_equal(proto_decoder_next(&d, &f), RPL_E_PROTO_CRC);
  assert_int_equal(proto_decoder_next(&d, &f), RPL_E_PROTO_CRC);
  assert_int_equal(proto_decoder_feed(&d, b.data, 1), RPL_E_PROTO_CRC);
  assert_int_equal(proto_decoder_finish(&d), RPL_E_PROTO_CRC);
  proto_decoder_free(&d);
  proto_buf_free(&b);
}

/* ---- checksums ---------------------------------------------------------------------------- */

static void test_crc32c(void **state)
{
  assert_int_equal(proto_crc32c(0, "123456789", 9), 0xe3069283u);
  assert_int_equal(proto_crc32c_portable(0, "123456789", 9), 0xe3069283u);
  assert_int_equal(proto_crc32c(0, "", 0), 0);
  static uint8_t zeros[32] = {0};
  assert_int_equal(proto_crc32c(0, zeros, 32), 0x8a9136aau); /* RFC 3720 B.4 */
  /* Hardware (folding, 3-way interleaved) and portable agree on every alignment and on long buffers. */
  size_t len = 200000;
  uint8_t *buf = malloc(len + 8);
  assert_non_null(buf);
  uint32_t x = 12345;
  for (size_t i = 0; i < len + 8; i++)
    buf[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
  for (size_t off = 0; off < 8; off++)
    for (size_t n = 0; n < 64; n++)
      assert_int_equal(proto_crc32c(0, buf + off, n), proto_crc32c_portable(0, buf + off, n));
  /* Around the folding path's 256-byte blocks and the interleaved path's 3 x 8 KiB stripes. */
  const size_t lens[] = {255, 256, 257, 271, 272, 511, 512, 513, 767, 1040, 4099, 24575, 24576, 24577,
                         3 * 24576 + 5, len};
  for (size_t off = 0; off < 3; off++)
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
      uint32_t want = proto_crc32c_portable(0x5a5a5a5au, buf + off, lens[i]);
      assert_int_equal(proto_crc32c(0x5a5a5a5au, buf + off, lens[i]), want);
      assert_int_equal(proto_crc32c_interleaved(0x5a5a5a5au, buf + off, lens[i]), want);
    }
  for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++)
    assert_int_equal(proto_crc32c(0, buf + 3, lens[i]), proto_crc32c_portable(0, buf + 3, lens[i]));
  /* Continuation: crc(a||b) == crc(crc(a), b). */
  assert_int_equal(proto_crc32c(proto_crc32c(0, buf, 1000), buf + 1000, len - 1000), proto_crc32c(0, buf, len));
  free(buf);

  uint8_t h[PROTO_HASH_SIZE], h2[PROTO_HASH_SIZE];
  proto_hash128("abc", 3, h);
  proto_hash128("abd", 3, h2);
  assert_memory_not_equal(h, h2, sizeof h);
  assert_string_equal(proto_type_name(PROTO_EXTENT), "EXTENT");
  assert_string_equal(proto_type_name(200), "UNKNOWN");
}

/* The dispatched xxh3 (AVX2 where the CPU has it) gives the library's results, on every length
 * around XXH3's internal boundaries (16, 128, 240 bytes, its 1 KiB stripes' block) and alignment. */
static void test_hash_dispatch(void **state)
{
  (void)state;
  __builtin_cpu_init();
  assert_string_equal(proto_hash_impl(), __builtin_cpu_supports("avx2") ? "avx2" : "default");
  size_t len = (1u << 20) + 77;
  uint8_t *buf = malloc(len + 8);
  assert_non_null(buf);
  uint32_t x = 777;
  for (size_t i = 0; i < len + 8; i++)
    buf[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 16);
  const size_t lens[] = {0, 1, 3, 4, 8, 9, 16, 17, 128, 129, 240, 241, 255, 256, 1023, 1024, 1025, 4096,
                         65535, 65536, 1u << 20, len};
  for (size_t off = 0; off < 3; off++)
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
      const uint8_t *p = buf + off;
      XXH128_canonical_t want;
      XXH128_canonicalFromHash(&want, XXH3_128bits(p, lens[i]));
      uint8_t got[PROTO_HASH_SIZE];
      proto_hash128(p, lens[i], got);
      assert_memory_equal(got, want.digest, PROTO_HASH_SIZE);
      assert_true(proto_hash64(p, lens[i]) == XXH3_64bits(p, lens[i]));
    }
  /* XXH3's documented value for the empty input (xxhash's own sanity check). */
  assert_true(proto_hash64("", 0) == 0x2D06800538D394C2ULL);
  free(buf);
}

/* An EXTENT split off the decoder: the fields peeked once they are in, the bytes buffered so far
 * moved to the destination, the rest read there; the frame after it stays in the decoder. */
static void test_split_extent(void **state)
{
  (void)state;
  enum { LEN = 64 << 10 };
  uint8_t *raw = malloc(LEN), *dst = malloc(LEN);
  assert_non_null(raw);
  assert_non_null(dst);
  for (size_t i = 0; i < LEN; i++)
    raw[i] = (uint8_t)(i * 7 + 3);
  struct proto_extent m = {.cycle = 9, .offset = 1 << 20, .length = LEN, .codec = PROTO_CODEC_NONE,
                           .payload = {.ptr = raw, .len = LEN}};
  m.disk_id[3] = 5;
  proto_hash128(raw, LEN, m.hash);
  struct proto_buf b = {0};
  assert_int_equal(proto_encode_extent(&b, &m), RPL_OK);
  struct proto_heartbeat hb = {.sequence = 11};
  assert_int_equal(proto_encode_heartbeat(&b, &hb), RPL_OK);
  size_t extent_bytes = PROTO_EXTENT_PREFIX_SIZE + LEN;

  struct proto_decoder d;
  proto_decoder_init(&d);
  struct proto_split x;
  assert_int_equal(proto_decoder_feed(&d, b.data, PROTO_EXTENT_PREFIX_SIZE - 1), RPL_OK);
  assert_int_equal(proto_decoder_peek_extent(&d, 4096, &x), RPL_E_AGAIN); /* the fields are not in */
  assert_int_equal(proto_decoder_feed(&d, b.data + PROTO_EXTENT_PREFIX_SIZE - 1, 1001), RPL_OK);
  assert_int_equal(proto_decoder_peek_extent(&d, LEN + 512, &x), RPL_E_AGAIN); /* under the minimum */
  assert_int_equal(proto_decoder_peek_extent(&d, 4096, &x), RPL_OK);
  assert_null(x.m.payload.ptr);
  assert_int_equal(x.m.payload.len, LEN);
  assert_int_equal(x.m.cycle, 9);
  assert_int_equal(x.m.offset, 1 << 20);
  assert_memory_equal(x.m.disk_id, m.disk_id, PROTO_ID_SIZE);
  proto_decoder_split_extent(&d, &x, dst);
  assert_int_equal(x.have, 1000);
  /* The rest of the extent and the heartbeat arrive: the extent's rest is the caller's. */
  memcpy(dst + x.have, b.data + PROTO_EXTENT_PREFIX_SIZE + x.have, LEN - x.have);
  x.have = LEN;
  struct proto_frame f;
  assert_int_equal(proto_split_finish(&x, &f), RPL_OK);
  struct proto_extent got;
  assert_int_equal(proto_decode_extent(&f, &got), RPL_OK);
  assert_true(got.payload.ptr == dst);
  assert_int_equal(got.payload.len, LEN);
  assert_memory_equal(dst, raw, LEN);
  assert_memory_equal(got.hash, m.hash, PROTO_HASH_SIZE);
  assert_int_equal(proto_decoder_feed(&d, b.data + extent_bytes, b.len - extent_bytes), RPL_OK);
  assert_int_equal(proto_decoder_next(&d, &f), RPL_OK);
  assert_null(f.extent_data);
  struct proto_heartbeat hb2;
  assert_int_equal(proto_decode_heartbeat(&f, &hb2), RPL_OK);
  assert_int_equal(hb2.sequence, 11);

  /* A byte of the extent changed on the way: the CRC says so. */
  dst[LEN / 2] ^= 0x10;
  assert_int_equal(proto_split_finish(&x, &f), RPL_E_PROTO_CRC);
  dst[LEN / 2] ^= 0x10;

  /* A whole extent already buffered with the frame after it: only the extent's bytes are moved. */
  assert_int_equal(proto_decoder_feed(&d, b.data, b.len), RPL_OK);
  assert_int_equal(proto_decoder_peek_extent(&d, 4096, &x), RPL_OK);
  memset(dst, 0, LEN);
  proto_decoder_split_extent(&d, &x, dst);
  assert_int_equal(x.have, LEN);
  assert_int_equal(proto_split_finish(&x, &f), RPL_OK);
  assert_memory_equal(dst, raw, LEN);
  assert_int_equal(proto_decoder_peek_extent(&d, 4096, &x), RPL_E_AGAIN); /* a heartbeat is next */
  assert_int_equal(proto_decoder_next(&d, &f), RPL_OK);
  assert_int_equal(f.type, PROTO_HEARTBEAT);
  assert_int_equal(proto_decoder_finish(&d), RPL_OK);

  /* Compressed extents are never offered; a broken header breaks the stream as next() would. */
  proto_buf_reset(&b);
  m.codec = PROTO_CODEC_ZSTD;
  m.payload.len = 100;
  assert_int_equal(proto_encode_extent(&b, &m), RPL_OK);
  assert_int_equal(proto_decoder_feed(&d, b.data, b.len), RPL_OK);
  assert_int_equal(proto_decoder_peek_extent(&d, 1, &x), RPL_E_AGAIN);
  assert_int_equal(proto_decoder_next(&d, &f), RPL_OK);
  b.data[0] ^= 1; /* magic */
  assert_int_equal(proto_decoder_feed(&d, b.data, b.len), RPL_OK);
  assert_int_equal(proto_decoder_peek_extent(&d, 1, &x), RPL_E_PROTO_MAGIC);
  assert_int_equal(proto_decoder_next(&d, &f), RPL_E_PROTO_MAGIC);
  proto_decoder_free(&d);
  proto_buf_free(&b);
  free(raw);
  free(dst);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_roundtrip_hello_register),
    cmocka_unit_test(test_roundtrip_disk_cycle),
    cmocka_unit_test(test_roundtrip_extent_all_codecs),
    cmocka_unit_test(test_roundtrip_ack_nack_hb_error),
    cmocka_unit_test(test_roundtrip_hashes_need),
    cmocka_unit_test(test_roundtrip_points),
    cmocka_unit_test(test_roundtrip_unprotect),
    cmocka_unit_test(test_roundtrip_unprotect_request),
    cmocka_unit_test(test_roundtrip_group_frames),
    cmocka_unit_test(test_roundtrip_readiness),
    cmocka_unit_test(test_bad_header_fields),
    cmocka_unit_test(test_length_over_cap_rejected_before_allocation),
    cmocka_unit_test(test_truncated_and_trailing),
    cmocka_unit_test(test_fields_out_of_range),
    cmocka_unit_test(test_buffer_cap),
    cmocka_unit_test(test_version_negotiation),
    cmocka_unit_test(test_stream_split_at_every_byte),
    cmocka_unit_test(test_stream_corruption_is_sticky),
    cmocka_unit_test(test_crc32c),
    cmocka_unit_test(test_split_extent),
    cmocka_unit_test(test_hash_dispatch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
