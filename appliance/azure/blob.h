/* blob.h - the Azure page-blob REST client: connection strings, Shared Key / SAS / managed-identity /
 * Entra ID service-principal authorization, page-blob operations on one libcurl multi handle with retries and sequence-number
 * fencing, over a private-endpoint path checked before the first connection (netpath.h). */
#ifndef BLOB_H
#define BLOB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "netpath.h"
#include "rpl_error.h"

/* The one REST version we speak (needs >= 2020-10-02 for paged Get Page Ranges). */
#define BLOB_API_VERSION "2021-08-06"
#define BLOB_PAGE_SIZE 512u
#define BLOB_MAX_PUT_PAGE (4u * 1024u * 1024u)
#define BLOB_DEFAULT_IN_FLIGHT 16u
#define BLOB_DEFAULT_IDENTITY_ENDPOINT "http://169.254.169.254/metadata/identity/oauth2/token"
#define BLOB_SAS_MAX 2048
#define BLOB_ENDPOINT_MAX 512

enum blob_auth {
  BLOB_AUTH_SHARED_KEY, /* AccountKey= */
  BLOB_AUTH_SAS,        /* SharedAccessSignature= */
  BLOB_AUTH_BEARER,     /* neither: a managed-identity token from the identity endpoint */
  /* An Entra ID service principal (TenantId=, ClientId=), client-credentials flow: */
  BLOB_AUTH_CLIENT_SECRET, /* ClientSecretFile= */
  BLOB_AUTH_CLIENT_CERT,   /* ClientCertificateFile=: an assertion signed with the certificate's key */
};
/* Whether requests carry "Authorization: Bearer" (a token fetched before use). */
static inline bool blob_auth_is_bearer(enum blob_auth auth) { return auth >= BLOB_AUTH_BEARER; }

#define BLOB_DEFAULT_AUTHORITY "https://login.microsoftonline.com"
#define BLOB_ENTRA_SCOPE "https://storage.azure.com/.default"
#define BLOB_ENTRA_ID_MAX 128
#define BLOB_ENTRA_PATH_MAX 1024

/* A storage account as a connection string describes it. */
struct blob_account {
  char name[64];
  char endpoint[BLOB_ENDPOINT_MAX]; /* "https://host[:port][/path]", no trailing slash */
  bool https;
  char host[NETPATH_NAME_MAX];
  unsigned port;
  /* "" for virtual-host style (ACCOUNT.blob.core.windows.net); "/ACCOUNT" when the account is in
   * the path (emulator: UseDevelopmentStorage, an IP or localhost host, or a BlobEndpoint path). */
  char base_path[128];
  enum blob_auth auth;
  unsigned char key[64];
  size_t key_len;
  char sas[BLOB_SAS_MAX]; /* without the leading '?' */
  /* Service principal (BLOB_AUTH_CLIENT_*): only the paths of its credential files are held here;
   * the secret and the key are read from them for each token request and wiped after. */
  char tenant[BLOB_ENTRA_ID_MAX];       /* TenantId=: a GUID or a domain name */
  char client_id[BLOB_ENTRA_ID_MAX];    /* ClientId=: the application (client) id */
  char credential_file[BLOB_ENTRA_PATH_MAX]; /* ClientSecretFile= or ClientCertificateFile=, absolute */
  char authority[BLOB_ENDPOINT_MAX];    /* AuthorityHost=, "https://host[:port]"; default BLOB_DEFAULT_AUTHORITY */
};

/* Parses a connection string ("Key=Value;..."; keys case-insensitive). On error returns
 * RPL_E_BLOB_CONNSTR (or RPL_E_BLOB_SAS) with its detail (rpl_detail) saying which part is wrong;
 * never echoes secrets. */
RPL_MUST_CHECK rpl_err blob_connstr_parse(const char *text, struct blob_account *out);
/* Same for $AZURE_STORAGE_CONNECTION_STRING; RPL_E_NOT_FOUND when it is unset or empty. */
RPL_MUST_CHECK rpl_err blob_connstr_from_env(struct blob_account *out);
/* How the account authorizes, in words: "account key", "SAS token", "managed identity",
 * "service principal (client secret)", "service principal (certificate)". */
