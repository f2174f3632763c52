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
  X(RPL_E_PROTO_UNEXPECTED,       111, "frame not expected in this state of the session")        \
                                                                                                 \
  X(RPL_E_JOURNAL_CORRUPT,        500, "cache journal damaged before its last committed cycle (media error?): the disk needs a resync; move the journal directory aside to start over") \
  X(RPL_E_JOURNAL_FULL,           501, "cache journal full (configured cache size reached): back off until the uploader catches up, or raise the cache size") \
  X(RPL_E_JOURNAL_CYCLE_ORDER,    502, "cycle out of order: the journal takes only the cycle after its last committed one, or a restart of the open one") \
  X(RPL_E_JOURNAL_NO_CYCLE,       503, "no such cycle open in the journal: begin the cycle before appending or committing it") \
  X(RPL_E_JOURNAL_TOTALS,         504, "cycle totals or digest differ from the extents journaled: the cycle is not committed (NACK it so the agent resends)") \
  X(RPL_E_JOURNAL_RECORD,         505, "journal record malformed (magic, version, type, length over its cap, field or checksum): a torn write or not a journal file") \
  X(RPL_E_JOURNAL_NOT_COMMITTED,  506, "cycle not committed in the journal (never committed, or already trimmed)") \
  X(RPL_E_JOURNAL_FOREIGN,        507, "journal directory belongs to another disk (its segment header names a different disk id)") \
  X(RPL_E_JOURNAL_BROKEN,         508, "cache journal stopped after a write error it could not undo: fix the disk (space, I/O errors), then restart the appliance") \
  X(RPL_E_JOURNAL_NOT_APPLIED,    509, "cannot trim a cycle the replica has not applied yet") \
  X(RPL_E_JOURNAL_LOCKED,         510, "cache journal in use by another process: is another replication-appliance running on this state directory?") \
  X(RPL_E_REPLICA_HASH,           520, "journal extent's data does not match its xxh3-128 hash: nothing of the cycle was applied; the disk needs a resync") \
  X(RPL_E_REPLICA_RANGE,          521, "extent lies beyond the end of the replica image: resize the replica to the disk's new size first") \
  X(RPL_E_REPLICA_SHRINK,         522, "disk is smaller than its replica image: shrinking a protected disk is not supported; re-protect the disk") \
  X(RPL_E_REPLICA_DECOMPRESS,     523, "extent's zstd payload does not decompress to its stated length: the cycle is not applied; the disk needs a resync") \
  X(RPL_E_CATALOG_CORRUPT,        530, "catalog database corrupt or not an SQLite database: restore it from a backup or move it aside") \
  X(RPL_E_CATALOG_BUSY,           531, "catalog database locked by another process: is another replication-appliance using this state directory?") \
  X(RPL_E_CATALOG_VERSION,        532, "catalog written by a newer replication-appliance (schema version unknown here): upgrade this program") \
  X(RPL_E_CATALOG_SQL,            533, "catalog database error (see the log line before this one)") \
  X(RPL_E_CATALOG_KEY_USED,       534, "registration key already used: each key registers one agent; issue a new key") \
  X(RPL_E_CATALOG_KEY_UNKNOWN,    535, "registration key unknown to this appliance: check it was copied whole, from this appliance's init")

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
