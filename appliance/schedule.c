/* schedule.c - the recovery-point schedule: its text form and when a kind of point is next due. */
#include "schedule.h"

#include <stdio.h>
#include <string.h>

#include "duration.h"

static const char *const kind_names[SCHEDULE_KINDS] = {"crash", "app"};
static const int64_t kind_defaults[SCHEDULE_KINDS] = {300, 3600};

const char *schedule_kind_name(enum schedule_kind k)
{
  return (unsigned)k < SCHEDULE_KINDS ? kind_names[k] : "unknown";
}

rpl_err schedule_parse(const char *text, struct point_schedule *out)
{
  memset(out, 0, sizeof *out);
  out->time_scale = 1;
  memcpy(out->every_s, kind_defaults, sizeof kind_defaults);
  if (!text || !*text)
    return RPL_OK;
  if (strlen(text) >= SCHEDULE_TEXT_MAX)
    return rpl_fail(RPL_E_POINT_SCHEDULE, "point schedule too long (at most %d characters)", SCHEDULE_TEXT_MAX - 1);
  bool seen[SCHEDULE_KINDS] = {false, false};
  const char *p = text;
  for (;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char part[SCHEDULE_TEXT_MAX];
    snprintf(part, sizeof part, "%.*s", (int)len, p);
    const char *eq = memchr(p, '=', len);
    if (!eq)
      return rpl_fail(RPL_E_POINT_SCHEDULE, "point schedule: '%s' is not KIND=DURATION (crash=5m,app=1h)", part);
    size_t klen = (size_t)(eq - p), vlen = len - klen - 1;
    int k = -1;
    for (int i = 0; i < SCHEDULE_KINDS; i++)
      if (strlen(kind_names[i]) == klen && !memcmp(p, kind_names[i], klen))
        k = i;
    if (k < 0)
      return rpl_fail(RPL_E_POINT_SCHEDULE, "point schedule: unknown kind in '%s' (the kinds are crash and app)", part);
    if (seen[k])
      return rpl_fail(RPL_E_POINT_SCHEDULE, "point schedule: '%s' repeats a kind", part);
    seen[k] = true;
    int64_t v;
    if (vlen == 3 && !memcmp(eq + 1, "off", 3))
      v = 0;
    else if (!duration_parse(eq + 1, vlen, SCHEDULE_MAX_S, &v))
      return rpl_fail(RPL_E_POINT_SCHEDULE,
                      "point schedule: bad duration in '%s' (a whole number with s, m, h or d, at most 366d; or off)", part);
    else if (v && v < SCHEDULE_MIN_S)
      return rpl_fail(RPL_E_POINT_SCHEDULE, "point schedule: '%s' is more often than every %ds", part, SCHEDULE_MIN_S);
    out->every_s[k] = v;
    if (!end)
      break;
    p = end + 1;
  }
  return RPL_OK;
}

void schedule_format(const struct point_schedule *s, char *out, size_t outsz)
{
  char v[SCHEDULE_KINDS][24];
  for (int k = 0; k < SCHEDULE_KINDS; k++) {
    if (s->every_s[k])
      duration_format(s->every_s[k], v[k], sizeof v[k]);
    else
      snprintf(v[k], sizeof v[k], "off");
  }
  snprintf(out, outsz, "crash=%s,app=%s", v[0], v[1]);
}

uint64_t schedule_period_ms(const struct point_schedule *s, enum schedule_kind k)
{
  uint32_t scale = s->time_scale ? s->time_scale : 1;
  return (uint64_t)s->every_s[k] * 1000 / scale;
}

int64_t schedule_next_due(const struct point_schedule *s, enum schedule_kind k, int64_t last_ms, int64_t now_ms)
{
  uint64_t period = schedule_period_ms(s, k);
  if (!period)
    return 0;
  int64_t due = last_ms > 0 ? last_ms + (int64_t)period : now_ms; /* never: as soon as it can */
  return due > now_ms ? due : now_ms;
}