const char *blob_auth_name(enum blob_auth auth);
/* Checks a SAS token: query syntax, percent-encoding, sv and sig present, only known parameters. */
RPL_MUST_CHECK rpl_err blob_sas_validate(const char *sas);

/* Shared Key: a header as sent. */
struct blob_header {
  const char *name;
  const char *value;
};
/* Builds the Shared Key string-to-sign (Blob service, version >= 2009-09-19) for a request with
 * the given verb, headers (any case, any order; the standard ones are looked up by name, x-ms-*
 * canonicalized), account, URL path as sent (percent-encoded) and raw query (may be NULL).
 * RPL_E_LIMIT when it does not fit outsz. */
RPL_MUST_CHECK rpl_err blob_sharedkey_string_to_sign(const char *verb, const struct blob_header *headers,
                                                     size_t nheaders, const char *account,
                                                     const char *url_path, const char *query,
                                                     char *out, size_t outsz);
/* base64(HMAC-SHA256(key, string_to_sign)) into sig (>= 45 bytes). */
RPL_MUST_CHECK rpl_err blob_sharedkey_sign(const unsigned char *key, size_t key_len,
                                           const char *string_to_sign, char *sig, size_t sigsz);

/* The integrity check each Put Page carries, verified by the storage before it writes. TLS already
 * protects every byte in transit (an AEAD tag per record) and the appliance verified the data's
 * xxh3-128 when it arrived, so a check adds only the storage's own verification after TLS, and MD5
 * is most of the client's CPU per byte (CRC-64 a fraction of it). */
enum blob_upload_check {
  BLOB_CHECK_MD5 = 0, /* Content-MD5 */
  BLOB_CHECK_NONE,
  BLOB_CHECK_CRC64,   /* x-ms-content-crc64 (crc64.h); Azurite in strict mode answers it 500 */
};

struct blob_config {
  struct blob_account account;
  unsigned max_in_flight;          /* requests in flight on the multi handle; 0 = 16 */
  bool require_private_endpoint;   /* refuse public addresses (default true) */
  const char *private_dns_zone;    /* hosts-format file standing in for the private DNS zone, or NULL */
  const char *ca_file;             /* PEM bundle to verify the storage certificate with, or NULL */
  const char *proxy;               /* "http://[user:password@]host:port", or NULL for a direct path */
  const char *proxy_bypass;        /* comma-separated hosts/domains/addresses that skip the proxy */
  const char *identity_endpoint;   /* managed-identity token endpoint (IMDS form); NULL = default */
  unsigned max_tries;              /* per request, first try included; 0 = 10 */
  unsigned retry_base_ms;          /* first backoff; 0 = 800 */
  unsigned retry_cap_ms;           /* backoff ceiling; 0 = 60000 */
  unsigned request_timeout_s;      /* whole request; 0 = 300 */
  uint64_t pagelist_slice;         /* Get Page Ranges asks in x-ms-range slices of this size; 0 = 4 GiB */
  unsigned list_max_results;       /* List Blobs page size (maxresults); 0 = the service's 5000 */
  enum blob_upload_check upload_check; /* what Put Page carries for the storage to verify (default MD5) */
};
/* Defaults: require_private_endpoint on, everything else zero/NULL (meaning the defaults above). */
void blob_config_init(struct blob_config *cfg);

/* A client belongs to one thread: its multi handle, queue and callbacks run in the caller's thread
 * (no thread per request). */
struct blob_client;

/* Resolves and checks the path to the account (netpath.h) before any connection; pins the checked
 * address for every transfer. On RPL_E_BLOB_PUBLIC_ADDRESS / RPL_E_BLOB_RESOLVE /
 * RPL_E_BLOB_ZONE_FILE no socket has been opened. Its detail (rpl_detail) gives the reason with the
 * fix. */
RPL_MUST_CHECK rpl_err blob_client_open(const struct blob_config *cfg, struct blob_client **out);
void blob_client_close(struct blob_client *client);
/* Opens one connection along the configured path (the pinned address, or the proxy when one
 * applies) and completes the TLS handshake, verifying the certificate against the account's public
 * name; sends no request. Errors: RPL_E_BLOB_CONNECT (TCP), RPL_E_BLOB_PROXY, RPL_E_BLOB_TLS. */
