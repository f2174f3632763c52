/* cbt_state.h - the tracker's per-device record in the agent state directory (STATE/cbt/NAME.state):
 * identity, tracker UUID, resync events and the loss-counter baselines (agent/ internal). */
#ifndef AGENT_CBT_STATE_H
#define AGENT_CBT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cbt.h"
#include "cbt_shared.h"
#include "rpl_error.h"

/* Why a file and not only pinned maps: pins vanish on reboot, and the reboot is exactly what this
 * record must notice (boot_id) and survive to report. The pinned slot carries the same UUID, so a
 * record and a slot that disagree reveal tracking that was replaced behind the agent's back. */
struct cbt_record {
  char name[64];            /* kernel name; the file is NAME.state */
  char path[256];           /* device path given to start */
  uint32_t major, minor;
  uint64_t size;            /* bytes when attached */
  uint64_t diskseq;         /* the disk's diskseq when attached (0: unknown, kernel < 5.15) */
  uint32_t block_shift;     /* log2(granularity) */
  bool fallback;            /* no eBPF: resync every cycle */
  bool armed;               /* a kernel slot was attached in this boot (so its absence is a loss) */
  uint8_t uuid[16];         /* tracker UUID, renewed on every event */
  uint8_t previous_uuid[16]; /* the one before the last event: a slot still carrying it was being
                              * renewed when the agent died (the record is saved first) */
  bool has_previous_uuid;
  char boot_id[40];         /* /proc/sys/kernel/random/boot_id when last seen tracking */
  uint64_t resync_count;    /* events so far */
  uint64_t resync_acked;    /* highest acknowledged count */
  enum cbt_resync_reason resync_reason; /* of the latest event */
  uint64_t resync_time;     /* unix time of the latest event */
  uint64_t program_misses_seen;                /* recursion_misses already accounted for */
  uint64_t losses_seen[CBT_SLOT_LOSS_FIELDS];  /* slot loss counters already accounted for */
  uint64_t fallback_generation;                /* generation counter in fallback mode */
};

#define CBT_RECORD_MAX_BYTES 4096

/* Text form, "key value" per line. Returns the length written (< size), or 0 if it does not fit. */
size_t cbt_record_format(const struct cbt_record *rec, char *buf, size_t size);
/* Parses the text form; RPL_E_CBT_STATE_CORRUPT on a missing or malformed field. */
RPL_MUST_CHECK rpl_err cbt_record_parse(const char *text, struct cbt_record *rec);

/* STATE/cbt/NAME.state. RPL_E_NOT_FOUND if absent. */
RPL_MUST_CHECK rpl_err cbt_record_load(const char *state_dir, const char *name, struct cbt_record *rec);
/* Writes atomically (temporary file, fsync, rename, fsync of the directory); creates STATE/cbt. */
RPL_MUST_CHECK rpl_err cbt_record_save(const char *state_dir, const struct cbt_record *rec);
RPL_MUST_CHECK rpl_err cbt_record_remove(const char *state_dir, const char *name);
/* Names of the records in STATE/cbt, sorted; at most max; *count set. */
RPL_MUST_CHECK rpl_err cbt_record_list(const char *state_dir, char (*names)[64], size_t max, size_t *count);

/* Records a resync event: count + 1, reason, time, a fresh UUID. */
void cbt_record_raise(struct cbt_record *rec, enum cbt_resync_reason reason, uint64_t unix_time);
static inline bool cbt_record_resync_required(const struct cbt_record *rec)
{
  return rec->resync_count > rec->resync_acked;
}
/* Acknowledges events up to count: only the exact current count clears (RPL_E_CBT_ACK_STALE if
 * older, RPL_E_INVALID_ARGUMENT if larger than any event or 0). */
RPL_MUST_CHECK rpl_err cbt_record_ack(struct cbt_record *rec, uint64_t count);
/* "xxxxxxxx-xxxx-..." into out[37]. */
void cbt_uuid_string(const uint8_t uuid[16], char out[37]);

#endif
