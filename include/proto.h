/* proto.h - the agent<->appliance wire protocol: fixed frame header, messages, streaming decoder. */
#ifndef PROTO_H
#define PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

/*
 * A frame is a 16-byte header followed by `length` payload bytes, all integers little-endian:
 *
 *   offset 0  u32 magic    PROTO_MAGIC ("ARPL" on the wire)
 *          4  u8  version  PROTO_FRAME_VERSION (frame layout; message versions are negotiated)
 *          5  u8  type     enum proto_type
 *          6  u16 flags    must be 0 (reserved)
 *          8  u32 length   payload bytes, <= PROTO_MAX_PAYLOAD
 *         12  u32 crc      CRC32C (Castagnoli) over header bytes 0..11 followed by the payload
 *
 * The length is checked against the cap before any buffer is sized for the payload. Payload fields
 * are read only through exact-size getters; a payload must end exactly at its last field.
 */
#define PROTO_MAGIC          0x4c505241u /* bytes 'A' 'R' 'P' 'L' */
#define PROTO_FRAME_VERSION  1
#define PROTO_HEADER_SIZE    16
#define PROTO_MAX_PAYLOAD    (16u << 20)
/* Message-protocol versions this build speaks. 2: points without hooks (cycle kind 3), the
 * consistencies APP_CONSISTENT and PRECOPY, CYCLE_END's freeze_ms. A peer of version 1 is refused at
 * HELLO with RPL_E_PROTO_VERSION: upgrade the agents with the appliance. Also CYCLE_START's group. */
#define PROTO_VERSION_MIN    2
#define PROTO_VERSION_MAX    2
#define PROTO_MAX_STRING     4096   /* hostnames, error messages */
#define PROTO_MAX_PEM        16384  /* certificates and CSRs */
#define PROTO_MAX_EXTENT     (8u << 20) /* raw bytes one EXTENT may carry */
#define PROTO_HASH_SIZE      16     /* xxh3-128, big-endian canonical form */
#define PROTO_ID_SIZE        16     /* agent and disk ids (UUIDs) */
#define PROTO_SECRET_SIZE    32     /* registration one-time secret */

enum proto_type {
  PROTO_HELLO = 1,
  PROTO_REGISTER = 2,
  PROTO_REGISTERED = 3,
  PROTO_DISK = 4,
  PROTO_CYCLE_START = 5,
  PROTO_EXTENT = 6,
  PROTO_CYCLE_END = 7,
  PROTO_ACK = 8,
  PROTO_NACK = 9,
  PROTO_HASHES = 10,
  PROTO_NEED = 11,
  PROTO_HEARTBEAT = 12,
  PROTO_ERROR = 13,
  PROTO_POINT_REQUEST = 14,
  PROTO_POINT = 15,
  PROTO_READINESS = 16,
  PROTO_RENEW = 17,
  PROTO_RENEWED = 18,
  PROTO_UNPROTECT = 19,
  PROTO_UNPROTECT_REQUEST = 20,
  PROTO_GROUP_POINT_REQUEST = 21,
  PROTO_GROUP_FREEZE = 22,
  PROTO_GROUP_FROZEN = 23,
  PROTO_GROUP_THAW = 24,
  PROTO_STORED = 25,
  PROTO_MEMBERS = 26,
  PROTO_TYPE_MAX = PROTO_MEMBERS
};

/* PLAIN: the tracker's changed blocks (or, when the agent's tracker requires a resync, a chunk-hash
 * comparison with HASHES/NEED). RECOVERY_POINT: the same, read consistently, with the agent's
 * application hooks around the freeze. RESYNC: the whole disk, all-zero chunks as ZERO records (the
 * initial sync against an empty replica). POINT_NO_HOOKS: a recovery point whose freeze runs no hooks
 * (the schedule's frequent crash points). REPLAY (only to an agent that stated PROTO_CAP_REPLAY): the
 * storage holds the disk up to cycle n - 1 of this CYCLE_START's n (another appliance took it over
 * from the storage's own state): the agent sends again every block of its acknowledged cycles after
 * n - 1 that it was not told were stored, with what changed since, or NACKs RPL_E_REPLAY_INCOMPLETE
 * when it no longer knows them all (then a RESYNC follows). */
