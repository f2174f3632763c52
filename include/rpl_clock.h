/* rpl_clock.h - the clocks of both programs: the monotonic one for how long things take and when
 * deadlines fall, and the wall clock only for times that outlive the process (points, schedules). */
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

/* Unix time in milliseconds: for times recorded or shown (a point's time, when the next is due). */
static inline uint64_t rpl_unix_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* The wall-clock time ms milliseconds from now: the absolute timeout pthread_cond_timedwait takes
 * (its condition variables run on CLOCK_REALTIME). */
static inline struct timespec rpl_realtime_in_ms(uint64_t ms)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += (time_t)(ms / 1000);
  ts.tv_nsec += (long)(ms % 1000) * 1000000L;
  if (ts.tv_nsec >= 1000000000L) {
    ts.tv_sec++;
    ts.tv_nsec -= 1000000000L;
  }
  return ts;
}

#endif