RPL_MUST_CHECK rpl_err blob_client_probe(struct blob_client *client);
/* Whether requests to the account go through the configured proxy (false when none or bypassed). */
bool blob_client_uses_proxy(const struct blob_client *client);
/* How the account host resolved when the client was opened. */
const struct netpath_route *blob_client_route(const struct blob_client *client);

struct blob_stats {
  uint64_t requests;     /* tries sent */
  uint64_t retries;      /* tries after the first */
  uint64_t connections;  /* new connections opened (the rest reused one) */
  uint64_t bytes_sent;   /* request bodies */
  uint64_t bytes_received;
  int64_t clock_skew_s;  /* server Date minus our clock, last seen */
  bool clock_seen;
};
void blob_client_stats(const struct blob_client *client, struct blob_stats *out);

/* What a request's final try got back. Strings are "" when absent; numbers -1. */
struct blob_reply {
  long status;             /* HTTP status; 0 when no response came */
  char error_code[64];     /* x-ms-error-code / <Code> */
  char message[256];       /* <Message> (first line) or the transport error */
  char request_id[64];
  char etag[80];
  char snapshot[64];
  char lease_id[64];
  char lease_state[16];
  char blob_type[16];
  int64_t sequence_number;
  int64_t content_length;  /* x-ms-blob-content-length for page blobs, else Content-Length */
  char copy_status[16];    /* x-ms-copy-status: pending, success, aborted, failed */
  char copy_id[64];
  unsigned tries;
};

/* Fencing and lease for writes. The writes of cycle n carry sequence_lt = n
 * (x-ms-if-sequence-number-lt: n); 0 means no fencing (no cycle is numbered 0), so a
 * zero-initialised condition is "none". lease_id NULL = no lease. */
struct blob_write_cond {
  int64_t sequence_lt;
  const char *lease_id;
};

typedef void (*blob_done_fn)(void *ctx, rpl_err err, const struct blob_reply *reply);

/* Queues a Put Page update of len bytes (512-aligned, <= 4 MiB) at offset, with Content-MD5; data
 * must stay valid until done runs (from blob_client_poll/drain or a synchronous call). A 412 from
 * the sequence-number condition completes with RPL_E_BLOB_FENCED ("stale write fenced"). */
RPL_MUST_CHECK rpl_err blob_put_page_async(struct blob_client *client, const char *container,
                                           const char *blob, uint64_t offset, const void *data,
                                           size_t len, const struct blob_write_cond *cond,
                                           blob_done_fn done, void *ctx);
/* Queues a Put Page clear of [offset, offset+len) (512-aligned, any length). */
RPL_MUST_CHECK rpl_err blob_clear_pages_async(struct blob_client *client, const char *container,
                                              const char *blob, uint64_t offset, uint64_t len,
                                              const struct blob_write_cond *cond, blob_done_fn done,
                                              void *ctx);
/* Runs transfers for up to timeout_ms (returns earlier when some request completed), calling the
 * done callbacks of finished requests. */
RPL_MUST_CHECK rpl_err blob_client_poll(struct blob_client *client, int timeout_ms);
/* Makes a blob_client_poll waiting in another thread return now (the one call of this API that
 * may come from a thread other than the client's). */
void blob_client_wakeup(struct blob_client *client);
/* Runs until no request is queued or in flight. */
RPL_MUST_CHECK rpl_err blob_client_drain(struct blob_client *client);
/* Requests queued, waiting to retry or in flight. */
size_t blob_client_pending(const struct blob_client *client);

/* Synchronous operations: each runs the multi handle until it completes (queued asynchronous
 * requests progress meanwhile and their callbacks may run). reply may be NULL. */
RPL_MUST_CHECK rpl_err blob_container_create(struct blob_client *client, const char *container,
                                             struct blob_reply *reply);
RPL_MUST_CHECK rpl_err blob_container_properties(struct blob_client *client, const char *container,
                                                 struct blob_reply *reply);
/* Creates a page blob of size bytes (512-aligned); sequence >= 0 sets its sequence number;
 * if_none_match refuses to overwrite an existing blob (RPL_E_BLOB_EXISTS). */
RPL_MUST_CHECK rpl_err blob_create_page_blob(struct blob_client *client, const char *container,
                                             const char *blob, uint64_t size, int64_t sequence,
                                             bool if_none_match, struct blob_reply *reply);