enum proto_cycle_kind {
  PROTO_CYCLE_PLAIN = 0,
  PROTO_CYCLE_RECOVERY_POINT = 1,
  PROTO_CYCLE_RESYNC = 2,
  PROTO_CYCLE_POINT_NO_HOOKS = 3,
  PROTO_CYCLE_REPLAY = 4,
};
static inline bool proto_cycle_is_point(uint8_t kind)
{
  return kind == PROTO_CYCLE_RECOVERY_POINT || kind == PROTO_CYCLE_POINT_NO_HOOKS;
}
enum proto_codec { PROTO_CODEC_NONE = 0, PROTO_CODEC_ZSTD = 1, PROTO_CODEC_ZERO = 2 };
/* What a cycle's data is consistent with, as the agent states it in CYCLE_END. */
enum proto_consistency {
  PROTO_FUZZY = 0,              /* blocks may have been rewritten while read */
  PROTO_CRASH_CONSISTENT = 1,   /* no block of the set was written during its read */
  PROTO_FS_CONSISTENT = 2,      /* the disk's filesystems frozen at one instant, its data read as of it */
  PROTO_APP_CONSISTENT = 3,     /* the same, and the application hooks ran around the freeze */
  PROTO_PRECOPY = 4,            /* a point's catch-up: too much was dirty to freeze; read fuzzy, ask again */
};

/* "fuzzy", "crash-consistent", "filesystem-consistent", "application-consistent", "precopy". */
const char *proto_consistency_name(uint8_t consistency);

/* Capabilities an agent states in HELLO. */
#define PROTO_CAP_ZSTD       (1ull << 0)
#define PROTO_CAP_CBT_EBPF   (1ull << 1)
#define PROTO_CAP_FREEZE     (1ull << 2)
/* The appliance states it in its HELLO: it takes READINESS (an older one would break the stream). */
#define PROTO_CAP_READINESS  (1ull << 3)
/* The appliance states it in its HELLO: it renews agent certificates (RENEW, RENEWED). */
#define PROTO_CAP_RENEW      (1ull << 4)
/* The agent states it in its HELLO: it sends RENEW right after the appliance's HELLO (which must
 * have stated PROTO_CAP_RENEW), and waits for RENEWED or ERROR before anything else. */
#define PROTO_CAP_RENEWING   (1ull << 5)
/* The appliance states it in its HELLO: a DISK again within the session, for a disk already
 * attached, gives its new size (the replica grows; a smaller one is refused). An older appliance
 * ignores a second DISK, so the agent tells it a new size on a new session instead. */
#define PROTO_CAP_DISK_RESIZE (1ull << 6)
/* The appliance states it in its HELLO: it takes UNPROTECT. */
#define PROTO_CAP_UNPROTECT  (1ull << 7)
/* The appliance states it in its HELLO: it takes UNPROTECT with PROTO_UNPROTECT_DELETE_REPLICA (an
 * older one refuses any flag as a malformed frame, so the agent never sends it one). */
#define PROTO_CAP_UNPROTECT_DELETE (1ull << 8)
/* The agent states it in its HELLO: it takes UNPROTECT_REQUEST (an older one ends the session on an
 * unexpected frame, so the appliance never sends it one). */
#define PROTO_CAP_UNPROTECT_REQUEST (1ull << 9)
/* Both state it in their HELLO. The agent: it takes GROUP_FREEZE and GROUP_THAW (a member of a
 * consistency group across servers). The appliance: it takes GROUP_POINT_REQUEST. A peer without it
 * is never sent those frames (an older one ends the session on an unexpected frame). */
#define PROTO_CAP_GROUP_POINT (1ull << 10)
/* Agent: it keeps the blocks of acknowledged cycles until STORED says the storage holds them, and
 * answers a REPLAY cycle. Appliance: it sends STORED (so the agent can forget them) and may ask for a
 * REPLAY after taking a disk over. Neither is sent to a peer that did not state it. */
#define PROTO_CAP_REPLAY     (1ull << 11)
/* Agent: it takes MEMBERS (the addresses of its appliance group's other members). */
#define PROTO_CAP_MEMBERS    (1ull << 12)
/* Agent: it serves plain cycles (PLAIN, RESYNC, REPLAY) of different disks at once: a CYCLE_START may
 * come while other disks' cycles are open, their frames interleave (each frame names its disk and
 * cycle), and it reads every frame the appliance sends at any time (so STORED, MEMBERS and
 * UNPROTECT_REQUEST need not wait for a moment with no cycle open). Point cycles still come alone.
 * An agent without it is sent one cycle at a time. */
