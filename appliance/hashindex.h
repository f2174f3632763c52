/* hashindex.h - a disk's hash index on the appliance: the xxh3-128 of every chunk of its replica, so
 * that a resync compares the agent's hashes with it instead of reading the replica back.
 * Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_HASHINDEX_H
#define APPLIANCE_HASHINDEX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto.h"
#include "rpl_error.h"

/*
 * What it promises
 *  - A chunk is either known (its hash is the replica's) or stale (the index cannot answer: the
 *    chunk is read from the replica). Whatever is unsure is stale: an index that cannot be loaded,
 *    one saved by another version, or one the appliance may have written around (below).
 *  - Write-ahead: hashindex_write() is called before the replica is written in a range. The first
 *    such call after a save marks the file "open" on disk (fdatasync) before it returns; an index
 *    found open when loaded is all stale. A save (tmp file + fsync + rename + fsync of the folder)
 *    writes it closed again, with every chunk written since marked stale.
 *  - A rehash (hashindex_rehashed) counts only when no write touched the index since its
 *    hashindex_generation(): a read that raced with a write never makes a chunk known.
 *  - Lazy: hashindex_stale_chunks offers only cold chunks, not written since the one before last
 *    hashindex_cool(): a chunk written every cycle is read by the next resync, not after each cycle.
 *  - Direct writes carry their data: a chunk written whole, in order, gets its hash pending, known
 *    at hashindex_direct_commit (the write is durable), dropped at hashindex_direct_abort.
 *  - Thread-safe (a mutex inside): the applier and the sessions call it.
 *
 * The file (STATE/journal/<disk uuid>/hashindex), integers little-endian:
 *   offset 0  magic "RPLHIDX\0"
 *          8  u32 version          HASHINDEX_VERSION
 *         12  u32 flags            bit 0: open (the replica may differ from the hashes: all stale)
 *         16  u32 chunk_size       bytes of a chunk (the agent's resync chunk)
 *         20  u32 reserved         0
 *         24  u64 disk_size        the replica's size the hashes cover
 *         32  u64 nchunks          ceil(disk_size / chunk_size)
 *         40  u64 body_checksum    xxh3-64 of the body
 *         48  u64 header_checksum  xxh3-64 of bytes 0..47
 *         56  8 bytes of zeros
 *         64  body: known bitmap (bit c of u64 word c/64: chunk c known), ceil(nchunks/64) words,
 *             then nchunks 16-byte hashes (zeros for stale chunks)
 */
#define HASHINDEX_MAGIC       "RPLHIDX"
#define HASHINDEX_VERSION     1u
#define HASHINDEX_HEADER_SIZE 64u
#define HASHINDEX_FLAG_OPEN   1u

struct hashindex;

struct hashindex_stats {
  uint32_t chunk_size;
  uint64_t chunks;                /* chunks of the disk */
  uint64_t stale_chunks;          /* the index cannot answer for these */
  uint64_t resyncs;               /* resyncs compared (since start) */
  uint64_t resync_read_bytes;     /* bytes read from storage by resyncs' comparisons (not verification) */
  uint64_t resync_index_chunks;   /* chunks resyncs took from the index, unread */
  uint64_t resync_read_chunks;    /* chunks resyncs read from storage */
  uint64_t rehashed_chunks;       /* stale chunks rehashed in the background */
  uint64_t rehash_read_bytes;     /* bytes the background rehash read */
  uint64_t verified_chunks;       /* known chunks re-read and compared */
  uint64_t verify_failures;       /* comparisons that failed: the whole index was made stale */
  uint64_t verify_read_bytes;     /* bytes those re-reads read */
  uint64_t resync_stale_chunks;   /* stale chunks when resyncs started (after verification), summed */
  char loaded[160];               /* what loading found ("12 of 4096 chunks stale", why all stale) */
};

/* Loads path (absent, unreadable, damaged, another version or chunk size, found open: all stale,
 * said in stats.loaded) for a disk of disk_size bytes in chunks of chunk_size (a power of two).
 * Errors only for memory. */
