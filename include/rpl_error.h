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
 *         300-399 storage / page blobs / network path, 400-499 agent, 500-599 appliance,
 *         600-619 appliance policies (retention, blob leases, point schedule, alerts, consistency groups),
 *         620-639 appliance groups (appliances sharing one storage account and its agents).
 */
#include <stddef.h>

#define RPL_MUST_CHECK __attribute__((warn_unused_result))

#define RPL_ERROR_LIST(X)                                                                        \
  X(RPL_OK,                         0, "success")                                                \
  X(RPL_E_NOMEM,                    1, "out of memory")                                          \
  X(RPL_E_INVALID_ARGUMENT,         2, "invalid argument")                                       \
  X(RPL_E_IO,                       3, "input/output error (its detail, or the log, says where)")  \
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
  X(RPL_E_PROTO_UNEXPECTED,       111, "frame not expected in this state of the session")      \
  X(RPL_E_REGKEY_FORMAT,          112, "not a registration key: copy the whole last line that 'replication-appliance init' printed (it starts with rk1-)") \
  X(RPL_E_REGKEY_CHECKSUM,        113, "registration key damaged (checksum mismatch): copy it again exactly") \
  X(RPL_E_TLS,                    114, "TLS failure (its detail says which step and what OpenSSL answered)") \
  X(RPL_E_TLS_PIN_MISMATCH,       115, "the appliance's certificate does not match the fingerprint in the registration key: check the address, or register again with a new key") \
  X(RPL_E_TLS_CERT,               116, "invalid certificate, key or certificate request")        \
                                                                                                 \
  X(RPL_E_CBT_NOT_BLOCK_DEVICE,   200, "not a block device: give a whole disk such as /dev/sdb") \
  X(RPL_E_CBT_PARTITION,          201, "this is a partition: track its whole disk (writes through partitions are covered)") \
  X(RPL_E_CBT_ZONED,              202, "zoned block devices are not supported by the tracker")   \
  X(RPL_E_CBT_NOT_TRACKED,        203, "the device is not tracked: start it with 'mobility-agent cbt start DEVICE'") \
  X(RPL_E_CBT_ALREADY_TRACKED,    204, "the device is already tracked (see 'mobility-agent cbt status')") \
  X(RPL_E_CBT_TOO_MANY_DEVICES,   205, "every tracker slot is in use: stop tracking a device first") \
  X(RPL_E_CBT_OWNED_ELSEWHERE,    206, "the device is tracked under another agent state directory: use that --state") \
  X(RPL_E_CBT_PINS_INCOMPATIBLE,  207, "the pinned tracker in bpffs has another layout (other agent version): stop its devices with that version") \
  X(RPL_E_CBT_NO_BPFFS,           208, "bpffs is not mounted and could not be mounted: mount -t bpf bpf /sys/fs/bpf") \
  X(RPL_E_CBT_LOAD,               209, "the eBPF tracker could not be loaded (see the message before this one)") \
  X(RPL_E_CBT_NOT_FLIPPED,        210, "no frozen generation to drain: call flip first")         \
  X(RPL_E_CBT_GENERATION_CHANGED, 211, "another flip happened since this one: nothing is lost, the set is reported again at the next flip") \
  X(RPL_E_CBT_ACK_STALE,          212, "a newer resync event happened after the acknowledged one: resync again and acknowledge the new count") \
  X(RPL_E_CBT_STATE_CORRUPT,      213, "a tracker state file is unreadable: remove it and start the device again (forces a resync)") \
  X(RPL_E_CBT_STUCK,              214, "tracker programs did not leave a generation in time (a kernel problem): resync required") \
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
  X(RPL_E_RETIRED_314,            314, "(retired: merged into 601 and 602, the blob's lease held by another or lost)") \
  X(RPL_E_BLOB_RANGE,             315, "invalid page range: offsets and lengths must be multiples of 512 and inside the blob (416)") \
  X(RPL_E_BLOB_THROTTLED,         316, "storage kept throttling or failing after every retry (503/500): lower the parallelism or check the account's limits") \
  X(RPL_E_BLOB_HTTP,              317, "storage answered with an unexpected HTTP status (its detail has the status and the service's error code)") \
  X(RPL_E_BLOB_CLOCK_SKEW,        318, "this machine's clock is more than 15 minutes off the storage service's: sync it with NTP (chrony/systemd-timesyncd)") \
  X(RPL_E_BLOB_PROXY,             319, "the HTTP proxy refused the connection or the credentials (407): check the proxy address, user and password") \
  X(RPL_E_BLOB_TOO_LARGE,         320, "response over its size cap (XML listing or headers): the server is not Azure Storage or is misbehaving") \
  X(RPL_E_ENTRA_UNREACHABLE,      321, "cannot reach the Entra ID token endpoint (network, proxy or TLS): check the authority host, the proxy and its bypass list, and that the CA file verifies it") \
  X(RPL_E_ENTRA_CLIENT,           322, "Entra ID refused the service principal (invalid client): check the tenant id, the client id and that the client secret or certificate is the one registered on the app and not expired") \
  X(RPL_E_ENTRA_CREDENTIAL,       323, "the service principal's credential file is unusable: a client secret file holds the secret on its first line; a certificate file is PEM with the certificate and its RSA private key") \
                                                                                                 \
  X(RPL_E_FREEZE,                 400, "could not freeze a filesystem (its detail says which and why); no recovery point was taken") \
  X(RPL_E_FREEZE_EXPIRED,         401, "the filesystems stayed frozen longer than the freeze limit and were thawed: this recovery point is not offered (raise the limit or lower the write load)") \
  X(RPL_E_FREEZE_HOOK,            402, "a freeze hook script failed or timed out (its detail says which and how)") \
  X(RPL_E_FREEZE_WATCHDOG,        403, "the freeze watchdog could not be started or died: the filesystems were thawed") \
  X(RPL_E_POINT_INCONSISTENT,     404, "the recovery point's cycle was not read consistently (a resync ran, or the freeze limit passed): the point is not offered") \
                                                                                                 \
  X(RPL_E_JOURNAL_CORRUPT,        500, "cache journal damaged before its last committed cycle (media error?): the disk needs a resync; move the journal directory aside to start over") \
  X(RPL_E_JOURNAL_FULL,           501, "cache journal full (configured cache size reached): back off until the uploader catches up, or raise the cache size") \
  X(RPL_E_CYCLE_ORDER,            502, "cycle out of order: the appliance takes only the cycle after the last committed one, or a restart of the open one") \
  X(RPL_E_JOURNAL_NO_CYCLE,       503, "no such cycle open in the journal: begin the cycle before appending or committing it") \
  X(RPL_E_CYCLE_TOTALS,           504, "cycle totals or digest do not match the extents received: the cycle is not committed (NACKed, so the agent sends it again)") \
  X(RPL_E_JOURNAL_RECORD,         505, "journal record malformed (magic, version, type, length over its cap, field or checksum): a torn write or not a journal file") \
  X(RPL_E_JOURNAL_NOT_COMMITTED,  506, "cycle not committed in the journal (never committed, or already trimmed)") \
  X(RPL_E_JOURNAL_FOREIGN,        507, "journal directory belongs to another disk (its segment header names a different disk id)") \
  X(RPL_E_JOURNAL_BROKEN,         508, "cache journal stopped after a write error it could not undo: fix the disk (space, I/O errors), then restart the appliance") \
  X(RPL_E_JOURNAL_NOT_APPLIED,    509, "cannot trim a cycle the replica has not applied yet") \
  X(RPL_E_JOURNAL_LOCKED,         510, "cache journal in use by another process: is another replication-appliance running on this state directory?") \
  X(RPL_E_CACHE_WAIT,             511, "the appliance's cache is full for now (uploads behind, the storage away, or the state file system short of space): the agent keeps its changes and the appliance asks for the cycle again after a pause; nothing to do unless it lasts (then see the storage and free space in 'replication-appliance status')") \
  X(RPL_E_CYCLE_TOO_BIG,          512, "the cycle is larger than the appliance's whole cache: the disk is sent next as a resync written straight into the storage, once the storage is reachable and the cache has drained (its newest state is inconsistent until that cycle ends; earlier recovery points stay valid); raise the cache size if it happens often") \
  X(RPL_E_REPLICA_HASH,           520, "journal extent's data does not match its xxh3-128 hash: nothing of the cycle was applied; the disk needs a resync") \
  X(RPL_E_EXTENT_RANGE,           521, "extent lies beyond the end of the disk or of its replica: the replica grows with the disk before such an extent lands") \
  X(RPL_E_REPLICA_SHRINK,         522, "disk is smaller than its replica image: shrinking a protected disk is not supported; re-protect the disk") \
  X(RPL_E_EXTENT_DECOMPRESS,      523, "extent's zstd payload does not decompress to its stated length: a received cycle is NACKed and sent again; a cached one is not applied and the disk needs a resync") \
  X(RPL_E_UNDO_CORRUPT,           524, "an undo file of a recovery point on file storage is damaged (its header is not ours): the points it serves cannot be restored; restore a newer point, and check the replica directory's disk") \
  X(RPL_E_CATALOG_CORRUPT,        530, "catalog database corrupt or not an SQLite database: restore it from a backup or move it aside") \
  X(RPL_E_CATALOG_BUSY,           531, "catalog database locked by another process: is another replication-appliance using this state directory?") \
  X(RPL_E_CATALOG_VERSION,        532, "catalog written by a newer replication-appliance (schema version unknown here): upgrade this program") \
  X(RPL_E_CATALOG_SQL,            533, "catalog database error (its detail, or the log, says what SQLite answered)") \
  X(RPL_E_CATALOG_KEY_USED,       534, "registration key already used: each key registers one agent; issue a new key") \
  X(RPL_E_CATALOG_KEY_UNKNOWN,    535, "registration key unknown to this appliance: check it was copied whole, from this appliance's init") \
  X(RPL_E_CATALOG_KEY_EXPIRED,    536, "registration key expired (keys last 24 hours unless init --key-ttl set another lifetime): issue a new one with 'replication-appliance init' or the page's Regenerate") \
  X(RPL_E_CATALOG_KEY_REVOKED,    537, "registration key revoked: a newer key was issued after it, which revokes the unused ones before it; register with the newest key") \
  X(RPL_E_AGENT_CERT_REPLACED,    538, "this agent certificate was replaced by a renewed one: the agent uses the newest in its state directory (restore it from there), or register the agent again") \
                                                                                                 \
  X(RPL_E_RETIRED_550,            550, "(retired: merged into 502, cycle out of order)") \
  X(RPL_E_CYCLE_MISMATCH,         551, "frame belongs to another disk or cycle than the one in progress") \
  X(RPL_E_RETIRED_552,            552, "(retired: merged into 504, cycle totals do not match)") \
  X(RPL_E_RETIRED_553,            553, "(retired: merged into 521, extent beyond the end)") \
  X(RPL_E_RETIRED_554,            554, "(retired: merged into 523, extent does not decompress)") \
  X(RPL_E_UPLOAD_BEHIND,          560, "the page blob's sequence number is behind the cycles this appliance applied: the blob was replaced or rolled back; protect the disk again (resync)") \
  X(RPL_E_UPLOAD_BLOB,            561, "the disk's page blob is not what the appliance wrote (not a page blob, or smaller than the disk): move it aside or use another container") \
  X(RPL_E_RESTORE_POINT,          562, "no such recovery point for this disk: see the points with 'replication-appliance status'") \
  X(RPL_E_RESTORE_NO_IMAGE,       563, "the recovery point has no stored image (no snapshot, or its copy was pruned): restore another point") \
  X(RPL_E_FAILOVER_NO_IMAGE,      564, "the recovery point's image is gone (pruned by retention, or never made): fail over another point ('replication-appliance points' lists them; without --point the newest is taken)") \
  X(RPL_E_FAILOVER_BLOB_STORAGE,  565, "--to-blob makes a page blob and needs Azure storage: with file: storage write a VHD with --to FILE.vhd, then upload it with 'az storage blob upload --type page'") \
  X(RPL_E_FAILOVER_EXISTS,        566, "the failover target exists already: a failover never overwrites a file or blob; give another name or remove the old one") \
  X(RPL_E_FAILOVER_COPY,          567, "the storage did not complete the copy of the point (its detail says what it answered): run failover again; the incomplete copy was deleted") \
  X(RPL_E_DISK_UNKNOWN,           568, "no such disk on this appliance: 'replication-appliance status' lists the disks and their ids") \
  X(RPL_E_WEB_START,              570, "cannot start the configuration manager's HTTPS server (address in use, or the appliance's certificate unusable): give another --web ADDR:PORT, or --web off") \
  X(RPL_E_WEB_ROOT,               571, "the configuration manager's page files (index.html, app.js, style.css) were not found: give --web-root DIR or set RPL_WEB_ROOT") \
  X(RPL_E_WEB_PASSWORD,           572, "admin password unusable: it must be 8 to 256 characters on the first line of the file given with --admin-password-file") \
  X(RPL_E_WEB_AUTH_FILE,          573, "the configuration manager's login file in the state directory is malformed: run init again with --admin-password-file") \
  X(RPL_E_RETENTION_POLICY,       600, "retention policy invalid: write it as all=1h,hourly=24h,daily=7d (each key at most once, a whole number with s, m, h or d, or 0 to turn a tier off)") \
  X(RPL_E_LEASE_HELD,             601, "another appliance holds the lease on this disk's page blob: stop it (or wait for its lease to expire after it died); this appliance retries by itself") \
  X(RPL_E_LEASE_LOST,             602, "this appliance lost the lease on the disk's page blob (it expired or was broken): writes stopped; it acquires the lease again and resumes from the blob's sequence number") \
  X(RPL_E_LEASE_DURATION,         603, "lease duration invalid: Azure takes 15 to 60 seconds") \
  X(RPL_E_POINT_SCHEDULE,         604, "recovery-point schedule invalid: write it as crash=5m,app=1h (each key at most once; a whole number with s, m, h or d of at least 30s, or off)") \
  X(RPL_E_ALERT_THRESHOLDS,       605, "alert thresholds invalid: write them as rpo-warn=auto,rpo-crit=auto,point-age=off,agent-away=90s,cache=80 (each key at most once; durations a whole number with s, m, h or d; cache a percentage 1-100)") \
  X(RPL_E_WEBHOOK_URL,            606, "webhook unusable: give an https:// URL without user or password (at most 4 webhooks), and a readable PEM file for --webhook-ca") \
  X(RPL_E_WEBHOOK_DELIVERY,       607, "a webhook did not take an alert (unreachable, its certificate not issued by the pinned CA, or an answer other than 2xx): the alert stays queued and is sent again with backoff") \
  X(RPL_E_GROUP_UNKNOWN,          608, "no consistency group of that name on this appliance: see 'replication-appliance group list'") \
  X(RPL_E_GROUP_NAME,             609, "group name invalid: 1 to 64 characters of letters, digits, '.', '_' and '-'") \
  X(RPL_E_GROUP_EXISTS,           610, "a consistency group of that name exists already: pick another name, or delete that group first") \
  X(RPL_E_GROUP_MEMBER,           611, "the disk cannot join the group: it is unknown to this appliance, unprotected, named twice, or already a member of another group (a disk is in at most one group): see 'replication-appliance status' and 'group list'") \
  X(RPL_E_GROUP_EMPTY,            612, "the group names no disk: give at least one disk id (a group whose disks were all unprotected is removed with 'group delete')") \
  X(RPL_E_GROUP_AGENT,            613, "a member disk's agent is not connected, or too old for group points (it does not state the group-point capability): start or upgrade that agent, then try again") \
  X(RPL_E_GROUP_POINT_FAILED,     614, "the group point was not made: a member was late or could not freeze before the deadline; every member thawed and none kept a part of it; it is tried again at the next schedule tick (the events say which member)") \
  X(RPL_E_GROUP_BUSY,             615, "a point of this group is already past its freeze: wait for it to end, then ask again") \
  X(RPL_E_GROUP_APPLIANCE,        616, "the appliance is too old for consistency-group points (it does not state the group-point capability): upgrade it") \
  X(RPL_E_MEMBERS_EXIST,          620, "the storage holds an appliance group already: join it with 'replication-appliance init --join --group-secret-file FILE' and the group's secret file") \
  X(RPL_E_MEMBERS_NONE,           621, "the storage holds no appliance group to join: make it first with 'replication-appliance init --group-secret-file FILE' on one appliance, with the same storage account and container") \
  X(RPL_E_MEMBERS_SECRET,         622, "the appliance group's record does not open with this secret: give the secret file the group was made with (a record changed by someone without the secret fails the same way)") \
  X(RPL_E_MEMBERS_IDENTITY,       623, "this state directory has an authority of its own, and the agents registered with it would no longer be accepted: join the group from a new state directory") \
  X(RPL_E_MEMBERS_SECRET_FILE,    624, "the group secret file is unusable: it must be a regular file, readable by its owner only (mode 0600 or stricter), holding 32 to 4096 bytes (e.g. 'openssl rand -base64 48 > FILE')") \
  X(RPL_E_MEMBERS_STORAGE,        625, "appliance groups share Azure storage (a storage account and container): a file: storage cannot hold a group") \
  X(RPL_E_MEMBERS_RECORD,         626, "an appliance group record in the storage is damaged or of an unknown version: see the log for which one") \
  X(RPL_E_MEMBERS_ELSEWHERE,      627, "another member of the appliance group holds this agent's disks (their page blobs' leases): the agent moves to the group's next member") \
  X(RPL_E_REPLAY_INCOMPLETE,      628, "the agent no longer knows every block of the cycles the storage is missing (it restarted, or kept more than its limit): the whole disk is sent again instead (a resync)")

