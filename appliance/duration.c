/* duration.c - parsing and formatting the durations of settings (retention, point schedule). */
#include "duration.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>

#define HOUR 3600
#define DAY 86400

bool duration_parse(const char *v, size_t len, int64_t max_s, int64_t *out)
{
  if (len == 0 || len > 12 || !isdigit((unsigned char)v[0]))
    return false;
  int64_t n = 0;
  size_t i = 0;
  for (; i < len && isdigit((unsigned char)v[i]); i++)
    n = n * 10 + (v[i] - '0');
  int64_t unit;
  if (i == len)
    unit = n == 0 ? 1 : -1; /* a bare number only as 0 */
  else if (i + 1 != len)
    return false;
  else
    switch (v[i]) {
    case 's': unit = 1; break;
    case 'm': unit = 60; break;
    case 'h': unit = HOUR; break;
    case 'd': unit = DAY; break;
    default: return false;
    }
  if (unit < 0 || n > max_s / unit)
    return false;
  *out = n * unit;
  return true;
}

void duration_format(int64_t s, char *out, size_t outsz)
{
  if (s == 0)
    snprintf(out, outsz, "0");
  else if (s % DAY == 0 && s >= 2 * DAY)
    snprintf(out, outsz, "%" PRId64 "d", s / DAY);
  else if (s % HOUR == 0)
    snprintf(out, outsz, "%" PRId64 "h", s / HOUR);
  else if (s % 60 == 0)
    snprintf(out, outsz, "%" PRId64 "m", s / 60);
  else
    snprintf(out, outsz, "%" PRId64 "s", s);
}
