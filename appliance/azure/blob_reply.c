/* blob_reply.c - the page-blob client's reading of answers: response headers and bodies as curl
 * hands them over, and what a status, a service error code or a transport failure means (an
 * rpl_err, and whether a retry may help). */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blob_internal.h"
#include "rpl_log.h"

static void copy_value(char *dst, size_t dstsz, const char *v, size_t len)
{
  if (len >= dstsz)
    len = dstsz - 1;
  memcpy(dst, v, len);
  dst[len] = '\0';
}

static int64_t parse_int(const char *v, size_t len)
{
  char tmp[32];
  if (len == 0 || len >= sizeof tmp)
    return -1;
  memcpy(tmp, v, len);
  tmp[len] = '\0';
  char *end;
  errno = 0;
  long long x = strtoll(tmp, &end, 10);
  if (errno || *end || x < 0)
    return -1;
  return x;
}

size_t blob_reply_on_header(char *buf, size_t size, size_t nitems, void *ud)
{
  struct blob_req *r = ud;
  size_t len = size * nitems;
  r->header_bytes += len;
  if (r->header_bytes > REQ_HEADER_BYTES_MAX) {
    r->overflow = true;
    return 0;
  }
  if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
    /* A new response (after a proxy's CONNECT answer or an interim 1xx): start over. */
    const char *sp = memchr(buf, ' ', len);
    r->reply.status = sp ? strtol(sp + 1, NULL, 10) : 0;
    r->reply.error_code[0] = '\0';
    r->retry_after_ms = -1;
    return len;
  }
  const char *colon = memchr(buf, ':', len);
  if (!colon)
    return len;
  size_t nl = (size_t)(colon - buf);
  const char *v = colon + 1;
  size_t vl = len - nl - 1;
  while (vl && (*v == ' ' || *v == '\t'))
    v++, vl--;
  while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
    vl--;
#define IS(name) (nl == sizeof(name) - 1 && strncasecmp(buf, name, nl) == 0)
  if (IS("x-ms-error-code"))
    copy_value(r->reply.error_code, sizeof r->reply.error_code, v, vl);
  else if (IS("x-ms-request-id"))
    copy_value(r->reply.request_id, sizeof r->reply.request_id, v, vl);
  else if (IS("ETag"))
    copy_value(r->reply.etag, sizeof r->reply.etag, v, vl);
  else if (IS("x-ms-snapshot"))
    copy_value(r->reply.snapshot, sizeof r->reply.snapshot, v, vl);
  else if (IS("x-ms-lease-id"))
    copy_value(r->reply.lease_id, sizeof r->reply.lease_id, v, vl);
  else if (IS("x-ms-lease-state"))
    copy_value(r->reply.lease_state, sizeof r->reply.lease_state, v, vl);
  else if (IS("x-ms-blob-type"))
    copy_value(r->reply.blob_type, sizeof r->reply.blob_type, v, vl);
  else if (IS("x-ms-copy-status"))
    copy_value(r->reply.copy_status, sizeof r->reply.copy_status, v, vl);
  else if (IS("x-ms-copy-id"))
    copy_value(r->reply.copy_id, sizeof r->reply.copy_id, v, vl);
  else if (IS("x-ms-blob-sequence-number"))
    r->reply.sequence_number = parse_int(v, vl);
  else if (IS("x-ms-blob-content-length"))
    r->reply.content_length = parse_int(v, vl);
  else if (IS("Content-Length") && r->reply.content_length < 0 && r->head)
    r->reply.content_length = parse_int(v, vl);
  else if (IS("x-ms-retry-after-ms") || IS("retry-after-ms")) {
    int64_t ms = parse_int(v, vl);
    if (ms >= 0)
      r->retry_after_ms = ms;
  } else if (IS("Retry-After")) {
    /* Seconds, or an HTTP date. */
    int64_t s = parse_int(v, vl);
    if (s < 0) {
      char tmp[64];
      copy_value(tmp, sizeof tmp, v, vl);
      time_t at = curl_getdate(tmp, NULL);
      if (at > 0)
        s = at > time(NULL) ? at - time(NULL) : 0;
    }
    if (s >= 0 && r->retry_after_ms < 0)
      r->retry_after_ms = s * 1000;
  } else if (IS("Date")) {
    char tmp[64];
    copy_value(tmp, sizeof tmp, v, vl);
    time_t t = curl_getdate(tmp, NULL);
    if (t > 0)
      r->server_date = t;
  }
#undef IS
  return len;
}

