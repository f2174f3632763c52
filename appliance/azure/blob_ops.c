/* blob_ops.c - the page-blob client's operations (pages, containers, blobs, properties, reads, page
 * ranges, snapshots, sequence numbers, resize, leases, lists, metadata, server-side copies, probe)
 * built on blob_client.c's requests. */
#include <ctype.h>
#include <curl/curl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blob_internal.h"
#include "crc64.h"

/* ---- operations ---- */

static rpl_err add_cond(struct blob_req *r, const struct blob_write_cond *cond)
{
  if (!cond)
    return RPL_OK;
  rpl_err err = RPL_OK;
  if (cond->sequence_lt > 0) {
    err = blob_req_header(r, "x-ms-if-sequence-number-lt", "%lld", (long long)cond->sequence_lt);
    r->sequence_fenced = true;
  }
  if (err == RPL_OK && cond->lease_id && *cond->lease_id)
    err = blob_req_header(r, "x-ms-lease-id", "%s", cond->lease_id);
  return err;
}

rpl_err blob_put_page_async(struct blob_client *c, const char *container, const char *blob, uint64_t offset,
                            const void *data, size_t len, const struct blob_write_cond *cond,
                            blob_done_fn done, void *ctx)
{
  if (len == 0 || len > BLOB_MAX_PUT_PAGE || len % BLOB_PAGE_SIZE || offset % BLOB_PAGE_SIZE || !data)
    return RPL_E_BLOB_RANGE;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  r->body = data;
  r->body_len = len;
  if (c->cfg.upload_check == BLOB_CHECK_MD5) {
    unsigned char md5[16];
    unsigned int mdlen = 0;
    if (!EVP_Digest(data, len, md5, &mdlen, EVP_md5(), NULL)) {
      blob_req_free(r);
      return RPL_E_INTERNAL;
    }
    EVP_EncodeBlock((unsigned char *)r->content_md5, md5, (int)mdlen);
  }
  err = blob_req_query(r, "comp", "page");
  if (err == RPL_OK && c->cfg.upload_check == BLOB_CHECK_CRC64) {
    char crc[13];
    blob_crc64_base64(blob_crc64(0, data, len), crc);
    err = blob_req_header(r, "x-ms-content-crc64", "%s", crc);
  }
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-page-write", "update");
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-range", "bytes=%llu-%llu", (unsigned long long)offset,
                     (unsigned long long)(offset + len - 1));
  if (err == RPL_OK)
    err = add_cond(r, cond);
  if (err != RPL_OK) {
    blob_req_free(r);
    return err;
  }
  r->done = done;
  r->ctx = ctx;
  blob_enqueue(c, r);
  return RPL_OK;
}

rpl_err blob_clear_pages_async(struct blob_client *c, const char *container, const char *blob, uint64_t offset,
                               uint64_t len, const struct blob_write_cond *cond, blob_done_fn done, void *ctx)
{
  if (len == 0 || len % BLOB_PAGE_SIZE || offset % BLOB_PAGE_SIZE || offset + len < offset)
    return RPL_E_BLOB_RANGE;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = blob_req_query(r, "comp", "page");
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-page-write", "clear");
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-range", "bytes=%llu-%llu", (unsigned long long)offset,
                     (unsigned long long)(offset + len - 1));
  if (err == RPL_OK)
    err = add_cond(r, cond);
  if (err != RPL_OK) {
    blob_req_free(r);
    return err;
  }
  r->done = done;
  r->ctx = ctx;
  blob_enqueue(c, r);
  return RPL_OK;
}

struct sync_wait {
  bool done;
  rpl_err err;
  struct blob_reply reply;
};

static void sync_done(void *ctx, rpl_err err, const struct blob_reply *reply)
{
  struct sync_wait *w = ctx;
  w->done = true;
  w->err = err;
  w->reply = *reply;
}

/* Queues r and runs the client until r completes. */
static rpl_err run_sync(struct blob_client *c, struct blob_req *r, struct blob_reply *reply)
{
  struct sync_wait w = {0};
  r->done = sync_done;
  r->ctx = &w;
  blob_enqueue(c, r);
  while (!w.done) {
    rpl_err err = blob_client_poll(c, 1000);
    if (err != RPL_OK)
      return err;
  }
  if (reply)
    *reply = w.reply;
  return w.err;
}