#define PROTO_CAP_CYCLES     (1ull << 13)

/* Strings and byte arrays in decoded messages point into the frame's payload (not NUL-terminated
 * unless noted); they live as long as the buffer the frame was decoded from. */
struct proto_bytes {
  const uint8_t *ptr;
  uint32_t len;
};

struct proto_hello {
  uint8_t agent_id[PROTO_ID_SIZE];
  uint16_t version_min, version_max;
  uint64_t capabilities;
  struct proto_bytes hostname; /* <= PROTO_MAX_STRING */
};

struct proto_register {
  uint8_t secret[PROTO_SECRET_SIZE];
  struct proto_bytes hostname; /* <= PROTO_MAX_STRING */
  struct proto_bytes csr_pem;  /* <= PROTO_MAX_PEM */
};

struct proto_registered {
  uint8_t agent_id[PROTO_ID_SIZE];
  struct proto_bytes cert_pem; /* <= PROTO_MAX_PEM */
};

/* Agent -> appliance, on an authenticated session: a new key's request, to replace the agent's
 * certificate before it expires. The appliance answers RENEWED, or ERROR. */
struct proto_renew {
  struct proto_bytes csr_pem;  /* <= PROTO_MAX_PEM */
};

struct proto_renewed {
  struct proto_bytes cert_pem; /* <= PROTO_MAX_PEM; the same agent id, a new key */
};

struct proto_disk {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t size_bytes;         /* multiple of the sector size */
  uint32_t sector_size;        /* 512 or 4096 */
  struct proto_bytes name;     /* <= PROTO_MAX_STRING, e.g. the device path */
};

struct proto_cycle_start {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;              /* >= 1 */
  uint8_t kind;                /* enum proto_cycle_kind */
  uint16_t group;              /* a point's cycles of one instant, sent back to back, this one first:
                                  1..PROTO_MAX_GROUP (1 for a single disk and for other kinds) */
};

struct proto_extent {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
  uint64_t offset;             /* bytes, multiple of 512 */
  uint32_t length;             /* raw bytes, multiple of 512, 1..PROTO_MAX_EXTENT */
  uint8_t codec;               /* enum proto_codec */
  uint8_t hash[PROTO_HASH_SIZE]; /* xxh3-128 of the raw (decompressed) bytes */
  struct proto_bytes payload;  /* NONE: length bytes; ZSTD: the compressed bytes; ZERO: empty */
};

struct proto_cycle_end {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
  uint64_t extents;            /* EXTENT frames in the cycle */
  uint64_t raw_bytes;          /* sum of their lengths */
  uint64_t payload_bytes;      /* sum of their payload sizes */
  uint8_t digest[PROTO_HASH_SIZE]; /* xxh3-128 over the extents' hashes, in order sent */
  uint8_t consistency;         /* enum proto_consistency */
  uint32_t freeze_ms;          /* a point: how long its filesystems stayed frozen (0: none was) */
};

struct proto_ack {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
};

/* STORED (appliance -> agent, only to one that stated PROTO_CAP_REPLAY): the disk's storage (the
 * replica, the page blob with its sequence number) holds every cycle up to cycle. */
struct proto_stored {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
};

struct proto_nack {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint64_t cycle;
  uint32_t reason;             /* rpl_err */
  struct proto_bytes message;  /* <= PROTO_MAX_STRING */
};

/* UNPROTECT (agent -> appliance, only to one that stated PROTO_CAP_UNPROTECT): the disk is no longer
 * protected; its cycles end; its replica, points and catalog rows stay (its points restorable),
 * unless flags has PROTO_UNPROTECT_DELETE_REPLICA (only to one that stated PROTO_CAP_UNPROTECT_DELETE):
 * then the replica with its point images, the disk's cache and its catalog rows are deleted. */
#define PROTO_UNPROTECT_DELETE_REPLICA 0x01
struct proto_unprotect {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint8_t flags;               /* PROTO_UNPROTECT_*; other bits are refused (RPL_E_PROTO_FIELD) */
};

