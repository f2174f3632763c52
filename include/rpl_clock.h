/* rpl_clock.h - the one monotonic clock of both programs: how long things take and when deadlines
 * fall (never the wall clock, which jumps). */
#ifndef RPL_CLOCK_H
#define RPL_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline uint64_t rpl_mono_ns(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline uint64_t rpl_mono_us(void) { return rpl_mono_ns() / 1000u; }
static inline uint64_t rpl_mono_ms(void) { return rpl_mono_ns() / 1000000u; }

#endif