/* Runs r built so far, or frees it when building failed. */
static rpl_err submit(struct blob_client *c, struct blob_req *r, rpl_err built, struct blob_reply *reply)
{
  if (built != RPL_OK) {
    blob_req_free(r);
    return built;
  }
  return run_sync(c, r, reply);
}

rpl_err blob_container_create(struct blob_client *c, const char *container, struct blob_reply *reply)
{
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, NULL, &r);
  if (err != RPL_OK)
    return err;
  return submit(c, r, blob_req_query(r, "restype", "container"), reply);
}

rpl_err blob_container_properties(struct blob_client *c, const char *container, struct blob_reply *reply)
{
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "HEAD", container, NULL, &r);
  if (err != RPL_OK)
    return err;
  r->head = true;
  return submit(c, r, blob_req_query(r, "restype", "container"), reply);
}

rpl_err blob_create_page_blob(struct blob_client *c, const char *container, const char *blob, uint64_t size,
                              int64_t sequence, bool if_none_match, struct blob_reply *reply)
{
  if (size % BLOB_PAGE_SIZE)
    return RPL_E_BLOB_RANGE;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = blob_req_header(r, "x-ms-blob-type", "PageBlob");
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-blob-content-length", "%llu", (unsigned long long)size);
  if (err == RPL_OK && sequence >= 0)
    err = blob_req_header(r, "x-ms-blob-sequence-number", "%lld", (long long)sequence);
  if (err == RPL_OK && if_none_match)
    err = blob_req_header(r, "If-None-Match", "*");
  err = submit(c, r, err, reply);
  /* If-None-Match: * on an existing blob answers 409 BlobAlreadyExists. */
  return err;
}

rpl_err blob_put_block_blob(struct blob_client *c, const char *container, const char *blob, const void *data,
                            size_t len, const char *if_match, bool if_none_match, struct blob_reply *reply)
{
  if (len > BLOB_MAX_SMALL_BLOCK_BLOB || (len && !data))
    return RPL_E_BLOB_RANGE;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  r->body = data;
  r->body_len = len;
  err = blob_req_header(r, "x-ms-blob-type", "BlockBlob");
  if (err == RPL_OK && if_match)
    err = blob_req_header(r, "If-Match", "%s", if_match);
  if (err == RPL_OK && if_none_match)
    err = blob_req_header(r, "If-None-Match", "*");
  /* If-None-Match: * on an existing blob answers 409 BlobAlreadyExists; a changed ETag, 412. */
  return submit(c, r, err, reply);
}

rpl_err blob_get_properties(struct blob_client *c, const char *container, const char *blob, const char *snapshot,
                            struct blob_reply *reply)
{
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "HEAD", container, blob, &r);
  if (err != RPL_OK)
    return err;
  r->head = true;
  return submit(c, r, snapshot ? blob_req_query(r, "snapshot", snapshot) : RPL_OK, reply);
}

rpl_err blob_read(struct blob_client *c, const char *container, const char *blob, const char *snapshot,
                  uint64_t offset, void *buf, size_t len, struct blob_reply *reply)
{
  if (len == 0)
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "GET", container, blob, &r);
  if (err != RPL_OK)
    return err;
  r->sink = buf;
  r->sink_len = len;
  err = snapshot ? blob_req_query(r, "snapshot", snapshot) : RPL_OK;
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-range", "bytes=%llu-%llu", (unsigned long long)offset,
                     (unsigned long long)(offset + len - 1));
  return submit(c, r, err, reply);
}

struct pagelist_ctx {
  struct blob_page_list *out;
  uint64_t lo, hi; /* the slice asked for: answers are clipped to it */
  char marker[1024];
};

static rpl_err parse_pagelist(struct blob_req *r, const char *body, size_t len)
{
  struct pagelist_ctx *p = r->parse_ctx;
  struct blob_page_list part = {0};
  rpl_err err = blob_xml_parse_page_list(body, len, &part, p->marker, sizeof p->marker);
  for (size_t i = 0; err == RPL_OK && i < part.count; i++) {
    uint64_t s = part.ranges[i].offset, e = s + part.ranges[i].length;
    if (s < p->lo)
      s = p->lo;
    if (e > p->hi)
      e = p->hi;
    if (e > s)
      err = blob_page_list_add(p->out, s, e - s);
  }
  blob_page_list_free(&part);
  return err;
}