/* UNPROTECT_REQUEST (appliance -> agent, only to one that stated PROTO_CAP_UNPROTECT_REQUEST): the
 * configuration manager asks the agent to unprotect the disk, as `mobility-agent unprotect` would; the
 * agent, between cycles, stops tracking it, forgets it and sends UNPROTECT with the same flags. The
 * same layout and checks as UNPROTECT. */
struct proto_unprotect_request {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint8_t flags;               /* PROTO_UNPROTECT_*; other bits are refused (RPL_E_PROTO_FIELD) */
};

struct proto_hashes {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint32_t chunk_size;         /* power of two, 4 KiB .. 64 MiB */
  uint64_t first_chunk;
  uint32_t count;              /* hashes in this frame, >= 1 */
  const uint8_t *hashes;       /* count * PROTO_HASH_SIZE bytes */
};

struct proto_need_range { uint64_t first_chunk; uint32_t count; };

/* Resync by comparison: during a cycle the agent sends HASHES for every chunk of the disk; once the
 * appliance has them all it answers with one NEED listing the chunks whose replica differs (count 0:
 * none), and the agent sends those chunks as the cycle's extents. */
struct proto_need {
  uint8_t disk_id[PROTO_ID_SIZE];
  uint32_t chunk_size;
  uint32_t count;              /* ranges in this frame; 0: the replica already matches */
  const uint8_t *ranges;       /* read with proto_need_range_at() */
};

struct proto_heartbeat {
  uint64_t sequence;
  uint64_t time_ns;            /* sender's CLOCK_REALTIME */
  uint64_t dirty_bytes;        /* agent: changed bytes not yet sent (a large backlog asks for a cycle now) */
};

struct proto_error {
  uint32_t code;               /* rpl_err */
  struct proto_bytes message;  /* <= PROTO_MAX_STRING */
};

/* Agent -> appliance: take a recovery point of these disks together (a consistency group). The
 * appliance answers with CYCLE_START(kind RECOVERY_POINT) for each, then POINT. */
struct proto_point_request {
  uint64_t request;            /* the agent's id for this request, echoed in POINT */
  uint32_t count;              /* disks, 1..PROTO_MAX_GROUP */
  const uint8_t *disk_ids;     /* count * PROTO_ID_SIZE bytes */
};
#define PROTO_MAX_GROUP 256

/* Appliance -> agent: the outcome of a POINT_REQUEST. */
struct proto_point {
  uint64_t request;
  uint32_t status;             /* rpl_err: RPL_OK when the point was committed */
  uint8_t consistency;         /* enum proto_consistency of the point */
  struct proto_bytes point_id; /* <= PROTO_MAX_STRING; empty unless status is RPL_OK */
};

/* Consistency groups across servers (a group names disks of several agents; the appliance keeps
 * the groups). A group point is two-phase, driven by the appliance: every member catches up (plain
 * cycles); GROUP_FREEZE to every member's agent, which freezes the filesystems of those disks and
 * answers GROUP_FROZEN; when all are frozen before the deadline the appliance sends each member's
 * CYCLE_START(RECOVERY_POINT or POINT_NO_HOOKS) and the agent flips the held freeze's disks, thaws,
 * and ends the cycles as for any point; else GROUP_THAW, and the agent thaws. The agent's freeze
 * watchdog thaws by itself at limit_ms (the appliance gone, a frame lost). */
#define PROTO_MAX_GROUP_NAME 64 /* [A-Za-z0-9._-], 1..64 characters */

/* Agent -> appliance (only to one that stated PROTO_CAP_GROUP_POINT): a point of the named group
 * now (mobility-agent checkpoint --group). The appliance answers POINT with the same request id. */
struct proto_group_point_request {
  uint64_t request;
  struct proto_bytes name;     /* 1..PROTO_MAX_GROUP_NAME characters of [A-Za-z0-9._-] */
};

/* Appliance -> agent (only to one that stated PROTO_CAP_GROUP_POINT): freeze these disks'
 * filesystems and hold them frozen, at most limit_ms, for group point attempt `attempt`. */