size_t blob_reply_on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
  struct blob_req *r = ud;
  size_t n = size * nmemb;
  if (r->sink && r->reply.status >= 200 && r->reply.status < 300) {
    if (r->sink_used + n > r->sink_len) {
      r->overflow = true;
      return 0;
    }
    memcpy((char *)r->sink + r->sink_used, ptr, n);
    r->sink_used += n;
    return n;
  }
  if (r->resp_len + n > r->resp_limit) {
    r->overflow = true;
    return 0;
  }
  if (r->resp_len + n + 1 > r->resp_cap) {
    size_t ncap = r->resp_cap ? r->resp_cap : 4096;
    while (ncap < r->resp_len + n + 1)
      ncap *= 2;
    char *grown = realloc(r->resp, ncap);
    if (!grown) {
      r->overflow = true;
      return 0;
    }
    r->resp = grown;
    r->resp_cap = ncap;
  }
  memcpy(r->resp + r->resp_len, ptr, n);
  r->resp_len += n;
  r->resp[r->resp_len] = '\0';
  return n;
}

/* A lease error of the storage: held by someone else (present, or a lease id was needed), or ours
 * no longer valid (lost, expired, broken, another id). */
static rpl_err lease_error(const char *code)
{
  if (!strcmp(code, "LeaseAlreadyPresent") || !strcmp(code, "LeaseIdMissing") ||
      !strcmp(code, "LeaseIsBreakingAndCannotBeAcquired"))
    return RPL_E_LEASE_HELD;
  return RPL_E_LEASE_LOST;
}

/* Maps a final non-2xx answer to our error, by status and the service's error code. */
rpl_err blob_status_error(const struct blob_req *r)
{
  long s = r->reply.status;
  const char *code = r->reply.error_code;
  /* Azure answers a bad signature or token with 403 AuthenticationFailed, a malformed one with 400
   * InvalidAuthenticationInfo; both mean our credentials. */
  if (strcmp(code, "AuthenticationFailed") == 0 || strcmp(code, "InvalidAuthenticationInfo") == 0 ||
      strncmp(code, "AuthorizationPermission", 23) == 0 || strcmp(code, "AuthorizationFailure") == 0 ||
      strncmp(code, "AuthorizationSource", 19) == 0 || strncmp(code, "AuthorizationProtocol", 21) == 0 ||
      strncmp(code, "AuthorizationResourceType", 25) == 0 || strncmp(code, "AuthorizationService", 20) == 0)
    return RPL_E_BLOB_AUTH;
  switch (s) {
  case 403: return RPL_E_BLOB_AUTH;
  case 404: return RPL_E_BLOB_NOT_FOUND;
  case 409:
    if (strstr(code, "AlreadyExists"))
      return RPL_E_BLOB_EXISTS;
    if (strncmp(code, "Lease", 5) == 0)
      return lease_error(code);
    break;
  case 412:
    if (strcmp(code, "SequenceNumberConditionNotMet") == 0)
      return RPL_E_BLOB_FENCED;
    if (strncmp(code, "Lease", 5) == 0)
      return lease_error(code);
    return RPL_E_BLOB_CONDITION;
  case 416: return RPL_E_BLOB_RANGE;
  case 407: return RPL_E_BLOB_PROXY;
  default: break;
  }
  if (s == 408 || s == 429 || s >= 500)
    return RPL_E_BLOB_THROTTLED;
  return rpl_fail(RPL_E_BLOB_HTTP, "HTTP %ld %s%s%s", s, code[0] ? code : "(no error code)", r->reply.message[0] ? ": " : "",
                  r->reply.message);
}

bool blob_retryable_status(long s)
{
  return s == 408 || s == 429 || s == 500 || s == 502 || s == 503 || s == 504;
}

bool blob_retryable_transport(CURLcode cc)
{
  switch (cc) {
  case CURLE_COULDNT_CONNECT:
  case CURLE_OPERATION_TIMEDOUT:
  case CURLE_SEND_ERROR:
  case CURLE_RECV_ERROR:
  case CURLE_GOT_NOTHING:
  case CURLE_PARTIAL_FILE:
  case CURLE_SSL_CONNECT_ERROR:
  case CURLE_HTTP2:
  case CURLE_HTTP2_STREAM:
  /* The scheme is checked when the account is configured, so at a request this is a reply whose
   * first bytes are no status line (curl: "Received HTTP/0.9 when not allowed"): a connection cut or
   * garbled on the way, as e2e_blob_faults's proxy does now and then. */
  case CURLE_UNSUPPORTED_PROTOCOL:
    return true;
  default:
    return false;
  }
}

rpl_err blob_transport_error(CURLcode cc, long connect_code)
{
  if (connect_code == 407 || cc == CURLE_COULDNT_RESOLVE_PROXY || (connect_code >= 300 && cc != CURLE_OK))
    return RPL_E_BLOB_PROXY;
  switch (cc) {
  case CURLE_PEER_FAILED_VERIFICATION:
  case CURLE_SSL_CACERT_BADFILE:
  case CURLE_SSL_CERTPROBLEM:
  case CURLE_SSL_CIPHER:
  case CURLE_SSL_ISSUER_ERROR:
  case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
  case CURLE_SSL_CRL_BADFILE:
    return RPL_E_BLOB_TLS;
  case CURLE_OPERATION_TIMEDOUT:
    return RPL_E_TIMEOUT;
  default:
    return RPL_E_BLOB_CONNECT;
  }
}