/* Writes a whole block blob of len bytes (<= BLOB_MAX_SMALL_BLOCK_BLOB: records, not data) in one
 * Put Blob. if_match (an ETag) replaces only that version (RPL_E_BLOB_CONDITION when it changed);
 * if_none_match creates only (RPL_E_BLOB_EXISTS). reply->etag is the new version's. */
#define BLOB_MAX_SMALL_BLOCK_BLOB (256u << 10)
RPL_MUST_CHECK rpl_err blob_put_block_blob(struct blob_client *client, const char *container, const char *blob,
                                           const void *data, size_t len, const char *if_match, bool if_none_match,
                                           struct blob_reply *reply);
/* snapshot NULL = the base blob. */
RPL_MUST_CHECK rpl_err blob_get_properties(struct blob_client *client, const char *container,
                                           const char *blob, const char *snapshot,
                                           struct blob_reply *reply);
/* Reads exactly len bytes at offset into buf. */
RPL_MUST_CHECK rpl_err blob_read(struct blob_client *client, const char *container, const char *blob,
                                 const char *snapshot, uint64_t offset, void *buf, size_t len,
                                 struct blob_reply *reply);

struct blob_range {
  uint64_t offset;
  uint64_t length;
};
struct blob_page_list {
  struct blob_range *ranges; /* written pages, ascending, adjacent ones merged */
  size_t count, cap;
};
void blob_page_list_free(struct blob_page_list *list);
/* The written ranges of [offset, offset+len) (len 0 = to the blob's end), following NextMarker and
 * asking in pagelist_slice slices. */
RPL_MUST_CHECK rpl_err blob_get_page_ranges(struct blob_client *client, const char *container,
                                            const char *blob, const char *snapshot, uint64_t offset,
                                            uint64_t len, struct blob_page_list *out,
                                            struct blob_reply *reply);
/* Takes a snapshot; its id is in reply->snapshot (so reply is required). */
RPL_MUST_CHECK rpl_err blob_snapshot(struct blob_client *client, const char *container, const char *blob,
                                     struct blob_reply *reply);
/* Deletes one snapshot (snapshot != NULL) or the blob with all its snapshots. */
RPL_MUST_CHECK rpl_err blob_delete(struct blob_client *client, const char *container, const char *blob,
                                   const char *snapshot, struct blob_reply *reply);

enum blob_sequence_action { BLOB_SEQUENCE_UPDATE, BLOB_SEQUENCE_MAX, BLOB_SEQUENCE_INCREMENT };
/* Set Blob Properties: the sequence number (value ignored for increment). */
RPL_MUST_CHECK rpl_err blob_set_sequence_number(struct blob_client *client, const char *container,
                                                const char *blob, enum blob_sequence_action action,
                                                int64_t value, const char *lease_id,
                                                struct blob_reply *reply);
/* Set Blob Properties: resize to size (512-aligned; shrinking drops the pages above). */
RPL_MUST_CHECK rpl_err blob_resize(struct blob_client *client, const char *container, const char *blob,
                                   uint64_t size, const char *lease_id, struct blob_reply *reply);

enum blob_lease_action { BLOB_LEASE_ACQUIRE, BLOB_LEASE_RENEW, BLOB_LEASE_RELEASE, BLOB_LEASE_BREAK };
/* Acquire: duration_s -1 (infinite) or 15-60, lease_id = proposed id or NULL; the id granted is in
 * reply->lease_id. Renew/release: lease_id = the held lease. Break: breaks at once. */
RPL_MUST_CHECK rpl_err blob_lease(struct blob_client *client, const char *container, const char *blob,
                                  enum blob_lease_action action, int duration_s, const char *lease_id,
                                  struct blob_reply *reply);

struct blob_item {
  char name[1025];
  int64_t content_length;
  int64_t sequence_number;
  char blob_type[16];
  char lease_state[16];
  char snapshot[64];  /* "" for the base blob (blob_list_snapshots lists both) */
  char metadata[512]; /* "key=value\n" lines (blob_list_snapshots); lines that do not fit are left out */
};
struct blob_list {
  struct blob_item *items;
  size_t count, cap;
};
void blob_list_free(struct blob_list *list);
/* Lists the blobs of container whose names start with prefix (NULL = all), following NextMarker. */
RPL_MUST_CHECK rpl_err blob_list_blobs(struct blob_client *client, const char *container,
                                       const char *prefix, struct blob_list *out,
                                       struct blob_reply *reply);