#define PROTO_GROUP_FREEZE_MAX_MS 60000
struct proto_group_freeze {
  uint64_t attempt;            /* >= 1, the appliance's id of this attempt */
  uint32_t limit_ms;           /* 1..PROTO_GROUP_FREEZE_MAX_MS: the agent thaws by itself then */
  uint8_t hooks;               /* 0 or 1: the application hooks run around the freeze */
  uint32_t count;              /* disks, 1..PROTO_MAX_GROUP */
  const uint8_t *disk_ids;     /* count * PROTO_ID_SIZE bytes */
};

/* Agent -> appliance: the answer to GROUP_FREEZE. status RPL_OK: frozen (or no filesystem to
 * freeze: filesystems 0), held until CYCLE_START or GROUP_THAW; else why not (nothing held). */
struct proto_group_frozen {
  uint64_t attempt;            /* >= 1, GROUP_FREEZE's */
  uint32_t status;             /* rpl_err */
  uint64_t frozen_at_us;       /* agent's CLOCK_REALTIME when the freeze began; 0 when nothing froze */
  uint32_t filesystems;        /* filesystems frozen */
  struct proto_bytes message;  /* <= PROTO_MAX_STRING; why not, when status is not RPL_OK */
};

/* MEMBERS (appliance -> agent, only to one that stated PROTO_CAP_MEMBERS): the addresses (HOST:PORT)
 * of the members of the appliance's group, itself included, as the group's records list them. */
#define PROTO_MAX_MEMBERS     8
#define PROTO_MAX_ADDRESS     255
struct proto_members {
  uint32_t count;              /* 1..PROTO_MAX_MEMBERS, checked before the addresses are taken */
  struct proto_bytes address[PROTO_MAX_MEMBERS]; /* 1..PROTO_MAX_ADDRESS bytes each */
};

/* Appliance -> agent: attempt `attempt` is given up: thaw (nothing is flipped). */
struct proto_group_thaw {
  uint64_t attempt;            /* >= 1 */
};

/* Whether name is a valid group name (PROTO_MAX_GROUP_NAME). */
bool proto_group_name_ok(const char *name, size_t len);

/* Agent -> appliance: the source's boot readiness for Azure (mobility-agent check), at connection,
 * after a disk is protected, and daily. problems: one "RESULT NAME: detail" line per check that
 * did not pass. */
struct proto_readiness {
  uint64_t time_ns;            /* when it was checked, agent's CLOCK_REALTIME */
  uint8_t generation;          /* Azure VM generation 1 or 2; 0 unknown */
  uint8_t checks, failed, warned; /* failed + warned <= checks */
  struct proto_bytes problems; /* <= PROTO_MAX_STRING */
};

/* A frame found in a buffer; payload points into that buffer. */
struct proto_frame {
  uint8_t type;
  uint16_t flags;
  uint32_t length;
  const uint8_t *payload;
  /* An EXTENT whose bytes were read past the decoder (proto_split_finish): payload holds its fields
   * only and its bytes are here, in the receiver's buffer. NULL for every other frame. */
  const uint8_t *extent_data;
};

/* ---- encoding ----------------------------------------------------------------------------- */

/* A growable output buffer with a hard cap. The caller owns it: zero-initialise, set cap (0 means
 * PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD), and release data with proto_buf_free(). */
struct proto_buf {
  uint8_t *data;
  size_t len, alloc, cap;
};
void proto_buf_free(struct proto_buf *b);
void proto_buf_reset(struct proto_buf *b); /* len = 0, memory kept */

