/* upload_gate.h - the daemon's gate on uploads: the storage prerequisites (prereq.h) must pass
 * before anything is uploaded, and are run again, with backoff, after an upload fails for a
 * storage reason (appliance/ internal; used by the applier and sessions). */
#ifndef APPLIANCE_UPLOAD_GATE_H
#define APPLIANCE_UPLOAD_GATE_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "json_out.h"
#include "rpl_error.h"
#include "settings.h"

/* Backoff between check runs while they fail: 1 s doubling up to 30 s. */
#define UPLOAD_GATE_BACKOFF_MIN_MS 1000u
#define UPLOAD_GATE_BACKOFF_MAX_MS 30000u

struct upload_gate;

/* Closed, with its first check due at once. The settings are copied. */
RPL_MUST_CHECK rpl_err upload_gate_create(const struct appliance_settings *s, struct upload_gate **out);
void upload_gate_free(struct upload_gate *g);
/* True when uploads may run. When the gate is closed and a check is due, runs the checks first
 * (blocking, in the caller's thread); *just_opened (may be NULL) is set when this call opened it. */
bool upload_gate_pass(struct upload_gate *g, bool *just_opened);
/* Whether uploads may run now, without running any check (for threads that must not block). */
bool upload_gate_is_open(struct upload_gate *g);
/* Milliseconds until the next check is due (0 when the gate is open or a check is due now). */
uint64_t upload_gate_wait_ms(struct upload_gate *g);
/* An upload failed for a storage reason (what): the gate closes, and its checks run again after
 * the current backoff, which then doubles. */
void upload_gate_failed(struct upload_gate *g, const char *what);
/* An upload went through: the backoff starts again from its minimum. */
void upload_gate_succeeded(struct upload_gate *g);
/* The gate's state for the health roll-up and /metrics (texts cut to fit). */
struct upload_gate_info {
  bool open, checked;         /* checked: the checks ran at least once */
  uint64_t runs, failures;    /* check runs, and those that failed */
  char failed_check[64];      /* the first failed check of the last run, "" when it passed */
  char detail[256], remedy[256];
  char upload_error[256];     /* the storage failure that closed the gate, "" when none */
};
void upload_gate_get_info(struct upload_gate *g, struct upload_gate_info *out);
/* Status: a JSON object "uploads" (j) or one text line (f). */
void upload_gate_status(struct upload_gate *g, struct json_out *j, FILE *f);

#endif
