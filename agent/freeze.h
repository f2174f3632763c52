/* freeze.h - filesystem freeze for recovery points: the filesystems mounted from a set of disks,
 * FIFREEZE/FITHAW with a hard time limit enforced by an independent watchdog process, and
 * optional pre/post hook scripts. Internal to agent/ (and its tests). */
#ifndef AGENT_FREEZE_H
#define AGENT_FREEZE_H

#include <stddef.h>
#include <sys/types.h>

#include "rpl_error.h"

#define FREEZE_MAX_MOUNTS 256

struct freeze_options {
  unsigned limit_ms;        /* hard limit from the start of the freeze to the thaw; default 2000 */
  const char *pre_hook;     /* run with /bin/sh -c before freezing (NULL: none); must exit 0 */
  const char *post_hook;    /* run after thawing, whatever happened (NULL: none) */
  unsigned hook_timeout_ms; /* a hook still running then is killed and counts as failed; default 30000 */
};

struct freeze_set;

/* Collects the filesystems mounted from the given block devices, whole disks including their
 * partitions, one entry per filesystem (bind mounts and repeated mounts are frozen once).
 * A set may be empty (a disk with no mounted filesystem). The caller frees it with freeze_free(). */
RPL_MUST_CHECK rpl_err freeze_find(const char *const *devices, size_t n, struct freeze_set **out);
size_t freeze_count(const struct freeze_set *s);
const char *freeze_mountpoint(const struct freeze_set *s, size_t i);

/* Runs the pre hook, starts the watchdog, then freezes every filesystem of the set. On any
 * failure everything frozen so far is thawed before returning. The watchdog, a separate process
 * in its own session, thaws them all when the limit passes or as soon as this process dies. */
RPL_MUST_CHECK rpl_err freeze_begin(struct freeze_set *s, const struct freeze_options *opt);
/* Thaws every filesystem (through the watchdog, and again directly), reaps the watchdog, runs the
 * post hook. RPL_E_FREEZE_EXPIRED when the watchdog had already thawed at the limit: whatever
 * was read during the freeze is not a consistent point. */
RPL_MUST_CHECK rpl_err freeze_end(struct freeze_set *s);
/* The watchdog's pid while frozen (tests use it), else 0. */
pid_t freeze_watchdog_pid(const struct freeze_set *s);
void freeze_free(struct freeze_set *s);

#endif