/* Each appends one complete frame to out. On error out is unchanged. */
RPL_MUST_CHECK rpl_err proto_encode_hello(struct proto_buf *out, const struct proto_hello *m);
RPL_MUST_CHECK rpl_err proto_encode_register(struct proto_buf *out, const struct proto_register *m);
RPL_MUST_CHECK rpl_err proto_encode_registered(struct proto_buf *out, const struct proto_registered *m);
RPL_MUST_CHECK rpl_err proto_encode_renew(struct proto_buf *out, const struct proto_renew *m);
RPL_MUST_CHECK rpl_err proto_encode_renewed(struct proto_buf *out, const struct proto_renewed *m);
RPL_MUST_CHECK rpl_err proto_encode_unprotect(struct proto_buf *out, const struct proto_unprotect *m);
RPL_MUST_CHECK rpl_err proto_encode_unprotect_request(struct proto_buf *out, const struct proto_unprotect_request *m);
RPL_MUST_CHECK rpl_err proto_encode_disk(struct proto_buf *out, const struct proto_disk *m);
RPL_MUST_CHECK rpl_err proto_encode_cycle_start(struct proto_buf *out, const struct proto_cycle_start *m);
RPL_MUST_CHECK rpl_err proto_encode_extent(struct proto_buf *out, const struct proto_extent *m);
RPL_MUST_CHECK rpl_err proto_encode_cycle_end(struct proto_buf *out, const struct proto_cycle_end *m);
RPL_MUST_CHECK rpl_err proto_encode_ack(struct proto_buf *out, const struct proto_ack *m);
RPL_MUST_CHECK rpl_err proto_encode_nack(struct proto_buf *out, const struct proto_nack *m);
RPL_MUST_CHECK rpl_err proto_encode_stored(struct proto_buf *out, const struct proto_stored *m);
RPL_MUST_CHECK rpl_err proto_encode_members(struct proto_buf *out, const struct proto_members *m);
RPL_MUST_CHECK rpl_err proto_encode_hashes(struct proto_buf *out, const struct proto_hashes *m);
RPL_MUST_CHECK rpl_err proto_encode_need(struct proto_buf *out, const struct proto_need *m,
                                         const struct proto_need_range *ranges);
RPL_MUST_CHECK rpl_err proto_encode_heartbeat(struct proto_buf *out, const struct proto_heartbeat *m);
RPL_MUST_CHECK rpl_err proto_encode_error(struct proto_buf *out, const struct proto_error *m);
RPL_MUST_CHECK rpl_err proto_encode_point_request(struct proto_buf *out, const struct proto_point_request *m);
RPL_MUST_CHECK rpl_err proto_encode_point(struct proto_buf *out, const struct proto_point *m);
RPL_MUST_CHECK rpl_err proto_encode_readiness(struct proto_buf *out, const struct proto_readiness *m);
RPL_MUST_CHECK rpl_err proto_encode_group_point_request(struct proto_buf *out,
                                                        const struct proto_group_point_request *m);
RPL_MUST_CHECK rpl_err proto_encode_group_freeze(struct proto_buf *out, const struct proto_group_freeze *m);
RPL_MUST_CHECK rpl_err proto_encode_group_frozen(struct proto_buf *out, const struct proto_group_frozen *m);
RPL_MUST_CHECK rpl_err proto_encode_group_thaw(struct proto_buf *out, const struct proto_group_thaw *m);

/* Zero-copy EXTENT: writes the frame header and EXTENT's fixed fields into prefix and returns
 * their size in *prefix_len; the frame on the wire is prefix followed by m->payload, which is not
 * copied. The CRC covers both. */
#define PROTO_EXTENT_PREFIX_SIZE (PROTO_HEADER_SIZE + 16 + 8 + 8 + 4 + 1 + 16)
RPL_MUST_CHECK rpl_err proto_encode_extent_prefix(uint8_t prefix[PROTO_EXTENT_PREFIX_SIZE],
                                                  const struct proto_extent *m);

/* ---- decoding ----------------------------------------------------------------------------- */

/* Parses one frame at the start of buf. RPL_OK: *frame is set and *used is its size.
 * RPL_E_AGAIN: buf holds a valid prefix of a frame and *used is the total size needed (0 if the
 * header is not yet complete). Any other value: the stream is broken (bad magic, version, type,
 * flags, length over the cap, CRC). The header is validated before the CRC is computed. */
RPL_MUST_CHECK rpl_err proto_frame_parse(const uint8_t *buf, size_t len, struct proto_frame *frame,
                                         size_t *used);

