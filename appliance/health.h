/* health.h - the health roll-up: one state (healthy / warning / critical) per disk, per agent and
 * for the appliance, with each reason and what to do about it; status, the page and /metrics show
 * it. appliance/ internal (health.c). */
#ifndef APPLIANCE_HEALTH_H
#define APPLIANCE_HEALTH_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "catalog.h"
#include "json_out.h"
#include "thresholds.h"

#define HEALTH_MAX_REASONS        8
/* The limits (RPO lag, point age, agent away, cache) are the operator's: thresholds.h. */

enum health_level { HEALTH_HEALTHY, HEALTH_WARNING, HEALTH_CRITICAL };

struct health_reason {
  enum health_level level;
  const char *code;   /* stable word: "rpo_lag", "point_overdue", ... (docs/operations.md lists them) */
  char what[320];
  char todo[256];
};

struct health {
  enum health_level level; /* the worst of the reasons' */
  unsigned n;              /* reasons past HEALTH_MAX_REASONS are dropped, the level still counts them */
  struct health_reason r[HEALTH_MAX_REASONS];
};

struct appliance;
struct disk;

/* "healthy", "warning", "critical". */
const char *health_name(enum health_level l);
/* A disk's health. L held (reads the catalog for its agent's heartbeat). */
void health_disk(struct appliance *a, const struct disk *d, struct health *h);
/* An agent's health (a revoked agent is healthy: it is meant to be away). */
void health_agent(const struct thresholds *t, const struct catalog_agent *ag, struct health *h);
/* The appliance's: its own reasons (storage, free space, disks not served) and a count of the disks
 * and agents that are not healthy. Takes L. */
void health_appliance(struct appliance *a, struct health *h);
/* Member key: {"state": ..., "reasons": [{"level", "code", "what", "todo"}]}. */
void health_json(struct json_out *j, const char *key, const struct health *h);
/* One line per reason: "<indent><level>: <what>; do: <todo>\n". */
void health_text(FILE *f, const char *indent, const struct health *h);

#endif
