/* proto.c - frame header, message encoders and decoders (exact-size getters), streaming decoder. */
#include "proto.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DECODER_MIN_ALLOC (256u << 10)
#define DECODER_SLACK     (64u << 10)
#define DECODER_MAX_ALLOC (PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD + DECODER_SLACK)

/* ---- little-endian helpers ---------------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static void put64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static uint32_t get32(const uint8_t *p)
{
  return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) | ((uint64_t)get32(p + 4) << 32); }

/* ---- output buffer ------------------------------------------------------------------------ */

void proto_buf_free(struct proto_buf *b)
{
  free(b->data);
  b->data = NULL;
  b->len = b->alloc = 0;
}

void proto_buf_reset(struct proto_buf *b) { b->len = 0; }

static rpl_err buf_reserve(struct proto_buf *b, size_t extra)
{
  size_t cap = b->cap ? b->cap : PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD;
  if (extra > cap || b->len > cap - extra)
    return RPL_E_LIMIT;
  size_t need = b->len + extra;
  if (need <= b->alloc)
    return RPL_OK;
  size_t n = b->alloc ? b->alloc : 4096;
  while (n < need)
    n = n > cap / 2 ? cap : n * 2;
  uint8_t *p = realloc(b->data, n);
  if (!p)
    return RPL_E_NOMEM;
  b->data = p;
  b->alloc = n;
  return RPL_OK;
}

/* ---- frame writer ------------------------------------------------------------------------- */

struct writer {
  struct proto_buf *b;
  size_t start;
  rpl_err err;
};

static void wr_begin(struct writer *w, struct proto_buf *b)
{
  w->b = b;
  w->start = b->len;
  w->err = buf_reserve(b, PROTO_HEADER_SIZE);
  if (!w->err)
    b->len += PROTO_HEADER_SIZE;
}

static uint8_t *wr_space(struct writer *w, size_t n)
{
  if (w->err)
    return NULL;
  w->err = buf_reserve(w->b, n);
  if (w->err)
    return NULL;
  uint8_t *p = w->b->data + w->b->len;
  w->b->len += n;
  return p;
}

static void wr_u8(struct writer *w, uint8_t v)
{
  uint8_t *p = wr_space(w, 1);
  if (p)
    *p = v;
}
static void wr_u16(struct writer *w, uint16_t v)
{
  uint8_t *p = wr_space(w, 2);
  if (p)
    put16(p, v);
}
static void wr_u32(struct writer *w, uint32_t v)
{
  uint8_t *p = wr_space(w, 4);
  if (p)
    put32(p, v);
}
static void wr_u64(struct writer *w, uint64_t v)
{
  uint8_t *p = wr_space(w, 8);
  if (p)
    put64(p, v);
}
static void wr_raw(struct writer *w, const void *src, size_t n)
{
  uint8_t *p = wr_space(w, n);
  if (p && n)
    memcpy(p, src, n);
}
static void wr_blob(struct writer *w, struct proto_bytes s)
{
  wr_u32(w, s.len);
  wr_raw(w, s.ptr, s.len);
}

static void header_fill(uint8_t *h, uint8_t type, uint32_t length)
{
  put32(h, PROTO_MAGIC);
  h[4] = PROTO_FRAME_VERSION;
  h[5] = type;
  put16(h + 6, 0);
  put32(h + 8, length);
}

static rpl_err wr_end(struct writer *w, uint8_t type)
{
  if (!w->err) {
    size_t payload = w->b->len - w->start - PROTO_HEADER_SIZE;
    if (payload > PROTO_MAX_PAYLOAD) {
      w->err = RPL_E_PROTO_TOO_LONG;
    } else {
      uint8_t *h = w->b->data + w->start;
      header_fill(h, type, (uint32_t)payload);
      uint32_t crc = proto_crc32c(0, h, 12);
      put32(h + 12, proto_crc32c(crc, h + PROTO_HEADER_SIZE, payload));
    }
  }
  if (w->err)
    w->b->len = w->start;
  return w->err;
}

/* ---- payload reader (exact-size getters) -------------------------------------------------- */

struct reader {
  const uint8_t *p;
  size_t left;
  rpl_err err;
};

static const uint8_t *rd_take(struct reader *r, size_t n)
{
  if (r->err)
    return NULL;
  if (r->left < n) {
    r->err = RPL_E_PROTO_SHORT;
    return NULL;
  }
  const uint8_t *p = r->p;
  r->p += n;
  r->left -= n;
  return p;
}
static uint8_t rd_u8(struct reader *r)
{
  const uint8_t *p = rd_take(r, 1);
  return p ? *p : 0;
}
static uint16_t rd_u16(struct reader *r)
{
  const uint8_t *p = rd_take(r, 2);
  return p ? get16(p) : 0;
}
static uint32_t rd_u32(struct reader *r)
{
  const uint8_t *p = rd_take(r, 4);
  return p ? get32(p) : 0;
}
static uint64_t rd_u64(struct reader *r)
{
  const uint8_t *p = rd_take(r, 8);
  return p ? get64(p) : 0;
}
static void rd_copy(struct reader *r, void *dst, size_t n)
{
  const uint8_t *p = rd_take(r, n);
  if (p)
    memcpy(dst, p, n);
  else
    memset(dst, 0, n);
}
/* A u32 length then that many bytes; a length over max is out of range before it is used. */
static struct proto_bytes rd_blob(struct reader *r, uint32_t max)
{
  struct proto_bytes s = {0};
  uint32_t n = rd_u32(r);
  if (r->err)
    return s;
  if (n > max) {
    r->err = RPL_E_PROTO_FIELD;
    return s;
  }
  s.ptr = rd_take(r, n);
  s.len = s.ptr ? n : 0;
  return s;
}
static rpl_err rd_end(struct reader *r)
{
  if (!r->err && r->left)
    r->err = RPL_E_PROTO_TRAILING;
  return r->err;
}

static rpl_err rd_begin(struct reader *r, const struct proto_frame *f, uint8_t type)
{
  r->p = f->payload;
  r->left = f->length;
  r->err = f->type == type ? RPL_OK : RPL_E_PROTO_UNEXPECTED;
  return r->err;
}

/* ---- field rules, shared by encoders and decoders ----------------------------------------- */

static bool is_pow2(uint64_t v) { return v && !(v & (v - 1)); }
static bool chunk_size_ok(uint32_t cs) { return is_pow2(cs) && cs >= 4096 && cs <= (64u << 20); }