rpl_err blob_get_page_ranges(struct blob_client *c, const char *container, const char *blob, const char *snapshot,
                             uint64_t offset, uint64_t len, struct blob_page_list *out, struct blob_reply *reply)
{
  struct blob_reply local;
  if (!reply)
    reply = &local;
  if (offset % BLOB_PAGE_SIZE || len % BLOB_PAGE_SIZE)
    return RPL_E_BLOB_RANGE;
  if (len == 0) {
    rpl_err err = blob_get_properties(c, container, blob, snapshot, reply);
    if (err != RPL_OK)
      return err;
    if (reply->content_length < 0)
      return rpl_fail(RPL_E_BLOB_HTTP, "the blob's properties gave no length");
    if ((uint64_t)reply->content_length <= offset)
      return RPL_OK;
    len = (uint64_t)reply->content_length - offset;
  }
  struct pagelist_ctx *p = calloc(1, sizeof *p);
  if (!p)
    return RPL_E_NOMEM;
  p->out = out;
  rpl_err err = RPL_OK;
  for (uint64_t lo = offset; lo < offset + len && err == RPL_OK; lo += c->cfg.pagelist_slice) {
    uint64_t hi = lo + c->cfg.pagelist_slice < offset + len ? lo + c->cfg.pagelist_slice : offset + len;
    p->lo = lo;
    p->hi = hi;
    p->marker[0] = '\0';
    do {
      struct blob_req *r;
      err = blob_req_new(c, "GET", container, blob, &r);
      if (err != RPL_OK)
        break;
      r->resp_limit = BLOB_XML_MAX_BYTES;
      r->parse = parse_pagelist;
      r->parse_ctx = p;
      err = blob_req_query(r, "comp", "pagelist");
      if (err == RPL_OK && snapshot)
        err = blob_req_query(r, "snapshot", snapshot);
      if (err == RPL_OK && p->marker[0])
        err = blob_req_query(r, "marker", p->marker);
      if (err == RPL_OK)
        err = blob_req_header(r, "x-ms-range", "bytes=%llu-%llu", (unsigned long long)lo, (unsigned long long)(hi - 1));
      err = submit(c, r, err, reply);
    } while (err == RPL_OK && p->marker[0]);
  }
  free(p);
  return err;
}

rpl_err blob_snapshot(struct blob_client *c, const char *container, const char *blob, struct blob_reply *reply)
{
  if (!reply)
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = submit(c, r, blob_req_query(r, "comp", "snapshot"), reply);
  if (err == RPL_OK && !reply->snapshot[0])
    return rpl_fail(RPL_E_BLOB_HTTP, "the snapshot was taken but its answer named no snapshot id");
  return err;
}

rpl_err blob_delete(struct blob_client *c, const char *container, const char *blob, const char *snapshot,
                    struct blob_reply *reply)
{
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "DELETE", container, blob, &r);
  if (err != RPL_OK)
    return err;
  if (snapshot)
    err = blob_req_query(r, "snapshot", snapshot);
  else
    err = blob_req_header(r, "x-ms-delete-snapshots", "include");
  return submit(c, r, err, reply);
}

rpl_err blob_set_sequence_number(struct blob_client *c, const char *container, const char *blob,
                                 enum blob_sequence_action action, int64_t value, const char *lease_id,
                                 struct blob_reply *reply)
{
  static const char *const names[] = {"update", "max", "increment"};
  if ((unsigned)action > BLOB_SEQUENCE_INCREMENT || (action != BLOB_SEQUENCE_INCREMENT && value < 0))
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = blob_req_query(r, "comp", "properties");
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-sequence-number-action", "%s", names[action]);
  if (err == RPL_OK && action != BLOB_SEQUENCE_INCREMENT)
    err = blob_req_header(r, "x-ms-blob-sequence-number", "%lld", (long long)value);
  if (err == RPL_OK && lease_id)
    err = blob_req_header(r, "x-ms-lease-id", "%s", lease_id);
  return submit(c, r, err, reply);
}

rpl_err blob_resize(struct blob_client *c, const char *container, const char *blob, uint64_t size,
                    const char *lease_id, struct blob_reply *reply)
{
  if (size % BLOB_PAGE_SIZE)
    return RPL_E_BLOB_RANGE;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = blob_req_query(r, "comp", "properties");
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-blob-content-length", "%llu", (unsigned long long)size);
  if (err == RPL_OK && lease_id)
    err = blob_req_header(r, "x-ms-lease-id", "%s", lease_id);
  return submit(c, r, err, reply);
}

