/* rpl_error.h - the project's one error enum: stable values, a message for each, never reused. */
#ifndef RPL_ERROR_H
#define RPL_ERROR_H

/*
 * Rules (curl/zstd style):
 *  - values are stable and append-only: a new error gets the next free value in its range;
 *    a retired error keeps its value and its line, marked "(retired)";
 *  - every value has a one-line message saying what is wrong (and, where one exists, the fix);
 *  - fallible functions return rpl_err and are marked RPL_MUST_CHECK.
 * Ranges: 0-99 general, 100-199 wire protocol, 200-299 change-block tracker,
 *         300-399 storage / page blobs / network path, 400-499 agent, 500-599 appliance.
 */
#define RPL_MUST_CHECK __attribute__((warn_unused_result))

#define RPL_ERROR_LIST(X)                                                                        \
  X(RPL_OK,                         0, "success")                                                \
  X(RPL_E_NOMEM,                    1, "out of memory")                                          \
  X(RPL_E_INVALID_ARGUMENT,         2, "invalid argument")                                       \
  X(RPL_E_IO,                       3, "input/output error (see the log line before this one)")  \
  X(RPL_E_AGAIN,                    4, "more input is needed")                                   \
  X(RPL_E_LIMIT,                    5, "a hard size limit was reached")                          \
  X(RPL_E_NOT_FOUND,                6, "not found")                                              \
  X(RPL_E_EXISTS,                   7, "already exists")                                         \
  X(RPL_E_PERMISSION,               8, "permission denied: run as root or grant the capability") \
  X(RPL_E_CONFIG,                   9, "invalid configuration")                                  \
  X(RPL_E_USAGE,                   10, "invalid command line (see --help)")                      \
  X(RPL_E_TIMEOUT,                 11, "timed out")                                              \
  X(RPL_E_INTERNAL,                12, "internal error (a bug): please report it with the log")  \
  X(RPL_E_NO_DAEMON,               13, "the daemon is not running (no control socket in the state directory)") \
  X(RPL_E_CANCELLED,               14, "cancelled")                                              \
  X(RPL_E_CHECKSUM,                15, "data checksum mismatch")                                 \
  X(RPL_E_UNSUPPORTED,             16, "not supported on this system")                           \
                                                                                                 \
  X(RPL_E_PROTO_MAGIC,            100, "frame has a bad magic number (not our protocol, or stream out of sync)") \
  X(RPL_E_PROTO_VERSION,          101, "frame format version not supported")                    \
  X(RPL_E_PROTO_TYPE,             102, "unknown frame type")                                     \
  X(RPL_E_PROTO_TOO_LONG,         103, "frame payload length over the 16 MiB cap")               \
  X(RPL_E_PROTO_TRUNCATED,        104, "stream ended in the middle of a frame")                  \
  X(RPL_E_PROTO_CRC,              105, "frame CRC32C mismatch (corrupted in transit)")           \
  X(RPL_E_PROTO_FIELD,            106, "frame field out of range")                              \
  X(RPL_E_PROTO_TRAILING,         107, "frame payload has trailing bytes after its last field")  \
  X(RPL_E_PROTO_SHORT,            108, "frame payload ends inside a field")                      \
  X(RPL_E_PROTO_FLAGS,            109, "frame has reserved flag bits set")                       \
  X(RPL_E_PROTO_NO_COMMON_VERSION,110, "no protocol version in common with the peer: upgrade the older side") \
  X(RPL_E_PROTO_UNEXPECTED,       111, "frame not expected in this state of the session") \
                                                                                                 \
  X(RPL_E_BLOB_CONNSTR,           300, "malformed storage connection string: use DefaultEndpointsProtocol=https;AccountName=...;AccountKey=... (or SharedAccessSignature=..., BlobEndpoint=...)") \
  X(RPL_E_BLOB_SAS,               301, "malformed SAS token: it must be the query string the portal or az CLI gives (sv=...&sig=...)") \
  X(RPL_E_BLOB_XML,               302, "storage service answered with XML we cannot parse (not Azure Storage, or a proxy page)") \
  X(RPL_E_BLOB_TOKEN,             303, "managed-identity token endpoint answered with an unusable token: check the identity endpoint and that the identity is assigned") \
  X(RPL_E_BLOB_ZONE_FILE,         304, "malformed private DNS zone file: each line must be 'ADDRESS NAME...' (hosts format), # for comments") \
  X(RPL_E_BLOB_RESOLVE,           305, "cannot resolve the storage account's host name: check DNS or the private DNS zone file") \
  X(RPL_E_BLOB_PUBLIC_ADDRESS,    306, "storage host resolves to a public address: link the private DNS zone privatelink.blob.core.windows.net to the network and approve the private endpoint connection") \
  X(RPL_E_BLOB_CONNECT,           307, "cannot connect to the storage endpoint (network error): check routing, firewall and the private endpoint") \
  X(RPL_E_BLOB_TLS,               308, "TLS verification of the storage endpoint failed: give the CA that signed its certificate with --ca-file, or fix the name it is reached by") \
  X(RPL_E_BLOB_AUTH,              309, "storage refused our authorization (403): check the account key, SAS (permissions, expiry) or the identity's role assignment") \
  X(RPL_E_BLOB_NOT_FOUND,         310, "blob or container not found (404)") \
  X(RPL_E_BLOB_EXISTS,            311, "blob or container already exists (409)") \
  X(RPL_E_BLOB_FENCED,            312, "stale write fenced: the blob's sequence number shows a newer cycle is committed (412)") \
  X(RPL_E_BLOB_CONDITION,         313, "a condition of the request was not met (412): lease, ETag or sequence number") \
  X(RPL_E_BLOB_LEASE,             314, "lease conflict: the blob is leased by someone else, or our lease was lost or broken") \
  X(RPL_E_BLOB_RANGE,             315, "invalid page range: offsets and lengths must be multiples of 512 and inside the blob (416)") \
  X(RPL_E_BLOB_THROTTLED,         316, "storage kept throttling or failing after every retry (503/500): lower the parallelism or check the account's limits") \
  X(RPL_E_BLOB_HTTP,              317, "storage answered with an unexpected HTTP status (see the log line with its error code)") \
  X(RPL_E_BLOB_CLOCK_SKEW,        318, "this machine's clock is more than 15 minutes off the storage service's: sync it with NTP (chrony/systemd-timesyncd)") \
  X(RPL_E_BLOB_PROXY,             319, "the HTTP proxy refused the connection or the credentials (407): check the proxy address, user and password") \
  X(RPL_E_BLOB_TOO_LARGE,         320, "response over its size cap (XML listing or headers): the server is not Azure Storage or is misbehaving")

typedef enum rpl_err {
#define RPL_ERROR_ENUM(name, value, msg) name = value,
  RPL_ERROR_LIST(RPL_ERROR_ENUM)
#undef RPL_ERROR_ENUM
} rpl_err;

/* The message for err; never NULL (unknown values get a generic text). Static storage. */
const char *rpl_strerror(rpl_err err);
/* The symbolic name ("RPL_E_PROTO_CRC") for err; never NULL. Static storage. */
const char *rpl_errname(rpl_err err);

#endif
