/* duration.h - durations as users write them in settings ("30s", "5m", "1h", "7d"): parsing and the
 * canonical text. Internal header: appliance/ and tests/ only. */
#ifndef APPLIANCE_DURATION_H
#define APPLIANCE_DURATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* len bytes of v as a whole number with s, m, h or d, or a bare 0, into seconds; false when it is
 * not one or exceeds max_s. */
bool duration_parse(const char *v, size_t len, int64_t max_s, int64_t *out);
/* "0", "90s", "30m", "1h", "7d" (days only from 2d: "24h" reads better than "1d"). */
void duration_format(int64_t s, char *out, size_t outsz);

#endif
