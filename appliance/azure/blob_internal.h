/* blob_internal.h - parsers, helpers and the client's request state shared by the sources in
 * appliance/azure/; unit tests and fuzz targets may include it too. Nothing else may: the client's
 * promise is appliance/azure/blob.h. */
#ifndef BLOB_INTERNAL_H
#define BLOB_INTERNAL_H

#include <curl/curl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "blob.h"

/* Hard caps on what a server can make us hold. */
#define BLOB_XML_MAX_BYTES (16u * 1024u * 1024u)   /* one listing / page list / error body */
#define BLOB_PAGE_LIST_MAX_RANGES (16u * 1024u * 1024u)
#define BLOB_LIST_MAX_ITEMS (1024u * 1024u)
#define BLOB_TOKEN_JSON_MAX (64u * 1024u)

/* A token endpoint's answer, gathered by curl into data (BLOB_TOKEN_JSON_MAX bytes, the caller's);
 * a longer one stops the transfer and sets overflow. */
struct blob_token_body {
  char *data;
  size_t len;
  bool overflow;
};
/* CURLOPT_WRITEFUNCTION for a struct blob_token_body. */
size_t blob_token_body_write(char *ptr, size_t size, size_t nmemb, void *ud);

/* <Error><Code/><Message/></Error>: code and the first line of the message. */
RPL_MUST_CHECK rpl_err blob_xml_parse_error(const char *xml, size_t len, char *code, size_t codesz,
                                            char *message, size_t messagesz);
/* <PageList>: appends each <PageRange> (Start/End inclusive) to list; next_marker gets
 * <NextMarker> ("" when none). */
RPL_MUST_CHECK rpl_err blob_xml_parse_page_list(const char *xml, size_t len, struct blob_page_list *list,
                                                char *next_marker, size_t markersz);
/* <EnumerationResults>: appends each <Blob> to list; next_marker as above. */
RPL_MUST_CHECK rpl_err blob_xml_parse_blob_list(const char *xml, size_t len, struct blob_list *list,
                                                char *next_marker, size_t markersz);
/* Appends [offset, offset+length), merging with the last range when adjacent; RPL_E_LIMIT at the cap. */
RPL_MUST_CHECK rpl_err blob_page_list_add(struct blob_page_list *list, uint64_t offset, uint64_t length);

/* A managed-identity token response (a flat JSON object): access_token, expires_on or expires_in
 * (strings or numbers), token_type Bearer when given. now anchors expires_in. */
RPL_MUST_CHECK rpl_err blob_token_parse(const char *json, size_t len, time_t now, struct blob_token *out);

/* An OAuth error response ({"error":"invalid_client","error_description":"AADSTS7000215: ...",
 * "error_codes":[7000215],...}): error and the first line of error_description ("" when absent);
 * nested members are skipped. RPL_E_BLOB_TOKEN when it is not a JSON object. */
RPL_MUST_CHECK rpl_err blob_token_parse_error(const char *json, size_t len, char *error, size_t errorsz,
                                              char *description, size_t descsz);

/* entra.c: the client assertion (RFC 7523, as Entra ID takes it) - a JWT signed RS256 with the
 * key in pem (PEM text holding the certificate and its RSA private key), header {"alg":"RS256",
 * "typ":"JWT","x5t":SHA-1,"x5t#S256":SHA-256 of the certificate's DER, base64url}, claims aud
 * (the token endpoint URL), iss and sub (client_id), jti, iat and nbf (now), exp (now + 600).
 * RPL_E_ENTRA_CREDENTIAL when pem does not hold a certificate with its matching RSA key;
 * RPL_E_LIMIT when the JWT does not fit outsz. */
#define BLOB_ENTRA_ASSERTION_LIFETIME_S 600
RPL_MUST_CHECK rpl_err blob_entra_assertion(const char *pem, size_t pem_len, const char *client_id,
                                            const char *audience, time_t now, const char *jti, char *out,
                                            size_t outsz);
