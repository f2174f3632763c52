/* settings.h - the appliance's settings in its state directory (appliance/ internal; used by the
 * cmd_*.c files): a key=value file, mode 0600 because it holds the storage credentials. */
#ifndef APPLIANCE_SETTINGS_H
#define APPLIANCE_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>

#include "rpl_error.h"
#include "state_files.h"

#define SETTINGS_DEFAULT_CONTAINER "replicas"
#define SETTINGS_DEFAULT_LEASE_S 60
#define SETTINGS_MIN_LEASE_S     15 /* Azure's range for a fixed-duration lease */
#define SETTINGS_MAX_LEASE_S     60
#define SETTINGS_MAX_IN_FLIGHT   256
#define SETTINGS_MAX_WEBHOOKS    4   /* each has its own queue and delivery state: a handful is what operators wire */

struct appliance_settings {
  char storage[8192];           /* an Azure connection string, or "file:/abs/dir" */
  char container[64];
  char private_dns_zone[4096];  /* absolute path, or "" for the system resolver */
  char ca_file[4096];           /* absolute path, or "" for the system CAs */
  char proxy[1024];             /* "http://[user:password@]host:port", or "" */
  char proxy_bypass[1024];
  char identity_endpoint[1024]; /* "" = the IMDS default */
  bool require_private_endpoint;
  bool allow_http_emulator;     /* http:// accepted for a storage emulator on this machine (loopback) */
  unsigned max_in_flight;
  char retention[128];          /* retention.h text ("all=1h,hourly=24h,daily=7d"); "" = the default */
  char points[64];              /* schedule.h text ("crash=5m,app=1h"); "" = the default */
  char key_ttl[32];             /* registration keys' life, duration.h text ("24h"); "" = the default */
  char alerts[128];             /* health thresholds, thresholds.h text; "" = the default */
  char webhook[SETTINGS_MAX_WEBHOOKS][1024]; /* https:// URLs health transitions are POSTed to; "" = unused */
  char webhook_ca[4096];        /* PEM file the webhooks' certificates must chain to (pinned); "" = the system CAs */
  char upload_check[8];         /* what each Put Page carries for the storage to verify: none, md5, crc64; "" = none */
  unsigned lease_duration_s;    /* the page blobs' lease, 15-60 s */
  char lease_id[40];            /* runtime only, never in the file: the lease id this appliance proposes
                                 * (lease.h, from STATE/lease-id); "" = a random one */
  unsigned upload_limit_mbps;   /* appliance-wide upload limit, MB/s (10^6 bytes); 0 = none */
  unsigned agent_limit_mbps;    /* upload limit of each agent's disks together, MB/s; 0 = none */
};

void settings_defaults(struct appliance_settings *s);
/* Reads STATE/appliance.conf; RPL_E_NOT_FOUND when init has not run there. */
RPL_MUST_CHECK rpl_err settings_load(const char *state_dir, struct appliance_settings *s);
/* Creates state_dir (0700) if needed and replaces the file atomically (0600, fsync, rename). */
RPL_MUST_CHECK rpl_err settings_save(const char *state_dir, const struct appliance_settings *s);
/* True when storage is a local directory ("file:DIR"). */

#endif