/* Each checks frame->type and decodes the payload; out's pointers point into frame->payload. */
RPL_MUST_CHECK rpl_err proto_decode_hello(const struct proto_frame *f, struct proto_hello *out);
RPL_MUST_CHECK rpl_err proto_decode_register(const struct proto_frame *f, struct proto_register *out);
RPL_MUST_CHECK rpl_err proto_decode_registered(const struct proto_frame *f, struct proto_registered *out);
RPL_MUST_CHECK rpl_err proto_decode_renew(const struct proto_frame *f, struct proto_renew *out);
RPL_MUST_CHECK rpl_err proto_decode_renewed(const struct proto_frame *f, struct proto_renewed *out);
RPL_MUST_CHECK rpl_err proto_decode_unprotect(const struct proto_frame *f, struct proto_unprotect *out);
RPL_MUST_CHECK rpl_err proto_decode_unprotect_request(const struct proto_frame *f, struct proto_unprotect_request *out);
RPL_MUST_CHECK rpl_err proto_decode_disk(const struct proto_frame *f, struct proto_disk *out);
RPL_MUST_CHECK rpl_err proto_decode_cycle_start(const struct proto_frame *f, struct proto_cycle_start *out);
RPL_MUST_CHECK rpl_err proto_decode_extent(const struct proto_frame *f, struct proto_extent *out);
RPL_MUST_CHECK rpl_err proto_decode_cycle_end(const struct proto_frame *f, struct proto_cycle_end *out);
RPL_MUST_CHECK rpl_err proto_decode_ack(const struct proto_frame *f, struct proto_ack *out);
RPL_MUST_CHECK rpl_err proto_decode_nack(const struct proto_frame *f, struct proto_nack *out);
RPL_MUST_CHECK rpl_err proto_decode_stored(const struct proto_frame *f, struct proto_stored *out);
RPL_MUST_CHECK rpl_err proto_decode_members(const struct proto_frame *f, struct proto_members *out);
RPL_MUST_CHECK rpl_err proto_decode_hashes(const struct proto_frame *f, struct proto_hashes *out);
RPL_MUST_CHECK rpl_err proto_decode_need(const struct proto_frame *f, struct proto_need *out);
RPL_MUST_CHECK rpl_err proto_decode_heartbeat(const struct proto_frame *f, struct proto_heartbeat *out);
RPL_MUST_CHECK rpl_err proto_decode_error(const struct proto_frame *f, struct proto_error *out);
RPL_MUST_CHECK rpl_err proto_decode_point_request(const struct proto_frame *f, struct proto_point_request *out);
RPL_MUST_CHECK rpl_err proto_decode_point(const struct proto_frame *f, struct proto_point *out);
RPL_MUST_CHECK rpl_err proto_decode_readiness(const struct proto_frame *f, struct proto_readiness *out);
RPL_MUST_CHECK rpl_err proto_decode_group_point_request(const struct proto_frame *f,
                                                        struct proto_group_point_request *out);
RPL_MUST_CHECK rpl_err proto_decode_group_freeze(const struct proto_frame *f, struct proto_group_freeze *out);
RPL_MUST_CHECK rpl_err proto_decode_group_frozen(const struct proto_frame *f, struct proto_group_frozen *out);
RPL_MUST_CHECK rpl_err proto_decode_group_thaw(const struct proto_frame *f, struct proto_group_thaw *out);

/* The i-th range of a decoded NEED (i < count). */
struct proto_need_range proto_need_range_at(const struct proto_need *m, uint32_t i);

/* Decodes any frame by type and discards the result: RPL_OK if its payload is well formed. */
RPL_MUST_CHECK rpl_err proto_validate(const struct proto_frame *f);

/* A streaming decoder: accepts the byte stream split anywhere, yields whole frames. Owns its
 * buffer, which grows to at most PROTO_HEADER_SIZE + PROTO_MAX_PAYLOAD and only after the header
 * announcing that size has been validated. Frames returned by next() stay valid until the next
 * call to feed(), reserve(), commit(), next() or free(). */
struct proto_decoder {
  uint8_t *buf;
  size_t start, end, alloc;
  uint32_t max_payload; /* a frame announcing more breaks the stream (RPL_E_PROTO_TOO_LONG); 0: PROTO_MAX_PAYLOAD */
  rpl_err broken; /* sticky: once the stream is broken, every call returns this */
};
/* The largest payload the next frames may announce (0: PROTO_MAX_PAYLOAD): a peer that has not
 * authenticated gets a few KiB, so that its header alone sizes no large buffer. */
void proto_decoder_set_limit(struct proto_decoder *d, uint32_t max_payload);
void proto_decoder_init(struct proto_decoder *d);
void proto_decoder_free(struct proto_decoder *d);
/* Copies len bytes into the decoder. */
RPL_MUST_CHECK rpl_err proto_decoder_feed(struct proto_decoder *d, const void *data, size_t len);
/* For reading straight from a socket: *space gets room for at least *avail (>= 1) bytes; write up
 * to that many and call commit(n). The room offered is what the next frame needs, at most 256 KiB
 * beyond a frame's end. */