/* base64url without padding of len bytes into out; false when it does not fit. */
bool blob_base64url(const unsigned char *in, size_t len, char *out, size_t outsz);
/* The form body of the client-credentials request (values percent-encoded): with the secret or,
 * when secret is NULL, the assertion. */
RPL_MUST_CHECK rpl_err blob_entra_form(const char *client_id, const char *secret, const char *assertion, char *out,
                                       size_t outsz);

/* blob_client.c: the proxy decision for a host (and the address it was pinned to, or NULL) by a
 * bypass list, shared by storage and the token endpoint. */
bool blob_proxy_bypassed(const char *bypass, const char *host, const char *addr);

/* ---- between the client (blob_client.c) and its operations (blob_ops.c) ---- */

#define REQ_MAX_HEADERS 12
#define REQ_HEADER_BYTES_MAX (64u * 1024u)  /* response headers of one try */
#define ERROR_BODY_MAX (64u * 1024u)        /* an error response's XML */
#define CLOCK_WARN_S (5 * 60)
#define CLOCK_REFUSE_S (15 * 60)
#define TOKEN_REFRESH_MARGIN_S 300

struct blob_req;
typedef rpl_err (*body_parse_fn)(struct blob_req *req, const char *body, size_t len);

struct blob_req {
  struct blob_client *client;
  struct blob_req *next;
  CURL *easy;
  struct curl_slist *curl_headers;
  const char *verb;
  char path[3200];
  char query[1400];
  struct {
    char name[40];
    char value[200];
  } extra[REQ_MAX_HEADERS];
  size_t nextra;
  char *copy_source;  /* x-ms-copy-source (a URL, maybe with a SAS: longer than extra[] takes), or NULL */
  const unsigned char *body;
  size_t body_len;
  char content_md5[32];
  bool head;
  /* Response body: into the caller's buffer (ranged GET, success only) or our own capped one. */
  void *sink;
  size_t sink_len, sink_used;
  char *resp;
  size_t resp_len, resp_cap, resp_limit;
  bool overflow;
  size_t header_bytes;
  body_parse_fn parse;
  void *parse_ctx;
  struct blob_reply reply;
  long retry_after_ms;
  time_t server_date;
  uint64_t due_ms;
  bool sequence_fenced;
  blob_done_fn done;
  void *ctx;
};

struct blob_client {
  struct blob_config cfg;
  char *zone_path, *ca_file, *proxy, *proxy_bypass, *identity_endpoint;
  struct netpath_route route;
  char pinned[NETPATH_ADDR_TEXT];
  CURLM *multi;
  atomic_bool woken;         /* blob_client_wakeup was called: the waiting poll returns */
  struct curl_slist *resolve;
  struct blob_req *queue_head, *queue_tail;
  size_t queued, in_flight;
  uint64_t completed;
  CURL **idle;
  size_t nidle;
  struct blob_req **flying; /* the requests in flight, in no order */
  struct blob_token token;
  bool have_token;
  struct blob_stats stats;
  bool skew_warned;
  uint64_t rng;
};

/* blob_client.c */
void blob_req_free(struct blob_req *req);
rpl_err blob_req_new(struct blob_client *c, const char *verb, const char *container, const char *blob,
                     struct blob_req **out);
rpl_err blob_req_query(struct blob_req *r, const char *name, const char *value);
rpl_err blob_req_header(struct blob_req *r, const char *name, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
void blob_common_options(struct blob_client *c, CURL *e);
void blob_enqueue(struct blob_client *c, struct blob_req *r);
rpl_err blob_transport_error(CURLcode cc, long connect_code);
/* blob_reply.c: curl's header and body callbacks (ud: the struct blob_req), the rpl_err of a final
 * non-2xx answer (its detail: status, code, message), and whether a status or a transport failure
 * may pass on a retry. */
size_t blob_reply_on_header(char *buf, size_t size, size_t nitems, void *ud);
size_t blob_reply_on_body(char *ptr, size_t size, size_t nmemb, void *ud);
rpl_err blob_status_error(const struct blob_req *r);
bool blob_retryable_status(long s);
bool blob_retryable_transport(CURLcode cc);

#endif