/* Lists the blob named blob and its snapshots (include=snapshots,metadata), oldest snapshot first
 * and the base blob last, following NextMarker. */
RPL_MUST_CHECK rpl_err blob_list_snapshots(struct blob_client *client, const char *container, const char *blob,
                                           struct blob_list *out, struct blob_reply *reply);
/* Snapshot Blob with metadata (x-ms-meta-KEY: VALUE for each of n pairs; keys are C identifiers,
 * values printable ASCII) and, when lease_id is set, only if that lease is held. */
RPL_MUST_CHECK rpl_err blob_snapshot_meta(struct blob_client *client, const char *container, const char *blob,
                                          const struct blob_header *meta, size_t n, const char *lease_id,
                                          struct blob_reply *reply);

/* Set Blob Metadata: replaces the blob's metadata with the n pairs (keys C identifiers, values
 * printable ASCII, as blob_snapshot_meta). */
RPL_MUST_CHECK rpl_err blob_set_metadata(struct blob_client *client, const char *container, const char *blob,
                                         const struct blob_header *meta, size_t n, struct blob_reply *reply);
/* The URL another request of this account names blob (snapshot NULL = the base blob) by, with the
 * SAS token when the account authorizes by one (a copy source must carry its own authorization);
 * RPL_E_LIMIT when it does not fit outsz. */
RPL_MUST_CHECK rpl_err blob_url(const struct blob_account *account, const char *container, const char *blob,
                                const char *snapshot, bool with_sas, char *out, size_t outsz);
/* Copy Blob: starts a server-side copy of source_url (blob_url) into blob, which takes the n
 * metadata pairs; if_none_match refuses an existing blob (RPL_E_BLOB_EXISTS). reply->copy_status
 * says whether it is done ("success") or still "pending" (poll blob_get_properties). */
RPL_MUST_CHECK rpl_err blob_copy_start(struct blob_client *client, const char *container, const char *blob,
                                       const char *source_url, const struct blob_header *meta, size_t n,
                                       bool if_none_match, struct blob_reply *reply);

/* A managed-identity access token. */
struct blob_token {
  char access_token[8192];
  time_t expires_on;
};
/* Fetches a token for https://storage.azure.com/ from an IMDS-form endpoint (GET with
 * "Metadata: true"), retrying 404/429/5xx and network errors with backoff (0.5 s doubling, at
 * most 10 s; it blocks the caller meanwhile: the client calls it once per token lifetime). */
RPL_MUST_CHECK rpl_err blob_token_fetch(const char *endpoint, unsigned max_tries, struct blob_token *out);

/* Entra ID (client-credentials flow, entra.c). The token endpoint's URL:
 * AUTHORITY/TENANT/oauth2/v2.0/token. */
RPL_MUST_CHECK rpl_err blob_entra_token_url(const struct blob_account *account, char *out, size_t outsz);
/* A service-principal token for BLOB_ENTRA_SCOPE, from the process-wide cache while it has more
 * than the refresh margin left, else fetched (POST to the token endpoint, reached by cfg's path
 * rules: the private DNS zone file when it lists the authority host, else the system resolver; the
 * proxy unless the bypass list names the host; TLS verified with cfg's CA file). Transport
 * failures, 429 and 5xx are retried up to max_tries (0 = 5) with backoff. Errors, by step:
 * RPL_E_ENTRA_CREDENTIAL (the secret or certificate file), RPL_E_ENTRA_UNREACHABLE (the endpoint),
 * RPL_E_ENTRA_CLIENT (refused: invalid client, tenant or credential), RPL_E_BLOB_TOKEN (an
 * unusable answer). *fetched says whether a request was made. */
RPL_MUST_CHECK rpl_err blob_entra_token(const struct blob_config *cfg, unsigned max_tries, struct blob_token *out,
                                        bool *fetched);
/* Drops the cached token of cfg's service principal (storage refused it). */
void blob_entra_forget(const struct blob_config *cfg);
/* Checks a credential file as init records it: a secret file's first line; a certificate file's
 * certificate and RSA key, and that they belong together. The detail names the file and what is
 * wrong, never the content. */
RPL_MUST_CHECK rpl_err blob_entra_check_credential(enum blob_auth auth, const char *path);

#endif