static rpl_err hello_check(const struct proto_hello *m)
{
  if (m->version_min == 0 || m->version_min > m->version_max || m->hostname.len > PROTO_MAX_STRING)
    return RPL_E_PROTO_FIELD;
  return RPL_OK;
}
static rpl_err register_check(const struct proto_register *m)
{
  if (m->hostname.len > PROTO_MAX_STRING || m->csr_pem.len > PROTO_MAX_PEM || m->csr_pem.len == 0)
    return RPL_E_PROTO_FIELD;
  return RPL_OK;
}
static rpl_err registered_check(const struct proto_registered *m)
{
  return m->cert_pem.len == 0 || m->cert_pem.len > PROTO_MAX_PEM ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err renew_check(const struct proto_renew *m)
{
  return m->csr_pem.len == 0 || m->csr_pem.len > PROTO_MAX_PEM ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err renewed_check(const struct proto_renewed *m)
{
  return m->cert_pem.len == 0 || m->cert_pem.len > PROTO_MAX_PEM ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err disk_check(const struct proto_disk *m)
{
  if ((m->sector_size != 512 && m->sector_size != 4096) || m->size_bytes == 0 ||
      m->size_bytes % m->sector_size || m->name.len > PROTO_MAX_STRING)
    return RPL_E_PROTO_FIELD;
  return RPL_OK;
}
static rpl_err cycle_start_check(const struct proto_cycle_start *m)
{
  if (m->cycle == 0 || m->kind > PROTO_CYCLE_REPLAY || m->group == 0 || m->group > PROTO_MAX_GROUP ||
      (m->group > 1 && !proto_cycle_is_point(m->kind)))
    return RPL_E_PROTO_FIELD;
  return RPL_OK;
}
static rpl_err extent_check(const struct proto_extent *m)
{
  if (m->cycle == 0 || m->length == 0 || m->length > PROTO_MAX_EXTENT || m->length % 512 ||
      m->offset % 512 || m->offset > UINT64_MAX - m->length || m->codec > PROTO_CODEC_ZERO)
    return RPL_E_PROTO_FIELD;
  switch (m->codec) {
  case PROTO_CODEC_NONE: return m->payload.len == m->length ? RPL_OK : RPL_E_PROTO_FIELD;
  case PROTO_CODEC_ZERO: return m->payload.len == 0 ? RPL_OK : RPL_E_PROTO_FIELD;
  default: return m->payload.len == 0 ? RPL_E_PROTO_FIELD : RPL_OK;
  }
}
static rpl_err cycle_end_check(const struct proto_cycle_end *m)
{
  return m->cycle == 0 || m->consistency > PROTO_PRECOPY ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err point_request_check(const struct proto_point_request *m)
{
  return m->count == 0 || m->count > PROTO_MAX_GROUP ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err point_check(const struct proto_point *m)
{
  return m->consistency > PROTO_APP_CONSISTENT || m->point_id.len > PROTO_MAX_STRING ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err unprotect_check(const struct proto_unprotect *m)
{
  return m->flags & ~PROTO_UNPROTECT_DELETE_REPLICA ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err unprotect_request_check(const struct proto_unprotect_request *m)
{
  return m->flags & ~PROTO_UNPROTECT_DELETE_REPLICA ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err ack_check(const struct proto_ack *m) { return m->cycle == 0 ? RPL_E_PROTO_FIELD : RPL_OK; }
static rpl_err stored_check(const struct proto_stored *m) { return m->cycle == 0 ? RPL_E_PROTO_FIELD : RPL_OK; }
static rpl_err members_check(const struct proto_members *m)
{
  if (m->count == 0 || m->count > PROTO_MAX_MEMBERS)
    return RPL_E_PROTO_FIELD;
  for (uint32_t i = 0; i < m->count; i++) {
    if (m->address[i].len == 0 || m->address[i].len > PROTO_MAX_ADDRESS)
      return RPL_E_PROTO_FIELD;
    for (uint32_t j = 0; j < m->address[i].len; j++) /* printable, no blank: HOST:PORT */
      if (m->address[i].ptr[j] <= 0x20 || m->address[i].ptr[j] >= 0x7f)
        return RPL_E_PROTO_FIELD;
  }
  return RPL_OK;
}
static rpl_err nack_check(const struct proto_nack *m)
{
  return m->message.len > PROTO_MAX_STRING ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err hashes_check(const struct proto_hashes *m)
{
  if (!chunk_size_ok(m->chunk_size) || m->count == 0 || m->first_chunk > UINT64_MAX - m->count)
    return RPL_E_PROTO_FIELD;
  return RPL_OK;
}
static rpl_err need_range_check(struct proto_need_range r)
{
  return r.count == 0 || r.first_chunk > UINT64_MAX - r.count ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err need_check(const struct proto_need *m)
{
  return !chunk_size_ok(m->chunk_size) ? RPL_E_PROTO_FIELD : RPL_OK; /* 0 ranges: nothing differs */
}
static rpl_err error_check(const struct proto_error *m)
{
  return m->message.len > PROTO_MAX_STRING ? RPL_E_PROTO_FIELD : RPL_OK;
}

bool proto_group_name_ok(const char *name, size_t len)
{
  if (!name || len == 0 || len > PROTO_MAX_GROUP_NAME)
    return false;
  for (size_t i = 0; i < len; i++) {
    char c = name[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
          c == '-'))
      return false;
  }
  return true;
}
static rpl_err group_point_request_check(const struct proto_group_point_request *m)
{
  return proto_group_name_ok((const char *)m->name.ptr, m->name.len) ? RPL_OK : RPL_E_PROTO_FIELD;
}
static rpl_err group_freeze_check(const struct proto_group_freeze *m)
{
  return m->attempt == 0 || m->limit_ms == 0 || m->limit_ms > PROTO_GROUP_FREEZE_MAX_MS || m->hooks > 1 ||
                 m->count == 0 || m->count > PROTO_MAX_GROUP
           ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err group_frozen_check(const struct proto_group_frozen *m)
{
  return m->attempt == 0 || m->message.len > PROTO_MAX_STRING || (m->status && (m->frozen_at_us || m->filesystems))
           ? RPL_E_PROTO_FIELD : RPL_OK;
}
static rpl_err group_thaw_check(const struct proto_group_thaw *m) { return m->attempt == 0 ? RPL_E_PROTO_FIELD : RPL_OK; }

static rpl_err readiness_check(const struct proto_readiness *m)
{
  return m->generation > 2 || m->failed + m->warned > m->checks || m->problems.len > PROTO_MAX_STRING
           ? RPL_E_PROTO_FIELD : RPL_OK;
}

/* ---- encoders ----------------------------------------------------------------------------- */

#define ENCODE_BEGIN(check)        \
  rpl_err e = check(m);            \
  if (e)                           \
    return e;                      \
  struct writer w;                 \
  wr_begin(&w, out)

rpl_err proto_encode_hello(struct proto_buf *out, const struct proto_hello *m)
{
  ENCODE_BEGIN(hello_check);
  wr_raw(&w, m->agent_id, PROTO_ID_SIZE);
  wr_u16(&w, m->version_min);
  wr_u16(&w, m->version_max);
  wr_u64(&w, m->capabilities);
  wr_blob(&w, m->hostname);
  return wr_end(&w, PROTO_HELLO);
}

rpl_err proto_encode_register(struct proto_buf *out, const struct proto_register *m)
{
  ENCODE_BEGIN(register_check);
  wr_raw(&w, m->secret, PROTO_SECRET_SIZE);
  wr_blob(&w, m->hostname);
  wr_blob(&w, m->csr_pem);
  return wr_end(&w, PROTO_REGISTER);
}

rpl_err proto_encode_registered(struct proto_buf *out, const struct proto_registered *m)
{
  ENCODE_BEGIN(registered_check);
  wr_raw(&w, m->agent_id, PROTO_ID_SIZE);
  wr_blob(&w, m->cert_pem);
  return wr_end(&w, PROTO_REGISTERED);
}

rpl_err proto_encode_renew(struct proto_buf *out, const struct proto_renew *m)
{
  ENCODE_BEGIN(renew_check);
  wr_blob(&w, m->csr_pem);
  return wr_end(&w, PROTO_RENEW);
}

rpl_err proto_encode_renewed(struct proto_buf *out, const struct proto_renewed *m)
{
  ENCODE_BEGIN(renewed_check);
  wr_blob(&w, m->cert_pem);
  return wr_end(&w, PROTO_RENEWED);
}

rpl_err proto_encode_disk(struct proto_buf *out, const struct proto_disk *m)
{
  ENCODE_BEGIN(disk_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u64(&w, m->size_bytes);
  wr_u32(&w, m->sector_size);
  wr_blob(&w, m->name);
  return wr_end(&w, PROTO_DISK);
}

rpl_err proto_encode_unprotect(struct proto_buf *out, const struct proto_unprotect *m)
{
  ENCODE_BEGIN(unprotect_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u8(&w, m->flags);
  return wr_end(&w, PROTO_UNPROTECT);
}

rpl_err proto_encode_unprotect_request(struct proto_buf *out, const struct proto_unprotect_request *m)
{
  ENCODE_BEGIN(unprotect_request_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u8(&w, m->flags);
  return wr_end(&w, PROTO_UNPROTECT_REQUEST);
}

rpl_err proto_encode_cycle_start(struct proto_buf *out, const struct proto_cycle_start *m)
{
  ENCODE_BEGIN(cycle_start_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u64(&w, m->cycle);
  wr_u8(&w, m->kind);
  wr_u16(&w, m->group);
  return wr_end(&w, PROTO_CYCLE_START);
}

static void extent_fields(uint8_t *p, const struct proto_extent *m)
{
  memcpy(p, m->disk_id, PROTO_ID_SIZE);
  put64(p + 16, m->cycle);
  put64(p + 24, m->offset);
  put32(p + 32, m->length);
  p[36] = m->codec;
  memcpy(p + 37, m->hash, PROTO_HASH_SIZE);
}
#define EXTENT_FIELDS_SIZE (PROTO_EXTENT_PREFIX_SIZE - PROTO_HEADER_SIZE)

rpl_err proto_encode_extent_prefix(uint8_t prefix[PROTO_EXTENT_PREFIX_SIZE], const struct proto_extent *m)
{
  rpl_err e = extent_check(m);
  if (e)
    return e;
  if (m->payload.len > PROTO_MAX_PAYLOAD - EXTENT_FIELDS_SIZE)
    return RPL_E_PROTO_TOO_LONG;
  header_fill(prefix, PROTO_EXTENT, EXTENT_FIELDS_SIZE + m->payload.len);
  extent_fields(prefix + PROTO_HEADER_SIZE, m);
  uint32_t crc = proto_crc32c(0, prefix, 12);
  crc = proto_crc32c(crc, prefix + PROTO_HEADER_SIZE, EXTENT_FIELDS_SIZE);
  put32(prefix + 12, proto_crc32c(crc, m->payload.ptr, m->payload.len));
  return RPL_OK;
}

rpl_err proto_encode_extent(struct proto_buf *out, const struct proto_extent *m)
{
  ENCODE_BEGIN(extent_check);
  uint8_t *p = wr_space(&w, EXTENT_FIELDS_SIZE);
  if (p)
    extent_fields(p, m);
  wr_raw(&w, m->payload.ptr, m->payload.len);
  return wr_end(&w, PROTO_EXTENT);
}

rpl_err proto_encode_cycle_end(struct proto_buf *out, const struct proto_cycle_end *m)
{
  ENCODE_BEGIN(cycle_end_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u64(&w, m->cycle);
  wr_u64(&w, m->extents);
  wr_u64(&w, m->raw_bytes);
  wr_u64(&w, m->payload_bytes);
  wr_raw(&w, m->digest, PROTO_HASH_SIZE);
  wr_u8(&w, m->consistency);
  wr_u32(&w, m->freeze_ms);
  return wr_end(&w, PROTO_CYCLE_END);
}

rpl_err proto_encode_ack(struct proto_buf *out, const struct proto_ack *m)
{
  ENCODE_BEGIN(ack_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u64(&w, m->cycle);
  return wr_end(&w, PROTO_ACK);
}

rpl_err proto_encode_stored(struct proto_buf *out, const struct proto_stored *m)
{
  ENCODE_BEGIN(stored_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u64(&w, m->cycle);
  return wr_end(&w, PROTO_STORED);
}

rpl_err proto_encode_members(struct proto_buf *out, const struct proto_members *m)
{
  ENCODE_BEGIN(members_check);
  wr_u32(&w, m->count);
  for (uint32_t i = 0; i < m->count; i++)
    wr_blob(&w, m->address[i]);
  return wr_end(&w, PROTO_MEMBERS);
}

rpl_err proto_encode_nack(struct proto_buf *out, const struct proto_nack *m)
{
  ENCODE_BEGIN(nack_check);
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u64(&w, m->cycle);
  wr_u32(&w, m->reason);
  wr_blob(&w, m->message);
  return wr_end(&w, PROTO_NACK);
}

rpl_err proto_encode_hashes(struct proto_buf *out, const struct proto_hashes *m)
{
  ENCODE_BEGIN(hashes_check);
  if ((uint64_t)m->count * PROTO_HASH_SIZE > PROTO_MAX_PAYLOAD)
    return RPL_E_PROTO_TOO_LONG;
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u32(&w, m->chunk_size);
  wr_u64(&w, m->first_chunk);
  wr_u32(&w, m->count);
  wr_raw(&w, m->hashes, (size_t)m->count * PROTO_HASH_SIZE);
  return wr_end(&w, PROTO_HASHES);
}

rpl_err proto_encode_need(struct proto_buf *out, const struct proto_need *m,
                          const struct proto_need_range *ranges)
{
  ENCODE_BEGIN(need_check);
  if ((uint64_t)m->count * 12 > PROTO_MAX_PAYLOAD)
    return RPL_E_PROTO_TOO_LONG;
  for (uint32_t i = 0; i < m->count; i++)
    if (need_range_check(ranges[i]))
      return RPL_E_PROTO_FIELD;
  wr_raw(&w, m->disk_id, PROTO_ID_SIZE);
  wr_u32(&w, m->chunk_size);
  wr_u32(&w, m->count);
  for (uint32_t i = 0; i < m->count; i++) {
    wr_u64(&w, ranges[i].first_chunk);
    wr_u32(&w, ranges[i].count);
  }
  return wr_end(&w, PROTO_NEED);
}

rpl_err proto_encode_heartbeat(struct proto_buf *out, const struct proto_heartbeat *m)
{
  struct writer w;
  wr_begin(&w, out);
  wr_u64(&w, m->sequence);
  wr_u64(&w, m->time_ns);
  wr_u64(&w, m->dirty_bytes);
  return wr_end(&w, PROTO_HEARTBEAT);
}

rpl_err proto_encode_error(struct proto_buf *out, const struct proto_error *m)
{
  ENCODE_BEGIN(error_check);
  wr_u32(&w, m->code);
  wr_blob(&w, m->message);
  return wr_end(&w, PROTO_ERROR);
}

rpl_err proto_encode_readiness(struct proto_buf *out, const struct proto_readiness *m)
{
  ENCODE_BEGIN(readiness_check);
  wr_u64(&w, m->time_ns);
  wr_u8(&w, m->generation);
  wr_u8(&w, m->checks);
  wr_u8(&w, m->failed);
  wr_u8(&w, m->warned);
  wr_blob(&w, m->problems);
  return wr_end(&w, PROTO_READINESS);
}

rpl_err proto_encode_point_request(struct proto_buf *out, const struct proto_point_request *m)
{
  ENCODE_BEGIN(point_request_check);
  wr_u64(&w, m->request);
  wr_u32(&w, m->count);
  wr_raw(&w, m->disk_ids, (size_t)m->count * PROTO_ID_SIZE);
  return wr_end(&w, PROTO_POINT_REQUEST);
}

rpl_err proto_encode_point(struct proto_buf *out, const struct proto_point *m)
{
  ENCODE_BEGIN(point_check);
  wr_u64(&w, m->request);
  wr_u32(&w, m->status);
  wr_u8(&w, m->consistency);
  wr_blob(&w, m->point_id);
  return wr_end(&w, PROTO_POINT);
}

rpl_err proto_encode_group_point_request(struct proto_buf *out, const struct proto_group_point_request *m)
{
  ENCODE_BEGIN(group_point_request_check);
  wr_u64(&w, m->request);
  wr_blob(&w, m->name);
  return wr_end(&w, PROTO_GROUP_POINT_REQUEST);
}

rpl_err proto_encode_group_freeze(struct proto_buf *out, const struct proto_group_freeze *m)
{
  ENCODE_BEGIN(group_freeze_check);
  wr_u64(&w, m->attempt);
  wr_u32(&w, m->limit_ms);
  wr_u8(&w, m->hooks);
  wr_u32(&w, m->count);
  wr_raw(&w, m->disk_ids, (size_t)m->count * PROTO_ID_SIZE);
  return wr_end(&w, PROTO_GROUP_FREEZE);
}

rpl_err proto_encode_group_frozen(struct proto_buf *out, const struct proto_group_frozen *m)
{
  ENCODE_BEGIN(group_frozen_check);
  wr_u64(&w, m->attempt);
  wr_u32(&w, m->status);
  wr_u64(&w, m->frozen_at_us);
  wr_u32(&w, m->filesystems);
  wr_blob(&w, m->message);
  return wr_end(&w, PROTO_GROUP_FROZEN);
}

rpl_err proto_encode_group_thaw(struct proto_buf *out, const struct proto_group_thaw *m)
{
  ENCODE_BEGIN(group_thaw_check);
  wr_u64(&w, m->attempt);
  return wr_end(&w, PROTO_GROUP_THAW);
}

/* ---- frame parsing ------------------------------------------------------------------------ */

static rpl_err header_check(const uint8_t *h, uint32_t *length)
{
  if (get32(h) != PROTO_MAGIC)
    return RPL_E_PROTO_MAGIC;
  if (h[4] != PROTO_FRAME_VERSION)
    return RPL_E_PROTO_VERSION;
  if (h[5] == 0 || h[5] > PROTO_TYPE_MAX)
    return RPL_E_PROTO_TYPE;
  if (get16(h + 6) != 0)
    return RPL_E_PROTO_FLAGS;
  *length = get32(h + 8);
  if (*length > PROTO_MAX_PAYLOAD)
    return RPL_E_PROTO_TOO_LONG;
  return RPL_OK;
}

rpl_err proto_frame_parse(const uint8_t *buf, size_t len, struct proto_frame *frame, size_t *used)
{
  *used = 0;
  if (len < PROTO_HEADER_SIZE)
    return RPL_E_AGAIN;
  uint32_t length;
  rpl_err e = header_check(buf, &length);
  if (e)
    return e;
  size_t total = PROTO_HEADER_SIZE + (size_t)length;
  *used = total;
  if (len < total)
    return RPL_E_AGAIN;
  uint32_t crc = proto_crc32c(0, buf, 12);
  crc = proto_crc32c(crc, buf + PROTO_HEADER_SIZE, length);
  if (crc != get32(buf + 12))
    return RPL_E_PROTO_CRC;
  frame->type = buf[5];
  frame->flags = 0;
  frame->length = length;
  frame->payload = buf + PROTO_HEADER_SIZE;
  frame->extent_data = NULL;
  return RPL_OK;
}

/* ---- decoders ----------------------------------------------------------------------------- */

#define DECODE_BEGIN(type)                  \
  struct reader r;                          \
  memset(out, 0, sizeof *out);              \
  if (rd_begin(&r, f, type))                \
    return r.err

#define DECODE_END(check)                   \
  if (rd_end(&r))                           \
    return r.err;                           \
  return check(out)

rpl_err proto_decode_hello(const struct proto_frame *f, struct proto_hello *out)
{
  DECODE_BEGIN(PROTO_HELLO);
  rd_copy(&r, out->agent_id, PROTO_ID_SIZE);
  out->version_min = rd_u16(&r);
  out->version_max = rd_u16(&r);
  out->capabilities = rd_u64(&r);
  out->hostname = rd_blob(&r, PROTO_MAX_STRING);
  DECODE_END(hello_check);
}

rpl_err proto_decode_register(const struct proto_frame *f, struct proto_register *out)
{
  DECODE_BEGIN(PROTO_REGISTER);
  rd_copy(&r, out->secret, PROTO_SECRET_SIZE);
  out->hostname = rd_blob(&r, PROTO_MAX_STRING);
  out->csr_pem = rd_blob(&r, PROTO_MAX_PEM);
  DECODE_END(register_check);
}

rpl_err proto_decode_registered(const struct proto_frame *f, struct proto_registered *out)
{
  DECODE_BEGIN(PROTO_REGISTERED);
  rd_copy(&r, out->agent_id, PROTO_ID_SIZE);
  out->cert_pem = rd_blob(&r, PROTO_MAX_PEM);
  DECODE_END(registered_check);
}

rpl_err proto_decode_renew(const struct proto_frame *f, struct proto_renew *out)
{
  DECODE_BEGIN(PROTO_RENEW);
  out->csr_pem = rd_blob(&r, PROTO_MAX_PEM);
  DECODE_END(renew_check);
}

rpl_err proto_decode_renewed(const struct proto_frame *f, struct proto_renewed *out)
{
  DECODE_BEGIN(PROTO_RENEWED);
  out->cert_pem = rd_blob(&r, PROTO_MAX_PEM);
  DECODE_END(renewed_check);
}

rpl_err proto_decode_disk(const struct proto_frame *f, struct proto_disk *out)
{
  DECODE_BEGIN(PROTO_DISK);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->size_bytes = rd_u64(&r);
  out->sector_size = rd_u32(&r);
  out->name = rd_blob(&r, PROTO_MAX_STRING);
  DECODE_END(disk_check);
}

rpl_err proto_decode_unprotect(const struct proto_frame *f, struct proto_unprotect *out)
{
  DECODE_BEGIN(PROTO_UNPROTECT);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->flags = rd_u8(&r);
  DECODE_END(unprotect_check);
}

rpl_err proto_decode_unprotect_request(const struct proto_frame *f, struct proto_unprotect_request *out)
{
  DECODE_BEGIN(PROTO_UNPROTECT_REQUEST);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->flags = rd_u8(&r);
  DECODE_END(unprotect_request_check);
}

rpl_err proto_decode_cycle_start(const struct proto_frame *f, struct proto_cycle_start *out)
{
  DECODE_BEGIN(PROTO_CYCLE_START);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->cycle = rd_u64(&r);
  out->kind = rd_u8(&r);
  out->group = rd_u16(&r);
  DECODE_END(cycle_start_check);
}

static void read_extent_fields(struct reader *r, struct proto_extent *out)
{
  rd_copy(r, out->disk_id, PROTO_ID_SIZE);
  out->cycle = rd_u64(r);
  out->offset = rd_u64(r);
  out->length = rd_u32(r);
  out->codec = rd_u8(r);
  rd_copy(r, out->hash, PROTO_HASH_SIZE);
}

rpl_err proto_decode_extent(const struct proto_frame *f, struct proto_extent *out)
{
  if (f->extent_data) { /* split: the fields here, the bytes in the receiver's buffer */
    memset(out, 0, sizeof *out);
    if (f->type != PROTO_EXTENT || f->length < EXTENT_FIELDS_SIZE)
      return RPL_E_PROTO_UNEXPECTED;
    struct reader r = {.p = f->payload, .left = EXTENT_FIELDS_SIZE};
    read_extent_fields(&r, out);
    if (r.err)
      return r.err;
    out->payload.len = f->length - (uint32_t)EXTENT_FIELDS_SIZE;
    out->payload.ptr = f->extent_data;
    return extent_check(out);
  }
  DECODE_BEGIN(PROTO_EXTENT);
  read_extent_fields(&r, out);
  if (r.err)
    return r.err;
  out->payload.len = (uint32_t)r.left; /* the payload is the rest of the frame */
  out->payload.ptr = rd_take(&r, r.left);
  DECODE_END(extent_check);
}

rpl_err proto_decode_cycle_end(const struct proto_frame *f, struct proto_cycle_end *out)
{
  DECODE_BEGIN(PROTO_CYCLE_END);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->cycle = rd_u64(&r);
  out->extents = rd_u64(&r);
  out->raw_bytes = rd_u64(&r);
  out->payload_bytes = rd_u64(&r);
  rd_copy(&r, out->digest, PROTO_HASH_SIZE);
  out->consistency = rd_u8(&r);
  out->freeze_ms = rd_u32(&r);
  DECODE_END(cycle_end_check);
}

rpl_err proto_decode_point_request(const struct proto_frame *f, struct proto_point_request *out)
{
  DECODE_BEGIN(PROTO_POINT_REQUEST);
  out->request = rd_u64(&r);
  out->count = rd_u32(&r);
  if (r.err)
    return r.err;
  if (out->count > PROTO_MAX_GROUP)
    return RPL_E_PROTO_FIELD;
  out->disk_ids = rd_take(&r, (size_t)out->count * PROTO_ID_SIZE);
  DECODE_END(point_request_check);
}

rpl_err proto_decode_group_point_request(const struct proto_frame *f, struct proto_group_point_request *out)
{
  DECODE_BEGIN(PROTO_GROUP_POINT_REQUEST);
  out->request = rd_u64(&r);
  out->name = rd_blob(&r, PROTO_MAX_GROUP_NAME);
  DECODE_END(group_point_request_check);
}

rpl_err proto_decode_group_freeze(const struct proto_frame *f, struct proto_group_freeze *out)
{
  DECODE_BEGIN(PROTO_GROUP_FREEZE);
  out->attempt = rd_u64(&r);
  out->limit_ms = rd_u32(&r);
  out->hooks = rd_u8(&r);
  out->count = rd_u32(&r);
  if (r.err)
    return r.err;
  if (out->count > PROTO_MAX_GROUP)
    return RPL_E_PROTO_FIELD; /* before the ids are taken */
  out->disk_ids = rd_take(&r, (size_t)out->count * PROTO_ID_SIZE);
  DECODE_END(group_freeze_check);
}

rpl_err proto_decode_group_frozen(const struct proto_frame *f, struct proto_group_frozen *out)
{
  DECODE_BEGIN(PROTO_GROUP_FROZEN);
  out->attempt = rd_u64(&r);
  out->status = rd_u32(&r);
  out->frozen_at_us = rd_u64(&r);
  out->filesystems = rd_u32(&r);
  out->message = rd_blob(&r, PROTO_MAX_STRING);
  DECODE_END(group_frozen_check);
}

rpl_err proto_decode_group_thaw(const struct proto_frame *f, struct proto_group_thaw *out)
{
  DECODE_BEGIN(PROTO_GROUP_THAW);
  out->attempt = rd_u64(&r);
  DECODE_END(group_thaw_check);
}

rpl_err proto_decode_point(const struct proto_frame *f, struct proto_point *out)
{
  DECODE_BEGIN(PROTO_POINT);
  out->request = rd_u64(&r);
  out->status = rd_u32(&r);
  out->consistency = rd_u8(&r);
  out->point_id = rd_blob(&r, PROTO_MAX_STRING);
  DECODE_END(point_check);
}

rpl_err proto_decode_ack(const struct proto_frame *f, struct proto_ack *out)
{
  DECODE_BEGIN(PROTO_ACK);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->cycle = rd_u64(&r);
  DECODE_END(ack_check);
}

rpl_err proto_decode_stored(const struct proto_frame *f, struct proto_stored *out)
{
  DECODE_BEGIN(PROTO_STORED);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->cycle = rd_u64(&r);
  DECODE_END(stored_check);
}

rpl_err proto_decode_members(const struct proto_frame *f, struct proto_members *out)
{
  DECODE_BEGIN(PROTO_MEMBERS);
  out->count = rd_u32(&r);
  if (r.err)
    return r.err;
  if (out->count == 0 || out->count > PROTO_MAX_MEMBERS)
    return RPL_E_PROTO_FIELD; /* before the addresses are taken */
  for (uint32_t i = 0; i < out->count; i++)
    out->address[i] = rd_blob(&r, PROTO_MAX_ADDRESS);
  DECODE_END(members_check);
}

rpl_err proto_decode_nack(const struct proto_frame *f, struct proto_nack *out)
{
  DECODE_BEGIN(PROTO_NACK);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->cycle = rd_u64(&r);
  out->reason = rd_u32(&r);
  out->message = rd_blob(&r, PROTO_MAX_STRING);
  DECODE_END(nack_check);
}

rpl_err proto_decode_hashes(const struct proto_frame *f, struct proto_hashes *out)
{
  DECODE_BEGIN(PROTO_HASHES);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->chunk_size = rd_u32(&r);
  out->first_chunk = rd_u64(&r);
  out->count = rd_u32(&r);
  if (r.err)
    return r.err;
  if (out->count > r.left / PROTO_HASH_SIZE) /* checked before the multiplication is used */
    return RPL_E_PROTO_SHORT;
  out->hashes = rd_take(&r, (size_t)out->count * PROTO_HASH_SIZE);
  DECODE_END(hashes_check);
}

rpl_err proto_decode_need(const struct proto_frame *f, struct proto_need *out)
{
  DECODE_BEGIN(PROTO_NEED);
  rd_copy(&r, out->disk_id, PROTO_ID_SIZE);
  out->chunk_size = rd_u32(&r);
  out->count = rd_u32(&r);
  if (r.err)
    return r.err;
  if (out->count > r.left / 12)
    return RPL_E_PROTO_SHORT;
  out->ranges = rd_take(&r, (size_t)out->count * 12);
  if (rd_end(&r))
    return r.err;
  rpl_err e = need_check(out);
  for (uint32_t i = 0; !e && i < out->count; i++)
    e = need_range_check(proto_need_range_at(out, i));
  return e;
}

struct proto_need_range proto_need_range_at(const struct proto_need *m, uint32_t i)
{
  struct proto_need_range r = {get64(m->ranges + (size_t)i * 12), get32(m->ranges + (size_t)i * 12 + 8)};
  return r;
}

rpl_err proto_decode_heartbeat(const struct proto_frame *f, struct proto_heartbeat *out)
{
  DECODE_BEGIN(PROTO_HEARTBEAT);
  out->sequence = rd_u64(&r);
  out->time_ns = rd_u64(&r);
  out->dirty_bytes = rd_u64(&r);
  return rd_end(&r);
}

rpl_err proto_decode_error(const struct proto_frame *f, struct proto_error *out)
{
  DECODE_BEGIN(PROTO_ERROR);
  out->code = rd_u32(&r);
  out->message = rd_blob(&r, PROTO_MAX_STRING);
  DECODE_END(error_check);
}

rpl_err proto_decode_readiness(const struct proto_frame *f, struct proto_readiness *out)
{
  DECODE_BEGIN(PROTO_READINESS);
  out->time_ns = rd_u64(&r);
  out->generation = rd_u8(&r);
  out->checks = rd_u8(&r);
  out->failed = rd_u8(&r);
  out->warned = rd_u8(&r);
  out->problems = rd_blob(&r, PROTO_MAX_STRING);
  DECODE_END(readiness_check);
}

rpl_err proto_validate(const struct proto_frame *f)
{
  union {
    struct proto_hello hello;
    struct proto_register reg;
    struct proto_registered registered;
    struct proto_disk disk;
    struct proto_cycle_start cs;
    struct proto_extent extent;
    struct proto_cycle_end ce;
    struct proto_ack ack;
    struct proto_nack nack;
    struct proto_hashes hashes;
    struct proto_need need;
    struct proto_heartbeat hb;
    struct proto_error error;
    struct proto_point_request preq;
    struct proto_point point;
    struct proto_readiness readiness;
    struct proto_renew renew;
    struct proto_renewed renewed;
    struct proto_unprotect unprotect;
    struct proto_unprotect_request unprotect_request;
    struct proto_group_point_request gpreq;
    struct proto_group_freeze gfreeze;
    struct proto_group_frozen gfrozen;
    struct proto_group_thaw gthaw;
    struct proto_stored stored;
    struct proto_members members;
  } m;
  switch (f->type) {
  case PROTO_HELLO: return proto_decode_hello(f, &m.hello);
  case PROTO_REGISTER: return proto_decode_register(f, &m.reg);
  case PROTO_REGISTERED: return proto_decode_registered(f, &m.registered);
  case PROTO_DISK: return proto_decode_disk(f, &m.disk);
  case PROTO_CYCLE_START: return proto_decode_cycle_start(f, &m.cs);
  case PROTO_EXTENT: return proto_decode_extent(f, &m.extent);
  case PROTO_CYCLE_END: return proto_decode_cycle_end(f, &m.ce);
  case PROTO_ACK: return proto_decode_ack(f, &m.ack);
  case PROTO_NACK: return proto_decode_nack(f, &m.nack);
  case PROTO_HASHES: return proto_decode_hashes(f, &m.hashes);
  case PROTO_NEED: return proto_decode_need(f, &m.need);
  case PROTO_HEARTBEAT: return proto_decode_heartbeat(f, &m.hb);
  case PROTO_ERROR: return proto_decode_error(f, &m.error);
  case PROTO_POINT_REQUEST: return proto_decode_point_request(f, &m.preq);
  case PROTO_POINT: return proto_decode_point(f, &m.point);
  case PROTO_READINESS: return proto_decode_readiness(f, &m.readiness);
  case PROTO_RENEW: return proto_decode_renew(f, &m.renew);
  case PROTO_RENEWED: return proto_decode_renewed(f, &m.renewed);
  case PROTO_UNPROTECT: return proto_decode_unprotect(f, &m.unprotect);
  case PROTO_UNPROTECT_REQUEST: return proto_decode_unprotect_request(f, &m.unprotect_request);
  case PROTO_GROUP_POINT_REQUEST: return proto_decode_group_point_request(f, &m.gpreq);
  case PROTO_GROUP_FREEZE: return proto_decode_group_freeze(f, &m.gfreeze);
  case PROTO_GROUP_FROZEN: return proto_decode_group_frozen(f, &m.gfrozen);
  case PROTO_GROUP_THAW: return proto_decode_group_thaw(f, &m.gthaw);
  case PROTO_STORED: return proto_decode_stored(f, &m.stored);
  case PROTO_MEMBERS: return proto_decode_members(f, &m.members);
  default: return RPL_E_PROTO_TYPE;
  }
}

const char *proto_type_name(uint8_t type)
{
  static const char *const names[] = {
    [PROTO_HELLO] = "HELLO", [PROTO_REGISTER] = "REGISTER", [PROTO_REGISTERED] = "REGISTERED",
    [PROTO_DISK] = "DISK", [PROTO_CYCLE_START] = "CYCLE_START", [PROTO_EXTENT] = "EXTENT",
    [PROTO_CYCLE_END] = "CYCLE_END", [PROTO_ACK] = "ACK", [PROTO_NACK] = "NACK",
    [PROTO_HASHES] = "HASHES", [PROTO_NEED] = "NEED", [PROTO_HEARTBEAT] = "HEARTBEAT",
    [PROTO_ERROR] = "ERROR", [PROTO_POINT_REQUEST] = "POINT_REQUEST", [PROTO_POINT] = "POINT",
    [PROTO_READINESS] = "READINESS", [PROTO_RENEW] = "RENEW", [PROTO_RENEWED] = "RENEWED",
    [PROTO_UNPROTECT] = "UNPROTECT", [PROTO_UNPROTECT_REQUEST] = "UNPROTECT_REQUEST",
    [PROTO_GROUP_POINT_REQUEST] = "GROUP_POINT_REQUEST", [PROTO_GROUP_FREEZE] = "GROUP_FREEZE",
    [PROTO_GROUP_FROZEN] = "GROUP_FROZEN", [PROTO_GROUP_THAW] = "GROUP_THAW", [PROTO_STORED] = "STORED",
    [PROTO_MEMBERS] = "MEMBERS",
  };
  return type >= 1 && type <= PROTO_TYPE_MAX ? names[type] : "UNKNOWN";
}

/* ---- streaming decoder -------------------------------------------------------------------- */

void proto_decoder_init(struct proto_decoder *d) { memset(d, 0, sizeof *d); }

void proto_decoder_set_limit(struct proto_decoder *d, uint32_t max_payload) { d->max_payload = max_payload; }

void proto_decoder_free(struct proto_decoder *d)
{
  free(d->buf);
  memset(d, 0, sizeof *d);
}

/* Makes room for `room` bytes after end, compacting first; never beyond DECODER_MAX_ALLOC. */
static rpl_err decoder_make_room(struct proto_decoder *d, size_t room)
{
  size_t held = d->end - d->start;
  if (room > DECODER_MAX_ALLOC || held > DECODER_MAX_ALLOC - room)
    return RPL_E_LIMIT;
  if (d->alloc - d->end >= room)
    return RPL_OK;
  if (d->start) {
    memmove(d->buf, d->buf + d->start, held);
    d->start = 0;
    d->end = held;
    if (d->alloc - d->end >= room)
      return RPL_OK;
  }
  size_t n = d->alloc ? d->alloc : DECODER_MIN_ALLOC;
  while (n < held + room)
    n = n > DECODER_MAX_ALLOC / 2 ? DECODER_MAX_ALLOC : n * 2;
  uint8_t *p = realloc(d->buf, n);
  if (!p)
    return RPL_E_NOMEM;
  d->buf = p;
  d->alloc = n;
  return RPL_OK;
}

rpl_err proto_decoder_reserve(struct proto_decoder *d, uint8_t **space, size_t *avail)
{
  if (d->broken)
    return d->broken;
  size_t held = d->end - d->start;
  size_t want = PROTO_HEADER_SIZE; /* bytes the next frame still needs, at least */
  if (held >= PROTO_HEADER_SIZE) {
    uint32_t length;
    rpl_err e = header_check(d->buf + d->start, &length); /* before sizing for the payload */
    if (!e && d->max_payload && length > d->max_payload)
      e = RPL_E_PROTO_TOO_LONG;
    if (e)
      return d->broken = e;
    size_t total = PROTO_HEADER_SIZE + (size_t)length;
    want = total > held ? total - held : 1;
  }
  if (want < DECODER_SLACK)
    want = DECODER_SLACK;
  rpl_err e = decoder_make_room(d, want);
  if (e == RPL_E_LIMIT) /* a frame close to the cap: offer exactly what it lacks */
    e = decoder_make_room(d, want == DECODER_SLACK ? 1 : want);
  if (e)
    return e;
  *space = d->buf + d->end;
  *avail = d->alloc - d->end;
  return RPL_OK;
}

void proto_decoder_commit(struct proto_decoder *d, size_t n)
{
  if (n > d->alloc - d->end)
    n = d->alloc - d->end;
  d->end += n;
}

rpl_err proto_decoder_feed(struct proto_decoder *d, const void *data, size_t len)
{
  if (d->broken)
    return d->broken;
  rpl_err e = decoder_make_room(d, len);
  if (e)
    return e;
  if (len)
    memcpy(d->buf + d->end, data, len);
  d->end += len;
  return RPL_OK;
}

rpl_err proto_decoder_next(struct proto_decoder *d, struct proto_frame *frame)
{
  if (d->broken)
    return d->broken;
  if (d->end == d->start)
    return RPL_E_AGAIN;
  size_t used;
  rpl_err e = proto_frame_parse(d->buf + d->start, d->end - d->start, frame, &used);
  if (e == RPL_OK && d->max_payload && frame->length > d->max_payload)
    e = RPL_E_PROTO_TOO_LONG;
  if (e == RPL_OK) {
    d->start += used;
    if (d->start == d->end)
      d->start = d->end = 0; /* frame data stays in place until the next feed/reserve */
    return RPL_OK;
  }
  if (e != RPL_E_AGAIN)
    d->broken = e;
  return e;
}

rpl_err proto_decoder_peek_extent(struct proto_decoder *d, uint32_t min_length, struct proto_split *x)
{
  if (d->broken)
    return d->broken;
  if (d->end - d->start < PROTO_EXTENT_PREFIX_SIZE || d->buf[d->start + 5] != PROTO_EXTENT)
    return RPL_E_AGAIN;
  const uint8_t *h = d->buf + d->start;
  uint32_t length;
  rpl_err e = header_check(h, &length);
  if (e)
    return d->broken = e;
  if ((d->max_payload && length > d->max_payload) || length < EXTENT_FIELDS_SIZE)
    return RPL_E_AGAIN;
  memset(x, 0, sizeof *x);
  struct reader r = {.p = h + PROTO_HEADER_SIZE, .left = EXTENT_FIELDS_SIZE};
  read_extent_fields(&r, &x->m);
  x->m.payload.len = length - (uint32_t)EXTENT_FIELDS_SIZE;
  if (r.err || x->m.codec != PROTO_CODEC_NONE || x->m.payload.len < min_length || extent_check(&x->m))
    return RPL_E_AGAIN;
  memcpy(x->prefix, h, PROTO_EXTENT_PREFIX_SIZE);
  return RPL_OK;
}

void proto_decoder_split_extent(struct proto_decoder *d, struct proto_split *x, uint8_t *dst)
{
  size_t buffered = d->end - d->start - PROTO_EXTENT_PREFIX_SIZE;
  size_t n = buffered < x->m.payload.len ? buffered : x->m.payload.len;
  memcpy(dst, d->buf + d->start + PROTO_EXTENT_PREFIX_SIZE, n);
  d->start += PROTO_EXTENT_PREFIX_SIZE + n;
  if (d->start == d->end)
    d->start = d->end = 0;
  x->m.payload.ptr = dst;
  x->have = (uint32_t)n;
}

rpl_err proto_split_finish(const struct proto_split *x, struct proto_frame *f)
{
  uint32_t crc = proto_crc32c(0, x->prefix, 12);
  crc = proto_crc32c(crc, x->prefix + PROTO_HEADER_SIZE, EXTENT_FIELDS_SIZE);
  crc = proto_crc32c(crc, x->m.payload.ptr, x->m.payload.len);
  if (crc != get32(x->prefix + 12))
    return RPL_E_PROTO_CRC;
  f->type = PROTO_EXTENT;
  f->flags = 0;
  f->length = (uint32_t)EXTENT_FIELDS_SIZE + x->m.payload.len;
  f->payload = x->prefix + PROTO_HEADER_SIZE;
  f->extent_data = x->m.payload.ptr;
  return RPL_OK;
}

rpl_err proto_decoder_finish(const struct proto_decoder *d)
{
  if (d->broken)
    return d->broken;
  return d->end == d->start ? RPL_OK : RPL_E_PROTO_TRUNCATED;
}

/* ---- version negotiation ------------------------------------------------------------------ */

rpl_err proto_negotiate(uint16_t our_min, uint16_t our_max, uint16_t peer_min, uint16_t peer_max,
                        uint16_t *chosen, char *msg, size_t msgsz)
{
  uint16_t lo = our_min > peer_min ? our_min : peer_min;
  uint16_t hi = our_max < peer_max ? our_max : peer_max;
  if (peer_min == 0 || peer_min > peer_max || lo > hi) {
    if (msg && msgsz)
      snprintf(msg, msgsz, "no common protocol version: peer speaks %u..%u, we speak %u..%u",
               peer_min, peer_max, our_min, our_max);
    return RPL_E_PROTO_NO_COMMON_VERSION;
  }
  *chosen = hi;
  return RPL_OK;
}

const char *proto_consistency_name(uint8_t consistency)
{
  static const char *const names[] = {
    [PROTO_FUZZY] = "fuzzy",
    [PROTO_CRASH_CONSISTENT] = "crash-consistent",
    [PROTO_FS_CONSISTENT] = "filesystem-consistent",
    [PROTO_APP_CONSISTENT] = "application-consistent",
    [PROTO_PRECOPY] = "precopy",
  };
  return consistency < sizeof names / sizeof *names ? names[consistency] : "unknown";
}
