/* ratelimit.h - token buckets for the uploader's bandwidth limits (the appliance-wide one and one
 * per agent) (appliance/ internal; used by the applier (disks.c, applier.c) and uploader.c). */
#ifndef APPLIANCE_RATELIMIT_H
#define APPLIANCE_RATELIMIT_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Megabytes (10^6 bytes) per second, as the settings and options take them. */
#define RATELIMIT_MAX_MBPS 100000u

/* A bucket refilled at rate bytes per second, holding at most burst bytes. Taking may drive it
 * below zero (a 4 MiB Put Page is taken whole); the next taker waits until it is back to zero, so
 * the long-run rate is the limit. Thread-safe. A rate of 0 means no limit. */
struct rate_limit {
  pthread_mutex_t lock;
  double rate, burst, tokens;
  uint64_t last_us;
};

void rate_limit_init(struct rate_limit *r, uint64_t bytes_per_s);
void rate_limit_destroy(struct rate_limit *r);
bool rate_limit_enabled(const struct rate_limit *r);
/* Microseconds until the bucket is no longer in debt (0: take now). NULL or unlimited: 0. */
uint64_t rate_limit_wait_us(struct rate_limit *r);
/* Takes n bytes (NULL or unlimited: nothing). */
void rate_limit_take(struct rate_limit *r, uint64_t n);
/* Parses a limit in MB/s: a whole number 0..RATELIMIT_MAX_MBPS (0 = no limit). */
bool rate_limit_parse_mbps(const char *text, unsigned *out);

#endif
