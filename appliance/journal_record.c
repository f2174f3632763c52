/* journal_record.c - the cache journal's record codec: little-endian fields, header parse, record
 * decode and encode. */
#include "journal_internal.h"

#include <string.h>

/* ---- little-endian field access ----------------------------------------------------------- */

static void put_u16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
void journal_put_u32(uint8_t *p, uint32_t v)
{
  for (int i = 0; i < 4; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
void journal_put_u64(uint8_t *p, uint64_t v)
{
  for (int i = 0; i < 8; i++)
    p[i] = (uint8_t)(v >> (8 * i));
}
static uint16_t get_u16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
uint32_t journal_get_u32(const uint8_t *p)
{
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
uint64_t journal_get_u64(const uint8_t *p) { return (uint64_t)journal_get_u32(p) | (uint64_t)journal_get_u32(p + 4) << 32; }

/* ---- record codec ------------------------------------------------------------------------- */

static uint32_t body_size_of(uint8_t type)
{
  switch (type) {
  case JOURNAL_REC_SEGMENT: return JOURNAL_SEGMENT_BODY;
  case JOURNAL_REC_CYCLE_BEGIN: return JOURNAL_BEGIN_BODY;
  case JOURNAL_REC_EXTENT: return JOURNAL_EXTENT_BODY;
  case JOURNAL_REC_CYCLE_END: return JOURNAL_END_BODY;
  default: return 0;
  }
}

rpl_err journal_record_parse_header(const uint8_t buf[JOURNAL_HEADER_SIZE], struct journal_record_header *out)
{
  if (journal_get_u32(buf) != JOURNAL_RECORD_MAGIC || buf[4] != JOURNAL_FORMAT_VERSION || get_u16(buf + 6) != 0)
    return RPL_E_JOURNAL_RECORD;
  uint8_t type = buf[5];
  uint32_t body_len = journal_get_u32(buf + 8), payload_len = journal_get_u32(buf + 12), payload_crc = journal_get_u32(buf + 16);
  uint32_t want = body_size_of(type);
  if (want == 0 || body_len != want || body_len > JOURNAL_MAX_BODY)
    return RPL_E_JOURNAL_RECORD;
  if (payload_len > JOURNAL_MAX_PAYLOAD || (type != JOURNAL_REC_EXTENT && payload_len != 0) ||
      (payload_len == 0 && payload_crc != 0))
    return RPL_E_JOURNAL_RECORD;
  *out = (struct journal_record_header){.type = type, .body_len = body_len, .payload_len = payload_len,
                                        .payload_crc = payload_crc, .header_crc = journal_get_u32(buf + 20)};
  return RPL_OK;
}

/* The extent fields a record may hold: the same rules as the wire's EXTENT, plus the payload size
 * its codec implies. */
bool journal_extent_fields_valid(uint64_t offset, uint32_t length, uint8_t codec, uint32_t payload_len)
{
  if (offset % 512 || length % 512 || length == 0 || length > PROTO_MAX_EXTENT || offset > UINT64_MAX - length)
    return false;
  switch (codec) {
  case PROTO_CODEC_NONE: return payload_len == length;
  case PROTO_CODEC_ZSTD: return payload_len > 0 && payload_len <= JOURNAL_MAX_PAYLOAD;
  case PROTO_CODEC_ZERO: return payload_len == 0;
  default: return false;
  }
}

/* Checks the header CRC and decodes the body of a record whose header+body are at buf; the payload
 * (if any) is not looked at. */
rpl_err journal_decode_head(const uint8_t *buf, const struct journal_record_header *h, struct journal_record *rec)
{
  const uint8_t *b = buf + JOURNAL_HEADER_SIZE;
  uint32_t crc = proto_crc32c(proto_crc32c(0, buf, 20), b, h->body_len);
  if (crc != h->header_crc)
    return RPL_E_JOURNAL_RECORD;
  memset(rec, 0, sizeof *rec);
  rec->type = h->type;
  rec->payload_len = h->payload_len;
  switch (h->type) {
  case JOURNAL_REC_SEGMENT:
    memcpy(rec->u.segment.disk_id, b, PROTO_ID_SIZE);
    rec->u.segment.seq = journal_get_u64(b + 16);
    if (rec->u.segment.seq == 0)
      return RPL_E_JOURNAL_RECORD;
    break;
  case JOURNAL_REC_CYCLE_BEGIN:
    rec->u.begin.cycle = journal_get_u64(b);
    rec->u.begin.kind = b[8];
    if (rec->u.begin.cycle == 0 || rec->u.begin.kind > PROTO_CYCLE_RESYNC)
      return RPL_E_JOURNAL_RECORD;
    break;
  case JOURNAL_REC_EXTENT:
    rec->u.extent.cycle = journal_get_u64(b);
    rec->u.extent.offset = journal_get_u64(b + 8);
    rec->u.extent.length = journal_get_u32(b + 16);
    rec->u.extent.codec = b[20];
    memcpy(rec->u.extent.hash, b + 21, PROTO_HASH_SIZE);
    if (rec->u.extent.cycle == 0 ||
        !journal_extent_fields_valid(rec->u.extent.offset, rec->u.extent.length, rec->u.extent.codec, h->payload_len))
      return RPL_E_JOURNAL_RECORD;
    break;
  case JOURNAL_REC_CYCLE_END:
    rec->u.end.cycle = journal_get_u64(b);
    rec->u.end.extents = journal_get_u64(b + 8);
    rec->u.end.raw_bytes = journal_get_u64(b + 16);
    rec->u.end.payload_bytes = journal_get_u64(b + 24);
    memcpy(rec->u.end.digest, b + 32, PROTO_HASH_SIZE);
    if (rec->u.end.cycle == 0)
      return RPL_E_JOURNAL_RECORD;
    break;
  default:
    return RPL_E_JOURNAL_RECORD;
  }
  return RPL_OK;
}

rpl_err journal_record_decode(const uint8_t *buf, size_t len, struct journal_record *rec, size_t *used)
{
  if (len < JOURNAL_HEADER_SIZE) {
    *used = JOURNAL_HEADER_SIZE;
    return RPL_E_AGAIN;
  }
  struct journal_record_header h;
  rpl_err e = journal_record_parse_header(buf, &h);
  if (e)
    return e;
  size_t total = (size_t)JOURNAL_HEADER_SIZE + h.body_len + h.payload_len;
  if (len < total) {
    *used = total;
    return RPL_E_AGAIN;
  }
  if ((e = journal_decode_head(buf, &h, rec)))
    return e;
  const uint8_t *payload = buf + JOURNAL_HEADER_SIZE + h.body_len;
  if (h.payload_len && proto_crc32c(0, payload, h.payload_len) != h.payload_crc)
    return RPL_E_JOURNAL_RECORD;
  rec->payload = h.payload_len ? payload : NULL;
  *used = total;
  return RPL_OK;
}

/* Writes header + body of a record into out (JOURNAL_HEADER_SIZE + body_len bytes); payload_crc
 * is the CRC32C of the payload that will follow (0 when none). */
size_t journal_encode_head(uint8_t *out, uint8_t type, const uint8_t *body, uint32_t body_len, uint32_t payload_len,
                           uint32_t payload_crc)
{
  journal_put_u32(out, JOURNAL_RECORD_MAGIC);
  out[4] = JOURNAL_FORMAT_VERSION;
  out[5] = type;
  put_u16(out + 6, 0);
  journal_put_u32(out + 8, body_len);
  journal_put_u32(out + 12, payload_len);
  journal_put_u32(out + 16, payload_crc);
  memcpy(out + JOURNAL_HEADER_SIZE, body, body_len);
  journal_put_u32(out + 20, proto_crc32c(proto_crc32c(0, out, 20), body, body_len));
  return JOURNAL_HEADER_SIZE + body_len;
}
