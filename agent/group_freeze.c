/* group_freeze.c - a consistency group's freeze across servers: GROUP_FREEZE freezes the named
 * disks' filesystems and holds them (answering GROUP_FROZEN) until the point's CYCLE_START flips
 * them (points.c) or GROUP_THAW gives the attempt up; the watchdog thaws them at the limit regardless. */
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "daemon.h"
#include "rpl_clock.h"
#include "rpl_log.h"

#define DEFAULT_LIMIT_MS 2000 /* freeze_options' default limit */

static uint64_t realtime_us(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static rpl_err answer(struct agent *a, uint64_t attempt, rpl_err status, uint64_t frozen_at_us, uint32_t filesystems,
                      const char *why)
{
  struct proto_group_frozen m = {.attempt = attempt, .status = status, .frozen_at_us = frozen_at_us,
                                 .filesystems = filesystems,
                                 .message = {(const uint8_t *)why, (uint32_t)strlen(why)}};
  rpl_err err = proto_encode_group_frozen(&a->out, &m);
  return err ? err : session_send_buf(a);
}

void group_freeze_release(struct agent *a, const char *why)
{
  struct held_freeze *h = &a->held;
  if (!h->attempt)
    return;
  rpl_err e = h->frozen ? freeze_end(h->fs) : RPL_OK;
  log_info("group point attempt %" PRIu64 ": filesystems thawed (%s)%s%s", h->attempt, why, e ? ": " : "",
           e ? rpl_strerror(e) : "");
  freeze_free(h->fs);
  memset(h, 0, sizeof *h);
}

bool group_freeze_covers(const struct agent *a, const size_t *disks, size_t n)
{
  const struct held_freeze *h = &a->held;
  if (!h->attempt || h->ndisks != n)
    return false;
  for (size_t i = 0; i < n; i++) {
    bool in = false;
    for (size_t k = 0; k < n && !in; k++)
      in = h->disks[k] == disks[i];
    if (!in)
      return false;
  }
  return true;
}

/* RPL_TEST_GROUP_HOLD=SECONDS[,COUNT] (tests only): the answer to the first COUNT (all, without it)
 * GROUP_FREEZEs comes SECONDS late, the filesystems frozen meanwhile: a member that is late. */
static void test_hold(struct agent *a)
{
  const char *v = getenv("RPL_TEST_GROUP_HOLD");
  if (!v || !*v)
    return;
  char *end;
  unsigned long s = strtoul(v, &end, 10), count = *end == ',' ? strtoul(end + 1, NULL, 10) : ULONG_MAX;
  if (s == 0 || s > 60 || a->test_holds >= count)
    return;
  a->test_holds++;
  log_warn("RPL_TEST_GROUP_HOLD: answering GROUP_FREEZE %lu s late (test switch)", s);
  sleep((unsigned)s);
}

rpl_err group_freeze_on_frame(struct agent *a, const struct proto_frame *f)
{
  struct proto_group_freeze m;
  rpl_err err = proto_decode_group_freeze(f, &m);
  if (err)
    return err;
  group_freeze_release(a, "a new group point began");
  struct held_freeze *h = &a->held;
  const char *devices[AGENT_MAX_DISKS];
  size_t n = 0;
  for (uint32_t i = 0; i < m.count; i++) {
    ssize_t d = agent_disk_index(a, m.disk_ids + (size_t)i * PROTO_ID_SIZE);
    if (d < 0 || n == AGENT_MAX_DISKS)
      return answer(a, m.attempt, RPL_E_NOT_FOUND, 0, 0, "a disk of the group point is not protected by this agent");
    h->disks[n] = (size_t)d;
    devices[n++] = a->st.disks[d].device;
  }
  struct freeze_set *fs = NULL;
  if ((err = freeze_find(devices, n, &fs))) {
    char why[RPL_DETAIL_MAX + 128];
    return answer(a, m.attempt, err, 0, 0, rpl_describe(err, why, sizeof why));
  }
  struct freeze_options opt = a->freeze;
  if (!m.hooks)
    opt.pre_hook = opt.post_hook = NULL;
  unsigned own = opt.limit_ms ? opt.limit_ms : DEFAULT_LIMIT_MS;
  opt.limit_ms = m.limit_ms < own ? m.limit_ms : own;
  bool frozen = freeze_count(fs) > 0 || opt.pre_hook;
  if (frozen && (err = freeze_begin(fs, &opt))) {
    char why[RPL_DETAIL_MAX + 128];
    rpl_describe(err, why, sizeof why);
    freeze_free(fs);
    log_warn("group point attempt %" PRIu64 ": cannot freeze: %s", m.attempt, why);
    return answer(a, m.attempt, err, 0, 0, why);
  }
  /* The window counts from the first FIFREEZE (the syncfs before it does not stop writers): on the
   * wall clock, which the appliance compares across servers. */
  uint64_t mono = rpl_mono_ms(), at_ms = freeze_frozen_at_ms(fs), at_us = realtime_us();
  at_us -= (mono > at_ms && at_ms ? mono - at_ms : 0) * 1000;
  h->attempt = m.attempt;
  h->ndisks = n;
  h->fs = fs;
  h->frozen = frozen;
  h->hooks = m.hooks;
  h->limit_ms = opt.limit_ms;
  h->frozen_at_us = frozen ? at_us : 0;
  h->frozen_mono_ms = rpl_mono_ms();
  log_info("group point attempt %" PRIu64 ": %zu filesystem(s) of %zu disk(s) frozen, held for the appliance "
           "(at most %u ms)", m.attempt, freeze_count(fs), n, opt.limit_ms);
  test_hold(a);
  return answer(a, m.attempt, RPL_OK, h->frozen_at_us, (uint32_t)freeze_count(fs), "");
}

rpl_err group_thaw_on_frame(struct agent *a, const struct proto_frame *f)
{
  struct proto_group_thaw m;
  rpl_err err = proto_decode_group_thaw(f, &m);
  if (err)
    return err;
  if (a->held.attempt == m.attempt)
    group_freeze_release(a, "the appliance gave the group point up");
  return RPL_OK;
}
