/* thresholds.h - the health thresholds operators set ("rpo-warn=2m,rpo-crit=10m,point-age=2h,
 * agent-away=90s,cache=80"): parsing, the canonical text and the limits they give for an RPO target.
 * Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_THRESHOLDS_H
#define APPLIANCE_THRESHOLDS_H

#include <stddef.h>
#include <stdint.h>

#include "rpl_error.h"

#define THRESHOLDS_TEXT_MAX 128
#define THRESHOLDS_DEFAULT "rpo-warn=auto,rpo-crit=auto,point-age=off,agent-away=90s,cache=80"
/* auto: this many RPO targets, but never under the floor: a short target's ordinary jitter (a slow
 * cycle, a reconnect) is not worth a page. */
#define THRESHOLDS_RPO_WARN_FACTOR 2
#define THRESHOLDS_RPO_CRIT_FACTOR 10
#define THRESHOLDS_RPO_WARN_FLOOR_S 30
#define THRESHOLDS_RPO_CRIT_FLOOR_S 120
/* The catalog records an agent's heartbeat every 30 s (session.c): under two of them, a connected
 * agent would look away between two records. */
#define THRESHOLDS_AGENT_AWAY_MIN_S 60
#define THRESHOLDS_MAX_S (366ll * 86400)

struct thresholds {
  int64_t rpo_warn_s, rpo_crit_s; /* RPO lag past these: warning, critical; 0 = auto */
  int64_t point_age_s;            /* the newest point older than this: warning; 0 = off */
  int64_t agent_away_s;           /* an agent not heard from for this long: critical */
  unsigned cache_pct;             /* a disk's cache fuller than this percentage: warning */
};

/* Parses the text (keys in any order, each at most once; a missing key keeps its default). NULL
 * or "" gives the defaults. rpo-crit must not be under rpo-warn when both are set.
 * RPL_E_ALERT_THRESHOLDS with its detail. */
RPL_MUST_CHECK rpl_err thresholds_parse(const char *text, struct thresholds *out);
/* The canonical text: every key, in THRESHOLDS_DEFAULT's order. */
void thresholds_format(const struct thresholds *t, char *out, size_t outsz);
/* The RPO lag limits in seconds for an RPO target in milliseconds (auto resolved). */
void thresholds_rpo_limits(const struct thresholds *t, uint64_t rpo_target_ms, int64_t *warn_s, int64_t *crit_s);

#endif