rpl_err blob_lease(struct blob_client *c, const char *container, const char *blob, enum blob_lease_action action,
                   int duration_s, const char *lease_id, struct blob_reply *reply)
{
  static const char *const names[] = {"acquire", "renew", "release", "break"};
  if ((unsigned)action > BLOB_LEASE_BREAK)
    return RPL_E_INVALID_ARGUMENT;
  if (action == BLOB_LEASE_ACQUIRE && duration_s != -1 && (duration_s < 15 || duration_s > 60))
    return RPL_E_INVALID_ARGUMENT;
  if ((action == BLOB_LEASE_RENEW || action == BLOB_LEASE_RELEASE) && (!lease_id || !*lease_id))
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = blob_req_query(r, "comp", "lease");
  if (err == RPL_OK)
    err = blob_req_header(r, "x-ms-lease-action", "%s", names[action]);
  if (err == RPL_OK && action == BLOB_LEASE_ACQUIRE)
    err = blob_req_header(r, "x-ms-lease-duration", "%d", duration_s);
  if (err == RPL_OK && action == BLOB_LEASE_ACQUIRE && lease_id && *lease_id)
    err = blob_req_header(r, "x-ms-proposed-lease-id", "%s", lease_id);
  if (err == RPL_OK && (action == BLOB_LEASE_RENEW || action == BLOB_LEASE_RELEASE))
    err = blob_req_header(r, "x-ms-lease-id", "%s", lease_id);
  if (err == RPL_OK && action == BLOB_LEASE_BREAK)
    err = blob_req_header(r, "x-ms-lease-break-period", "0");
  return submit(c, r, err, reply);
}

struct bloblist_ctx {
  struct blob_list *out;
  char marker[1024];
};

static rpl_err parse_bloblist(struct blob_req *r, const char *body, size_t len)
{
  struct bloblist_ctx *p = r->parse_ctx;
  return blob_xml_parse_blob_list(body, len, p->out, p->marker, sizeof p->marker);
}

static rpl_err list_blobs(struct blob_client *c, const char *container, const char *prefix, bool snapshots,
                          struct blob_list *out, struct blob_reply *reply);

rpl_err blob_list_blobs(struct blob_client *c, const char *container, const char *prefix, struct blob_list *out,
                        struct blob_reply *reply)
{
  return list_blobs(c, container, prefix, false, out, reply);
}

rpl_err blob_list_snapshots(struct blob_client *c, const char *container, const char *blob, struct blob_list *out,
                            struct blob_reply *reply)
{
  if (!blob || !*blob)
    return RPL_E_INVALID_ARGUMENT;
  size_t before = out->count;
  rpl_err e = list_blobs(c, container, blob, true, out, reply);
  if (e)
    return e;
  /* the prefix also matches longer names: keep exactly this blob */
  size_t w = before;
  for (size_t i = before; i < out->count; i++)
    if (strcmp(out->items[i].name, blob) == 0)
      out->items[w++] = out->items[i];
  out->count = w;
  return RPL_OK;
}

/* Metadata keys are C identifiers (Azure's rule), values printable ASCII (they travel as headers). */
static bool meta_valid(const struct blob_header *meta, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if (!meta[i].name[0] || strlen(meta[i].name) > 24 || strlen(meta[i].value) > 256)
      return false;
    for (const char *k = meta[i].name; *k; k++)
      if (!(isalnum((unsigned char)*k) || *k == '_'))
        return false;
    for (const char *v = meta[i].value; *v; v++)
      if (*v < 0x20 || *v > 0x7e)
        return false;
  }
  return true;
}

static rpl_err add_meta(struct blob_req *r, const struct blob_header *meta, size_t n)
{
  rpl_err err = RPL_OK;
  for (size_t i = 0; i < n && err == RPL_OK; i++) {
    char name[80];
    snprintf(name, sizeof name, "x-ms-meta-%s", meta[i].name);
    err = blob_req_header(r, name, "%s", meta[i].value);
  }
  return err;
}

rpl_err blob_set_metadata(struct blob_client *c, const char *container, const char *blob,
                          const struct blob_header *meta, size_t n, struct blob_reply *reply)
{
  if (!meta_valid(meta, n))
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = blob_req_query(r, "comp", "metadata");
  if (err == RPL_OK)
    err = add_meta(r, meta, n);
  return submit(c, r, err, reply);
}

