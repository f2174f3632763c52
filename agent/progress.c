/* progress.c - percent, rate and ETA of a sync in progress, formatted for status and protect. */
#include "progress.h"

#include <inttypes.h>
#include <stdio.h>

#define MIN_ELAPSED_MS 200

void progress_compute(uint64_t done, uint64_t total, uint64_t elapsed_ms, struct progress *p)
{
  if (done > total)
    done = total;
  p->percent = total ? 100.0 * (double)done / (double)total : 100.0;
  p->bytes_per_s = 0;
  p->eta_s = -1;
  if (done == 0 || elapsed_ms < MIN_ELAPSED_MS)
    return;
  double rate = (double)done * 1000.0 / (double)elapsed_ms;
  p->bytes_per_s = (uint64_t)rate;
  p->eta_s = (int64_t)((double)(total - done) / rate + 0.5);
}

int progress_format(char *out, size_t size, uint64_t done, uint64_t total, uint64_t elapsed_ms)
{
  struct progress p;
  progress_compute(done, total, elapsed_ms, &p);
  char rate[32], eta[32];
  if (p.eta_s < 0) {
    snprintf(rate, sizeof rate, "--");
    snprintf(eta, sizeof eta, "--:--");
  } else {
    snprintf(rate, sizeof rate, "%.0f", (double)p.bytes_per_s / 1e6);
    int64_t s = p.eta_s;
    if (s >= 3600)
      snprintf(eta, sizeof eta, "%" PRId64 ":%02d:%02d", s / 3600, (int)(s / 60 % 60), (int)(s % 60));
    else
      snprintf(eta, sizeof eta, "%d:%02d", (int)(s / 60), (int)(s % 60));
  }
  /* Never shows 100.0% before the last byte. */
  double pct = p.percent;
  if (done < total && pct > 99.9)
    pct = 99.9;
  return snprintf(out, size, "%.1f%% of %" PRIu64 " MiB, %s MB/s, ETA %s", pct, total >> 20, rate, eta);
}
