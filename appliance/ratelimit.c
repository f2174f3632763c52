/* ratelimit.c - token buckets that hold the uploader to its bandwidth limits. */
#include "ratelimit.h"
#include "rpl_clock.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

void rate_limit_init(struct rate_limit *r, uint64_t bytes_per_s)
{
  pthread_mutex_init(&r->lock, NULL);
  r->rate = (double)bytes_per_s;
  /* A quarter second of traffic, at least one whole Put Page: short bursts, an even long run. */
  r->burst = r->rate / 4 > 4194304.0 ? r->rate / 4 : 4194304.0;
  r->tokens = 0;
  r->last_us = rpl_mono_us();
}

void rate_limit_destroy(struct rate_limit *r) { pthread_mutex_destroy(&r->lock); }

bool rate_limit_enabled(const struct rate_limit *r) { return r && r->rate > 0; }

static void refill(struct rate_limit *r)
{
  uint64_t now = rpl_mono_us();
  r->tokens += r->rate * (double)(now - r->last_us) / 1e6;
  if (r->tokens > r->burst)
    r->tokens = r->burst;
  r->last_us = now;
}

uint64_t rate_limit_wait_us(struct rate_limit *r)
{
  if (!rate_limit_enabled(r))
    return 0;
  pthread_mutex_lock(&r->lock);
  refill(r);
  uint64_t w = r->tokens >= 0 ? 0 : (uint64_t)(-r->tokens / r->rate * 1e6) + 1;
  pthread_mutex_unlock(&r->lock);
  return w;
}

void rate_limit_take(struct rate_limit *r, uint64_t n)
{
  if (!rate_limit_enabled(r))
    return;
  pthread_mutex_lock(&r->lock);
  refill(r);
  r->tokens -= (double)n;
  pthread_mutex_unlock(&r->lock);
}

bool rate_limit_parse_mbps(const char *text, unsigned *out)
{
  if (!text || *text < '0' || *text > '9') /* strtoul would take spaces and signs */
    return false;
  char *end;
  errno = 0;
  unsigned long v = strtoul(text, &end, 10);
  if (errno || *end || v > RATELIMIT_MAX_MBPS)
    return false;
  *out = (unsigned)v;
  return true;
}
