/* progress.h - a sync's progress as people read it (percent, MB/s, ETA); agent/ internal (control.c,
 * cmd_control.c) and its unit test. */
#ifndef AGENT_PROGRESS_H
#define AGENT_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

struct progress {
  double percent;          /* 0..100 (done beyond total counts as 100) */
  uint64_t bytes_per_s;    /* 0 while unknown */
  int64_t eta_s;           /* seconds left at the rate so far; -1 while unknown */
};

/* The rate is known once some bytes are done and some time passed (at least 200 ms). */
void progress_compute(uint64_t done, uint64_t total, uint64_t elapsed_ms, struct progress *p);

/* Writes "42.0% of 2048 MiB, 315 MB/s, ETA 0:05" into out (always terminated; cut to size).
 * MB are 10^6 bytes, MiB 2^20; ETA is M:SS, or H:MM:SS from one hour; unknown rate: "-- MB/s, ETA --:--".
 * Returns the length it wanted (as snprintf). */
int progress_format(char *out, size_t size, uint64_t done, uint64_t total, uint64_t elapsed_ms);

#endif