typedef enum rpl_err {
#define RPL_ERROR_ENUM(name, value, msg) name = value,
  RPL_ERROR_LIST(RPL_ERROR_ENUM)
#undef RPL_ERROR_ENUM
} rpl_err;

/*
 * The detail of an error: one channel, kept per thread.
 * A function that fails for a reason its code alone does not tell (which file, which line of a
 * zone file, what the storage answered) records the reason with rpl_fail(), which returns the
 * code: `return rpl_fail(RPL_E_IO, "cannot open %s: %s", path, strerror(errno));`. The caller
 * that reports the failure reads it back with rpl_detail(err) or rpl_describe(). A detail belongs
 * to the code it was recorded with and to the last rpl_fail on this thread: asked for another
 * code, rpl_detail answers "" (a stale detail is never shown with an unrelated error).
 * Details longer than RPL_DETAIL_MAX - 1 bytes are cut.
 */
#define RPL_DETAIL_MAX 1024
RPL_MUST_CHECK rpl_err rpl_fail(rpl_err err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The detail recorded with err on this thread, or "" (never NULL; valid until the next rpl_fail). */
const char *rpl_detail(rpl_err err);
/* Forgets this thread's detail. */
void rpl_detail_clear(void);
/* "message: detail", or the message alone when err has no detail; written into buf (size > 0),
 * which is returned. */
const char *rpl_describe(rpl_err err, char *buf, size_t size);

/* The message for err; never NULL (unknown values get a generic text). Static storage. */
const char *rpl_strerror(rpl_err err);
/* The symbolic name ("RPL_E_PROTO_CRC") for err; never NULL. Static storage. */
const char *rpl_errname(rpl_err err);

#endif