rpl_err blob_copy_start(struct blob_client *c, const char *container, const char *blob, const char *source_url,
                        const struct blob_header *meta, size_t n, bool if_none_match, struct blob_reply *reply)
{
  if (!meta_valid(meta, n) || !source_url || !*source_url || strpbrk(source_url, "\r\n"))
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  if (!(r->copy_source = strdup(source_url)))
    err = RPL_E_NOMEM;
  if (err == RPL_OK)
    err = add_meta(r, meta, n);
  if (err == RPL_OK && if_none_match)
    err = blob_req_header(r, "If-None-Match", "*");
  return submit(c, r, err, reply);
}

rpl_err blob_snapshot_meta(struct blob_client *c, const char *container, const char *blob,
                           const struct blob_header *meta, size_t n, const char *lease_id, struct blob_reply *reply)
{
  if (!reply || !meta_valid(meta, n))
    return RPL_E_INVALID_ARGUMENT;
  struct blob_req *r;
  rpl_err err = blob_req_new(c, "PUT", container, blob, &r);
  if (err != RPL_OK)
    return err;
  err = blob_req_query(r, "comp", "snapshot");
  if (err == RPL_OK)
    err = add_meta(r, meta, n);
  if (err == RPL_OK && lease_id && *lease_id)
    err = blob_req_header(r, "x-ms-lease-id", "%s", lease_id);
  err = submit(c, r, err, reply);
  if (err == RPL_OK && !reply->snapshot[0])
    return rpl_fail(RPL_E_BLOB_HTTP, "the snapshot was taken but its answer named no snapshot id");
  return err;
}

static rpl_err list_blobs(struct blob_client *c, const char *container, const char *prefix, bool snapshots,
                          struct blob_list *out, struct blob_reply *reply)
{
  struct bloblist_ctx *p = calloc(1, sizeof *p);
  if (!p)
    return RPL_E_NOMEM;
  p->out = out;
  rpl_err err;
  do {
    struct blob_req *r;
    err = blob_req_new(c, "GET", container, NULL, &r);
    if (err != RPL_OK)
      break;
    r->resp_limit = BLOB_XML_MAX_BYTES;
    r->parse = parse_bloblist;
    r->parse_ctx = p;
    err = blob_req_query(r, "restype", "container");
    if (err == RPL_OK)
      err = blob_req_query(r, "comp", "list");
    if (err == RPL_OK && prefix && *prefix)
      err = blob_req_query(r, "prefix", prefix);
    if (err == RPL_OK && snapshots)
      err = blob_req_query(r, "include", "snapshots,metadata");
    if (err == RPL_OK && p->marker[0])
      err = blob_req_query(r, "marker", p->marker);
    if (err == RPL_OK && c->cfg.list_max_results) {
      char n[16];
      snprintf(n, sizeof n, "%u", c->cfg.list_max_results);
      err = blob_req_query(r, "maxresults", n);
    }
    err = submit(c, r, err, reply);
  } while (err == RPL_OK && p->marker[0]);
  free(p);
  return err;
}

rpl_err blob_client_probe(struct blob_client *c)
{
  CURL *e = curl_easy_init();
  if (!e)
    return RPL_E_NOMEM;
  char url[BLOB_ENDPOINT_MAX + 4];
  snprintf(url, sizeof url, "%s/", c->cfg.account.endpoint);
  blob_common_options(c, e);
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_CONNECT_ONLY, 1L);
  curl_easy_setopt(e, CURLOPT_TIMEOUT, 20L);
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode cc = curl_easy_perform(e);
  long connect_code = 0;
  curl_easy_getinfo(e, CURLINFO_HTTP_CONNECTCODE, &connect_code);
  curl_easy_cleanup(e);
  if (cc == CURLE_OK)
    return RPL_OK;
  rpl_err err = blob_transport_error(cc, connect_code);
  if (err == RPL_E_TIMEOUT)
    err = RPL_E_BLOB_CONNECT;
  if (err == RPL_E_BLOB_PROXY && connect_code)
    return rpl_fail(err, "proxy answered %ld to CONNECT %s:%u%s", connect_code, c->cfg.account.host,
                    c->cfg.account.port, connect_code == 407 || connect_code == 401
                      ? ": proxy authentication failed, check the proxy user and password" : "");
  return rpl_fail(err, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
}
