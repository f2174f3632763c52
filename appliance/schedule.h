/* schedule.h - the recovery-point schedule the appliance keeps for every disk: how often a
 * crash point (filesystems frozen, no hooks) and an application point (the agent's hooks run) are
 * due, its text form, and when a disk's next point of each kind is due. Internal header:
 * appliance/ and tests/ only. */
#ifndef APPLIANCE_SCHEDULE_H
#define APPLIANCE_SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

#define SCHEDULE_DEFAULT "crash=5m,app=1h"
#define SCHEDULE_TEXT_MAX 64
#define SCHEDULE_MIN_S 30                 /* a point a minute needs headroom: below 30 s catch-up and
                                             freeze would be most of the time */
#define SCHEDULE_MAX_S (366ll * 86400)    /* a year */
#define SCHEDULE_MAX_SCALE 3600u
/* A failed attempt (the agent away, a freeze refused, too much churn to catch up) is tried again
 * after this, or at the next due time if that comes first. */
#define SCHEDULE_RETRY_S 10

enum schedule_kind { SCHEDULE_CRASH = 0, SCHEDULE_APP = 1 };
#define SCHEDULE_KINDS 2

struct point_schedule {
  int64_t every_s[SCHEDULE_KINDS];  /* 0: off */
  uint32_t time_scale;              /* test-only: one real second counts as this many (0 or 1: real) */
};

/* Parses "crash=5m,app=1h" (keys in any order, each at most once; a missing key keeps its default;
 * "off" or "0" turns a kind off). NULL or "" gives the default. RPL_E_POINT_SCHEDULE with its detail. */
RPL_MUST_CHECK rpl_err schedule_parse(const char *text, struct point_schedule *out);
/* "crash=5m,app=1h", "crash=30s,app=off". */
void schedule_format(const struct point_schedule *s, char *out, size_t outsz);
/* "crash", "app". */
const char *schedule_kind_name(enum schedule_kind k);
/* The period of kind k in real milliseconds (the time scale applied), 0 when off. */
uint64_t schedule_period_ms(const struct point_schedule *s, enum schedule_kind k);

/* When the next point of kind k is due (unix ms), given when the last point that satisfies it was
 * made (0: never: now) and now: one period after it, and never before now. 0 when k is off. */
int64_t schedule_next_due(const struct point_schedule *s, enum schedule_kind k, int64_t last_ms, int64_t now_ms);

#endif