RPL_MUST_CHECK rpl_err proto_decoder_reserve(struct proto_decoder *d, uint8_t **space, size_t *avail);
void proto_decoder_commit(struct proto_decoder *d, size_t n);
/* RPL_OK: *frame is the next frame (CRC checked). RPL_E_AGAIN: feed more. Else: broken stream. */
RPL_MUST_CHECK rpl_err proto_decoder_next(struct proto_decoder *d, struct proto_frame *frame);
/* At end of stream: RPL_OK if no partial frame is buffered, else RPL_E_PROTO_TRUNCATED. */
RPL_MUST_CHECK rpl_err proto_decoder_finish(const struct proto_decoder *d);

/* An EXTENT's raw bytes read straight to where they go (the receiver's write buffer), not through
 * the decoder's buffer and a copy: peek at the frame being buffered, split it off into a
 * destination, read the rest of its bytes there, then finish (the CRC check). */
struct proto_split {
  uint8_t prefix[PROTO_EXTENT_PREFIX_SIZE]; /* the frame's header and fields */
  struct proto_extent m;                     /* decoded; payload.ptr is the destination once split */
  uint32_t have;                             /* bytes of m.payload in the destination so far */
};
/* RPL_OK: the frame being buffered is a well-formed EXTENT of codec NONE with at least min_length
 * bytes whose header and fields are in; x->m holds them (payload.ptr NULL, payload.len its length).
 * RPL_E_AGAIN: it is not such a frame, or not yet known (the frame is then received whole, and any
 * fault in it reported as usual). Else the stream is broken. Consumes nothing. */
RPL_MUST_CHECK rpl_err proto_decoder_peek_extent(struct proto_decoder *d, uint32_t min_length, struct proto_split *x);
/* After a peek's RPL_OK: takes the frame out of the decoder, copying its bytes buffered so far to dst
 * (x->m.payload.len bytes, the caller's, which must outlive the frame); the caller reads the rest
 * into dst + x->have. */
void proto_decoder_split_extent(struct proto_decoder *d, struct proto_split *x, uint8_t *dst);
/* Once x->have == x->m.payload.len: RPL_OK and *f the frame (valid while x and the destination are),
 * or RPL_E_PROTO_CRC. */
RPL_MUST_CHECK rpl_err proto_split_finish(const struct proto_split *x, struct proto_frame *f);

/* ---- version negotiation ------------------------------------------------------------------ */

/* Picks the highest version both ranges contain. On RPL_E_PROTO_NO_COMMON_VERSION, msg (if not
 * NULL) receives "peer speaks A..B, we speak C..D" for the ERROR frame and the log. */
RPL_MUST_CHECK rpl_err proto_negotiate(uint16_t our_min, uint16_t our_max, uint16_t peer_min,
                                       uint16_t peer_max, uint16_t *chosen, char *msg, size_t msgsz);

/* ---- checksums ---------------------------------------------------------------------------- */

/* CRC32C (Castagnoli), continuing from crc (start with 0). Uses SSE4.2 when the CPU has it. */
uint32_t proto_crc32c(uint32_t crc, const void *data, size_t len);
/* xxh3-128 of data in canonical (big-endian) byte order. Uses AVX2 when the CPU has it (the
 * library's build is SSE2: a third of the speed), with the same result. */
void proto_hash128(const void *data, size_t len, uint8_t out[PROTO_HASH_SIZE]);
/* xxh3-64 of data, likewise. */
uint64_t proto_hash64(const void *data, size_t len);

/* The cycle digest of CYCLE_END: xxh3-128 over the EXTENT hashes in the order they were sent.
 * Zero-initialise (or proto_digest_init), update once per extent, then final. */
struct proto_digest {
  uint64_t state[96] __attribute__((aligned(64))); /* room for XXH3_state_t, checked at build time */
};
void proto_digest_init(struct proto_digest *d);
void proto_digest_update(struct proto_digest *d, const uint8_t hash[PROTO_HASH_SIZE]);
void proto_digest_final(const struct proto_digest *d, uint8_t out[PROTO_HASH_SIZE]);

const char *proto_type_name(uint8_t type);

#endif
