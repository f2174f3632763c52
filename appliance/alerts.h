/* alerts.h - health transitions of disks, agents and the appliance: each logged once, kept for
 * status, and delivered to the configured webhooks (JSON POST over HTTPS, CA pinned) from a bounded
 * queue in the state directory that survives restarts, with retries and backoff. appliance/
 * internal (alerts.c): cmd_run.c starts it, status.c and the page show it. Thread-safe. */
#ifndef APPLIANCE_ALERTS_H
#define APPLIANCE_ALERTS_H

#include <stdio.h>

#include "json_out.h"
#include "rpl_error.h"

#define ALERTS_CHECK_MS         2000     /* how often health is looked at */
/* A new health must hold this long before it is a transition (a reconnect, a slow cycle pass);
 * right after start, a worse one must hold ALERTS_START_HOLD_MS: the agents are still reconnecting. */
#define ALERTS_HOLD_MS          15000
#define ALERTS_START_HOLD_MS    60000
#define ALERTS_QUEUE_MAX        256      /* alerts kept per webhook while it is away; past it the oldest
                                            is dropped, counted and logged (a day of flapping fits) */
#define ALERTS_BODY_MAX         8192     /* one alert's JSON (reasons are capped by health.h) */
#define ALERTS_BACKOFF_FIRST_MS 1000     /* a failed delivery is tried again after this, doubling */
#define ALERTS_BACKOFF_MAX_MS   300000   /* up to five minutes */
#define ALERTS_POST_TIMEOUT_S   15
#define ALERTS_RECENT           16       /* transitions status keeps */

struct appliance;
struct alerts;

/* Reads the webhooks from a->settings, the levels alerted before the last stop and the queues in
 * STATE/alerts/, and starts the watcher and the sender threads. The caller stops it with
 * alerts_stop before a is freed. */
RPL_MUST_CHECK rpl_err alerts_start(struct appliance *a, struct alerts **out);
/* Stops both threads (a delivery in progress ends within ALERTS_POST_TIMEOUT_S) and frees al;
 * what is queued stays on disk for the next start. NULL is allowed. */
void alerts_stop(struct alerts *al);
/* Member "alerts" of the status document: {thresholds, hold_seconds, recent: [...], webhooks: [...]},
 * or, for the text status (j NULL), its lines to f. */
void alerts_status(struct alerts *al, struct json_out *j, FILE *f);
/* Queues a test alert to every webhook (the page's button): how many took it in *queued;
 * RPL_E_NOT_FOUND with its detail when none is configured. */
RPL_MUST_CHECK rpl_err alerts_send_test(struct alerts *al, unsigned *queued);

#endif
