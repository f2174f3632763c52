/* group_point.h - consistency groups across servers: the groups (the catalog's, kept in memory) and
 * the coordinator of their two-phase points, shared by the session threads (each agent's session
 * drives its own members; the coordinator says when each phase may start and records the point).
 * Internal header: the daemon's role files (session.c, orchestrator.c, status.c, cmd_run.c,
 * group_point.c).
 *
 * A group point (one attempt):
 *   1. catch-up: each member's session runs its members' catch-up cycles (plain), then says so;
 *   2. freeze: once every member caught up, each session sends GROUP_FREEZE for its members and the
 *      agents answer GROUP_FROZEN; all must be frozen within GP_FREEZE_DEADLINE_MS of the phase's
 *      start (the whole attempt within GP_DEADLINE_MS);
 *   3. flip: each session sends its members' CYCLE_START(point); the agents flip, thaw, read the
 *      remainder and end the cycles; once every member's cycle is applied the points are recorded
 *      in one go: one id (the first member's point, the `group` of every member's point).
 * A member late, failing, fuzzy or gone: every member thaws (GROUP_THAW, or the agent's watchdog),
 * no row is written, the attempt is counted as failed (status, events) and a scheduled point is
 * tried again after SCHEDULE_RETRY_S.
 *
 * Locks: the coordinator's own mutex is a leaf: it may be taken with a->lock held, never the other
 * way round. Every function here takes what it needs; none is called with the coordinator's held. */
#ifndef APPLIANCE_GROUP_POINT_H
#define APPLIANCE_GROUP_POINT_H

#include <stdbool.h>
#include <stdint.h>

#include "appliance.h"

#define GP_FREEZE_DEADLINE_MS 1000  /* from the freeze phase's start until every member is frozen */
#define GP_DEADLINE_MS        30000 /* a whole attempt, from its start until every member's cycle ended */
#define GP_FREEZE_LIMIT_MS    3000  /* GROUP_FREEZE's limit_ms: an agent left frozen thaws by itself then */
#define GP_MAX_GROUPS         64    /* consistency groups of one appliance */
#define GP_MAX_ATTEMPTS       16    /* group points under way (or answered not yet) at once */

struct group_points;

/* Loads the catalog's groups (run, before the sessions start). */
RPL_MUST_CHECK rpl_err gp_open(struct appliance *a);
void gp_close(struct appliance *a);

/* ---- the groups (control socket, page) ---- */
RPL_MUST_CHECK rpl_err gp_create(struct appliance *a, const struct catalog_group *g);
RPL_MUST_CHECK rpl_err gp_delete(struct appliance *a, const char *name);
/* {"groups": [...]}'s array items, or one line per group into f (j NULL). a->lock not held. */
void gp_write(struct appliance *a, struct json_out *j, FILE *f);
/* The daemon's part of `replication-appliance group` (cmd_group.c), from the control socket. */
int gp_control(struct appliance *a, int argc, char **argv, struct control_reply *out);
/* Whether disk id is a member of a group (its scheduled points are the group's). L held or not. */
bool gp_disk_in_group(struct appliance *a, const uint8_t id[PROTO_ID_SIZE]);

/* ---- starting a group point ---- */
/* A point of group `name` now, asked for by agent `agent`'s request `request` (request 0: the page):
 * joins an attempt still catching up, else starts one. The answer comes by gp_answers(). Refused at
 * once (RPL_E_GROUP_UNKNOWN, RPL_E_GROUP_EMPTY, RPL_E_GROUP_AGENT, RPL_E_GROUP_BUSY, RPL_E_LIMIT). */
RPL_MUST_CHECK rpl_err gp_request(struct appliance *a, const char *name, const uint8_t agent[PROTO_ID_SIZE],
                                  uint64_t request, enum catalog_point_made_by made_by);
/* Starts the scheduled points of the groups that are due (any session's pass). L not held. */
void gp_schedule_check(struct appliance *a);

/* ---- a member session's part ---- */
struct gp_part {                  /* what one session runs of an attempt */
  uint64_t attempt;
  bool hooks;
  enum catalog_point_made_by made_by;
  size_t n;
  uint8_t disks[CATALOG_GROUP_MAX_DISKS][PROTO_ID_SIZE];
};
/* An attempt catching up with members of this agent that its session has not taken yet: taken. */
bool gp_take_part(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], struct gp_part *out);
enum gp_action {
  GP_WAIT,                        /* the other members are not there yet: start nothing else */
  GP_FREEZE,                      /* send GROUP_FREEZE for this agent's members (once) */
  GP_FLIP,                        /* all are frozen: send the members' CYCLE_STARTs */
  GP_ABORT,                       /* the attempt failed: GROUP_THAW if a freeze was sent; drop the part */
};
/* This agent's members of the attempt caught up (or still wait): what to do now. */
enum gp_action gp_poll(struct appliance *a, uint64_t attempt, const uint8_t agent[PROTO_ID_SIZE]);
/* GROUP_FROZEN from agent. A stale or foreign one is ignored (logged). */
void gp_frozen(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], const struct proto_group_frozen *m);
/* Member disk's point cycle ended and was applied (status RPL_OK, its consistency), or its part of
 * the attempt failed (status says why). The last member's end records the point. */
void gp_member_ended(struct appliance *a, uint64_t attempt, const uint8_t disk[PROTO_ID_SIZE], uint64_t cycle,
                     uint8_t consistency, uint32_t freeze_ms, rpl_err status);
/* The agent's session ends: its members of every attempt fail. */
void gp_session_gone(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE]);
/* Answers due to agent's requests (at most max), which count as given. */
size_t gp_answers(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE], struct proto_point *out,
                  char (*ids)[32], size_t max);

#endif
