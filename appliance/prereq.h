/* prereq.h - the storage path's prerequisites as `replication-appliance check` reports them and the
 * daemon gates its uploads on (appliance/ internal; used by cmd_check.c and upload_gate.c). */
#ifndef APPLIANCE_PREREQ_H
#define APPLIANCE_PREREQ_H

#include <stdbool.h>
#include <stddef.h>

#include "settings.h"

#define PREREQ_MAX 8

struct prereq_item {
  const char *name;   /* "private DNS path", "TCP reach", "proxy", "TLS verification", "authorization",
                         "time skew", "storage settings" or "replica directory" (static strings) */
  bool pass;
  char detail[1024];  /* what was found */
  char remedy[512];   /* how to fix it ("" when it passed) */
};

struct prereq_report {
  struct prereq_item items[PREREQ_MAX];
  size_t n;
};

/* Runs every prerequisite of s's storage in order (blocking: at most a few network round trips,
 * each bounded by a 30 s timeout); a later one that cannot be tried is reported failed, naming the
 * earlier one to fix first. Never logs a secret. */
void prereq_run(const struct appliance_settings *s, struct prereq_report *r);
/* The backends' own checks (store_ops.check): a replica directory; the Azure path (DNS and private
 * endpoint, TCP, proxy, TLS, authorization, time skew). */
void prereq_check_file_storage(const struct appliance_settings *s, struct prereq_report *r);
void prereq_check_azure(const struct appliance_settings *s, struct prereq_report *r);
/* How many failed. */
size_t prereq_failed(const struct prereq_report *r);
/* The first failed one (the one to fix first), or NULL. */
const struct prereq_item *prereq_first_failure(const struct prereq_report *r);

#endif