RPL_MUST_CHECK rpl_err hashindex_open(const char *path, uint64_t disk_size, uint32_t chunk_size,
                                      struct hashindex **out);
/* Saves (when anything changed) and frees; NULL is fine. */
void hashindex_close(struct hashindex *hi);
/* Writes the file closed (tmp, fsync, rename, fsync of the folder) when anything changed since. */
RPL_MUST_CHECK rpl_err hashindex_save(struct hashindex *hi);

/* The disk grew: the new chunks (and the old last one) are stale. */
void hashindex_resize(struct hashindex *hi, uint64_t disk_size);
/* Before the replica is written in [offset, offset+len): those chunks are stale (the file marked
 * open first). data (the bytes written, or NULL) feeds a direct write's pending hashes; hash (may
 * be NULL) is the xxh3-128 of exactly those bytes, already checked, taken as the chunk's when they
 * are one whole chunk (no second pass over them), as the hash of zeros is for a whole zero chunk. */
RPL_MUST_CHECK rpl_err hashindex_write(struct hashindex *hi, uint64_t offset, const uint8_t *data, uint64_t len,
                                       bool zeros, const uint8_t hash[PROTO_HASH_SIZE]);
/* The direct cycle is durable: its pending hashes become known. */
void hashindex_direct_commit(struct hashindex *hi);
/* The direct cycle was given up: its pending hashes are dropped (the chunks stay stale). */
void hashindex_direct_abort(struct hashindex *hi);
/* The replica was made just now and reads as zeros throughout: every chunk known, with the hash of
 * zeros (the background rehash then reads nothing of a new replica). Only before anything is written. */
void hashindex_blank(struct hashindex *hi);
/* Every chunk stale (a verification failed, another appliance wrote the replica). */
RPL_MUST_CHECK rpl_err hashindex_invalidate(struct hashindex *hi, const char *why);

uint32_t hashindex_chunk_size(const struct hashindex *hi);
/* Chunk c's hash when known. */
bool hashindex_lookup(struct hashindex *hi, uint64_t c, uint8_t hash[PROTO_HASH_SIZE]);
/* Counts writes: taken before a read of the replica, given to hashindex_rehashed after it. */
uint64_t hashindex_generation(struct hashindex *hi);
/* Chunk c hashed from the replica, read after generation gen was taken: known unless written since. */
void hashindex_rehashed(struct hashindex *hi, uint64_t c, const uint8_t hash[PROTO_HASH_SIZE], uint64_t gen);
/* Up to max stale cold chunks from *cursor on (wrapping), into out; the count. */
size_t hashindex_stale_chunks(struct hashindex *hi, uint64_t *cursor, uint64_t *out, size_t max);
/* A period passed: chunks written in the one before it and not since turn cold. */
void hashindex_cool(struct hashindex *hi);
/* Up to max known chunks picked at random, into out (sorted, distinct); the count. */
size_t hashindex_sample(struct hashindex *hi, uint64_t *out, size_t max);
/* Whether a direct cycle is writing (a background read then would race with it). */
bool hashindex_direct_busy(struct hashindex *hi);
/* Whether anything changed since the last save. */
bool hashindex_dirty(struct hashindex *hi);

/* Counters (the caller adds what a resync or the rehash did; the index keeps them). */
enum hashindex_counter {
  HI_RESYNCS, HI_RESYNC_READ_BYTES, HI_RESYNC_INDEX_CHUNKS, HI_RESYNC_READ_CHUNKS, HI_REHASHED_CHUNKS,
  HI_REHASH_READ_BYTES, HI_VERIFIED_CHUNKS, HI_VERIFY_FAILURES, HI_VERIFY_READ_BYTES, HI_RESYNC_STALE_CHUNKS,
  HI_COUNTERS
};
void hashindex_count(struct hashindex *hi, enum hashindex_counter which, uint64_t n);
void hashindex_get_stats(struct hashindex *hi, struct hashindex_stats *out);

#endif
