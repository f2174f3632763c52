/* freeze.h - filesystem freeze for recovery points: the filesystems mounted from a set of disks,
 * FIFREEZE/FITHAW with a hard time limit enforced by an independent watchdog process, and
 * optional pre/post hook scripts. Internal to agent/ (and its tests). */
#ifndef AGENT_FREEZE_H
#define AGENT_FREEZE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "rpl_error.h"

#define FREEZE_MAX_MOUNTS 256

struct freeze_options {
  unsigned limit_ms;        /* hard limit from the start of the freeze to the thaw; default 2000 */
  const char *pre_hook;     /* run with /bin/sh -c before freezing (NULL: none); must exit 0 */
  const char *post_hook;    /* run after thawing on every path once freeze_begin was called (NULL: none) */
  unsigned hook_timeout_ms; /* a hook still running then is killed and counts as failed; default 30000 */
};

struct freeze_set;

/* Collects the filesystems mounted from the given block devices or from any device built on them
 * (partitions, device-mapper: linear, crypt, LVM; md; found through sysfs holders/, recursively),
 * one entry per filesystem (bind mounts and repeated mounts are frozen once). A filesystem on a
 * device that also sits on a disk outside the set is *partial*: listed apart with the reason and
 * never frozen (its point is crash-consistent). A set may be empty (a disk with no mounted
 * filesystem). The caller frees it with freeze_free(). */
RPL_MUST_CHECK rpl_err freeze_find(const char *const *devices, size_t n, struct freeze_set **out);
size_t freeze_count(const struct freeze_set *s);
const char *freeze_mountpoint(const struct freeze_set *s, size_t i);
size_t freeze_partial_count(const struct freeze_set *s);
const char *freeze_partial_mountpoint(const struct freeze_set *s, size_t i);
/* A sentence for the log and status: which device, and which disk outside the set it sits on. */
const char *freeze_partial_reason(const struct freeze_set *s, size_t i);

/* Runs the pre hook, starts the watchdog, then freezes every filesystem of the set. On any
 * failure everything frozen so far is thawed and the post hook has run before returning
 * (RPL_E_FREEZE_EXPIRED when the limit passed while freezing). The watchdog, a separate process
 * in its own session, thaws them all and runs the post hook when the limit passes or as soon as
 * this process dies, and after the limit keeps thawing until this process ends the freeze. */
RPL_MUST_CHECK rpl_err freeze_begin(struct freeze_set *s, const struct freeze_options *opt);
/* After a successful freeze_begin: thaws every filesystem (through the watchdog, and again
 * directly), reaps the watchdog, which runs the post hook unless it already did at the limit.
 * RPL_E_FREEZE_EXPIRED when the watchdog had already thawed at the limit: whatever was read
 * during the freeze is not a consistent point. RPL_E_FREEZE_HOOK when the post hook failed. */
RPL_MUST_CHECK rpl_err freeze_end(struct freeze_set *s);
/* The watchdog's pid while frozen (tests use it), else 0. */
pid_t freeze_watchdog_pid(const struct freeze_set *s);
/* How long the last freeze_begin/freeze_end kept the filesystems frozen: from the first FIFREEZE
 * to the thaw's return, in milliseconds (writers waited that long); 0 when nothing was frozen. */
uint64_t freeze_duration_ms(const struct freeze_set *s);
/* When the last freeze_begin's first FIFREEZE came (rpl_mono_ms clock; the syncfs before it, while
 * writers still write, is not part of the freeze); 0 when nothing was frozen. */
uint64_t freeze_frozen_at_ms(const struct freeze_set *s);
void freeze_free(struct freeze_set *s);

#endif
