/* thresholds.c - parses and formats the health thresholds (thresholds.h). */
#include "thresholds.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "duration.h"

enum key { K_RPO_WARN, K_RPO_CRIT, K_POINT_AGE, K_AGENT_AWAY, K_CACHE, K_COUNT };
static const char *const key_names[K_COUNT] = {"rpo-warn", "rpo-crit", "point-age", "agent-away", "cache"};

static void defaults(struct thresholds *t)
{
  memset(t, 0, sizeof *t); /* padding too: a copy compares equal */
  t->agent_away_s = 90;
  t->cache_pct = 80;
}

/* One KEY=VALUE part into t. */
static rpl_err parse_part(const char *part, const char *eq, size_t vlen, enum key k, struct thresholds *t)
{
  const char *v = eq + 1;
  bool is_auto = vlen == 4 && !memcmp(v, "auto", 4), is_off = vlen == 3 && !memcmp(v, "off", 3);
  if (k == K_CACHE) {
    char num[8];
    if (!vlen || vlen >= sizeof num || strspn(v, "0123456789") < vlen)
      return rpl_fail(RPL_E_ALERT_THRESHOLDS, "alert thresholds: '%s': cache is a percentage from 1 to 100", part);
    memcpy(num, v, vlen);
    num[vlen] = '\0';
    long n = strtol(num, NULL, 10);
    if (n < 1 || n > 100)
      return rpl_fail(RPL_E_ALERT_THRESHOLDS, "alert thresholds: '%s': cache is a percentage from 1 to 100", part);
    t->cache_pct = (unsigned)n;
    return RPL_OK;
  }
  int64_t s = 0;
  if (is_auto && (k == K_RPO_WARN || k == K_RPO_CRIT))
    s = 0;
  else if (is_off && k == K_POINT_AGE)
    s = 0;
  else if (!duration_parse(v, vlen, THRESHOLDS_MAX_S, &s) || s == 0)
    return rpl_fail(RPL_E_ALERT_THRESHOLDS,
                    "alert thresholds: bad value in '%s' (a whole number with s, m, h or d, at most 366d%s)", part,
                    k == K_RPO_WARN || k == K_RPO_CRIT ? "; or auto" : k == K_POINT_AGE ? "; or off" : "");
  if (k == K_AGENT_AWAY && s < THRESHOLDS_AGENT_AWAY_MIN_S)
    return rpl_fail(RPL_E_ALERT_THRESHOLDS, "alert thresholds: '%s' is under %ds", part, THRESHOLDS_AGENT_AWAY_MIN_S);
  int64_t *slot[] = {&t->rpo_warn_s, &t->rpo_crit_s, &t->point_age_s, &t->agent_away_s};
  *slot[k] = s;
  return RPL_OK;
}

rpl_err thresholds_parse(const char *text, struct thresholds *out)
{
  defaults(out);
  if (!text || !*text)
    return RPL_OK;
  if (strlen(text) >= THRESHOLDS_TEXT_MAX)
    return rpl_fail(RPL_E_ALERT_THRESHOLDS, "alert thresholds too long (at most %d characters)", THRESHOLDS_TEXT_MAX - 1);
  bool seen[K_COUNT] = {false};
  for (const char *p = text;;) {
    const char *end = strchr(p, ',');
    size_t len = end ? (size_t)(end - p) : strlen(p);
    char part[THRESHOLDS_TEXT_MAX];
    snprintf(part, sizeof part, "%.*s", (int)len, p);
    const char *eq = memchr(p, '=', len);
    if (!eq)
      return rpl_fail(RPL_E_ALERT_THRESHOLDS, "alert thresholds: '%s' is not KEY=VALUE (%s)", part, THRESHOLDS_DEFAULT);
    size_t klen = (size_t)(eq - p);
    int k = -1;
    for (int i = 0; i < K_COUNT; i++)
      if (strlen(key_names[i]) == klen && !memcmp(p, key_names[i], klen))
        k = i;
    if (k < 0)
      return rpl_fail(RPL_E_ALERT_THRESHOLDS,
                      "alert thresholds: unknown key in '%s' (the keys are rpo-warn, rpo-crit, point-age, agent-away, cache)",
                      part);
    if (seen[k])
      return rpl_fail(RPL_E_ALERT_THRESHOLDS, "alert thresholds: '%s' repeats a key", part);
    seen[k] = true;
    rpl_err e = parse_part(part, eq, len - klen - 1, (enum key)k, out);
    if (e)
      return e;
    if (!end)
      break;
    p = end + 1;
  }
  if (out->rpo_warn_s && out->rpo_crit_s && out->rpo_crit_s < out->rpo_warn_s)
    return rpl_fail(RPL_E_ALERT_THRESHOLDS, "alert thresholds: rpo-crit is shorter than rpo-warn");
  return RPL_OK;
}

static void format_s(int64_t s, const char *zero, char *out, size_t outsz)
{
  if (s)
    duration_format(s, out, outsz);
  else
    snprintf(out, outsz, "%s", zero);
}

void thresholds_format(const struct thresholds *t, char *out, size_t outsz)
{
  char w[24], c[24], p[24], a[24];
  format_s(t->rpo_warn_s, "auto", w, sizeof w);
  format_s(t->rpo_crit_s, "auto", c, sizeof c);
  format_s(t->point_age_s, "off", p, sizeof p);
  format_s(t->agent_away_s, "90s", a, sizeof a);
  snprintf(out, outsz, "rpo-warn=%s,rpo-crit=%s,point-age=%s,agent-away=%s,cache=%u", w, c, p, a, t->cache_pct);
}

void thresholds_rpo_limits(const struct thresholds *t, uint64_t rpo_target_ms, int64_t *warn_s, int64_t *crit_s)
{
  int64_t w = (int64_t)(rpo_target_ms * THRESHOLDS_RPO_WARN_FACTOR / 1000);
  int64_t c = (int64_t)(rpo_target_ms * THRESHOLDS_RPO_CRIT_FACTOR / 1000);
  w = w < THRESHOLDS_RPO_WARN_FLOOR_S ? THRESHOLDS_RPO_WARN_FLOOR_S : w;
  c = c < THRESHOLDS_RPO_CRIT_FLOOR_S ? THRESHOLDS_RPO_CRIT_FLOOR_S : c;
  *warn_s = t->rpo_warn_s ? t->rpo_warn_s : w;
  *crit_s = t->rpo_crit_s ? t->rpo_crit_s : c;
  if (*crit_s < *warn_s) /* an explicit warn over the automatic crit: crit follows it */
    *crit_s = *warn_s;
}
