/* test_retention.c - Description: unit tests of the retention policy (appliance/retention.c): text
 * form and its errors, the keep/drop decision at the tier boundaries, hour/day buckets, the time
 * scale, idempotence, and pruning through the catalog with a delete callback. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "catalog.h"
#include "retention.h"
#include "tmpdir.h"

#define H 3600
#define D 86400

static void test_parse(void **state)
{
  (void)state;
  struct retention_policy p;
  char text[RETENTION_TEXT_MAX];
  assert_int_equal(retention_parse(NULL, &p), RPL_OK);
  assert_int_equal(p.all_s, H);
  assert_int_equal(p.hourly_s, 24 * H);
  assert_int_equal(p.daily_s, 7 * D);
  assert_int_equal(p.time_scale, 1);
  assert_int_equal(retention_parse("", &p), RPL_OK);
  retention_format(&p, text, sizeof text);
  assert_string_equal(text, RETENTION_DEFAULT);
  assert_int_equal(retention_parse("daily=30d,all=90m", &p), RPL_OK);
  assert_int_equal(p.all_s, 90 * 60);
  assert_int_equal(p.hourly_s, 0); /* a missing key: tier off */
  assert_int_equal(p.daily_s, 30 * D);
  retention_format(&p, text, sizeof text);
  assert_string_equal(text, "all=90m,hourly=0,daily=30d");
  assert_int_equal(retention_parse("all=0,hourly=45s", &p), RPL_OK);
  assert_int_equal(p.hourly_s, 45);
  assert_int_equal(retention_parse("all=3650d", &p), RPL_OK);

  static const char *const bad[] = {"all", "all=", "all=1", "all=1w", "all=-1h", "all=1h,all=2h", "weekly=1d",
                                    "all=1h,", ",all=1h", "all=1h;hourly=2h", "all=3651d", "all=99999999999999d",
                                    "all= 1h", "all=1.5h", "ALL=1h"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    rpl_detail_clear();
    assert_int_equal(retention_parse(bad[i], &p), RPL_E_RETENTION_POLICY);
    assert_true(strlen(rpl_detail(RPL_E_RETENTION_POLICY)) > 10);
  }
  assert_non_null(strstr(rpl_strerror(RPL_E_RETENTION_POLICY), "all=1h"));
}

/* Decides and returns keep as a string of 'k' and '.' for easy comparison. */
static void decide(const struct retention_policy *p, int64_t now, const int64_t *t, size_t n, char *out)
{
  bool keep[64];
  retention_decide(p, now, t, n, keep);
  for (size_t i = 0; i < n; i++)
    out[i] = keep[i] ? 'k' : '.';
  out[n] = 0;
}

static void test_all_tier_boundary(void **state)
{
  (void)state;
  struct retention_policy p = {.all_s = H, .time_scale = 1};
  const int64_t now = 1000 * D;
  int64_t t[] = {now - H - 1, now - H, now - 10, now};
  char k[8];
  decide(&p, now, t, 4, k);
  assert_string_equal(k, ".kkk"); /* age exactly 1 h is kept, one second more is not */
}

static void test_newest_always_kept(void **state)
{
  (void)state;
  struct retention_policy p = {.time_scale = 1}; /* every tier off */
  const int64_t now = 1000 * D;
  int64_t t[] = {now - 30 * D, now - 20 * D};
  char k[8];
  decide(&p, now, t, 2, k);
  assert_string_equal(k, ".k");
  int64_t one[] = {now - 400 * D};
  decide(&p, now, one, 1, k);
  assert_string_equal(k, "k");
  decide(&p, now, t, 0, k); /* no points: nothing to do */
  assert_string_equal(k, "");
}

static void test_future_kept(void **state)
{
  (void)state;
  struct retention_policy p = {.time_scale = 1};
  const int64_t now = 1000 * D;
  int64_t t[] = {now - 5 * D, now + 5, now + 60};
  char k[8];
  decide(&p, now, t, 3, k);
  assert_string_equal(k, ".kk"); /* the clock went back: never prune what looks newer than now */
}

static void test_hourly(void **state)
{
  (void)state;
  struct retention_policy p = {.all_s = H, .hourly_s = 24 * H, .time_scale = 1};
  const int64_t now = 1000 * D + 12 * H; /* 12:00 UTC */
  int64_t s[] = {
    now - 24 * H - 1,   /* 11:59:59 the day before, alone in its hour: past the hourly tier */
    now - 24 * H,       /* 12:00:00 the day before: exactly 24 h, newest of its hour: kept */
    now - 5 * H + 10,   /* 07:00:10 */
    now - 5 * H + 3599, /* 07:59:59: newest of hour 07 */
    now - 4 * H,        /* 08:00:00: alone in hour 08 */
    now - 2 * H - 1,    /* 09:59:59: newest of hour 09 */
    now - H - 2,        /* 10:59:58 */
    now - H - 1,        /* 10:59:59: newest of hour 10 (age 1 h + 1 s: hourly tier) */
    now - H,            /* 11:00:00: age exactly 1 h: all tier */
    now - 1,
  };
  char k[16];
  decide(&p, now, s, 10, k);
  /* 10:59:58 is not the newest of hour 10 (10:59:59 is) and older than 1 h: dropped */
  assert_string_equal(k, ".k.kkk.kkk");
}

static void test_daily(void **state)
{
  (void)state;
  struct retention_policy p = {.all_s = H, .hourly_s = 24 * H, .daily_s = 7 * D, .time_scale = 1};
  const int64_t now = 1000 * D + 12 * H;
  int64_t t[] = {
    992 * D + 6 * H,         /* day 992: alone, age > 7 d */
    993 * D + 1 * H,         /* day 993 */
    now - 7 * D - 1,         /* day 993 at 11:59:59 */
    993 * D + 12 * H,        /* day 993, newest of its day, age exactly 7 d: kept */
    995 * D + 3 * H,         /* day 995 */
    995 * D + 23 * H + 3599, /* newest of day 995 */
    998 * D + 23 * H,        /* day 998, newest: kept (daily) */
    999 * D + 11 * H,        /* day 999: hour 11, age 25 h: not hourly; day 999 newest is later */
    999 * D + 13 * H,        /* age 23 h: hourly tier, newest of its hour */
    999 * D + 23 * H,        /* newest of day 999 */
    now,
  };
  char k[16];
  decide(&p, now, t, sizeof t / sizeof *t, k);
  assert_string_equal(k, "...k.kk.kkk");
}

static void test_time_scale(void **state)
{
  (void)state;
  /* scale 3600: one real second counts as one hour; "all=2h" keeps 2 real seconds */
  struct retention_policy p = {.all_s = 2 * H, .hourly_s = 6 * H, .daily_s = 0, .time_scale = 3600};
  const int64_t now = 1000000;
  int64_t t[] = {now - 9, now - 6, now - 6, now - 5, now - 3, now - 2, now - 2, now};
  char k[16];
  decide(&p, now, t, 8, k);
  /* now-9: 9 "hours" old, past 6: dropped; the two at now-6 share an "hour": the later kept; now-5,
   * now-3 kept (hourly); now-2 (twice) within 2 "hours": kept */
  assert_string_equal(k, "..kkkkkk");
  struct retention_policy unscaled = p;
  unscaled.time_scale = 1;
  decide(&unscaled, now, t, 8, k);
  assert_string_equal(k, "kkkkkkkk");
}

static void test_idempotent(void **state)
{
  (void)state;
  struct retention_policy p = {.all_s = H, .hourly_s = 24 * H, .daily_s = 7 * D, .time_scale = 1};
  const int64_t now = 2000 * D + 7 * H + 123;
  int64_t t[64];
  size_t n = 0;
  for (int64_t x = now - 10 * D; n < 64; x += 4 * H + 1234 * (int64_t)(n % 5))
    t[n++] = x < now ? x : now;
  bool keep[64], again[64];
  retention_decide(&p, now, t, n, keep);
  int64_t kept[64];
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (keep[i])
      kept[m++] = t[i];
  assert_true(m > 0 && m < n);
  retention_decide(&p, now, kept, m, again);
  for (size_t i = 0; i < m; i++)
    assert_true(again[i]);
}

/* ---- pruning through the catalog ---- */

struct dels {
  int calls;
  int64_t fail_id; /* this point's delete fails */
  char seen[512];
};

static rpl_err del_cb(void *ctx, const struct catalog_point *p)
{
  struct dels *d = ctx;
  d->calls++;
  char one[CATALOG_MAX_SNAPSHOT_ID + 2];
  snprintf(one, sizeof one, "%s;", p->snapshot_id);
  strcat(d->seen, one);
  if (p->id == d->fail_id)
    return RPL_E_BLOB_THROTTLED;
  return p->cycle == 3 ? RPL_E_BLOB_NOT_FOUND : RPL_OK; /* gone already counts as deleted */
}

static void test_prune(void **state)
{
  (void)state;
  char dir[PATH_MAX], db[PATH_MAX + 16];
  assert_int_equal(tmpdir_create(dir, sizeof dir, "retention"), 0);
  snprintf(db, sizeof db, "%s/catalog.db", dir);
  struct catalog *cat;
  assert_int_equal(catalog_open(db, NULL, &cat), RPL_OK);
  uint8_t k[PROTO_SECRET_SIZE];
  memset(k, 7, sizeof k);
  assert_int_equal(catalog_regkey_add(cat, k, 1, 0), RPL_OK);
  struct catalog_agent a = {.registered_time = 1};
  memset(a.id, 1, sizeof a.id);
  snprintf(a.hostname, sizeof a.hostname, "src01");
  snprintf(a.cert_fingerprint, sizeof a.cert_fingerprint, "sha256:01");
  assert_int_equal(catalog_register_agent(cat, k, &a, 2), RPL_OK);
  struct catalog_disk d = {.size_bytes = 1 << 20, .sector_size = 512};
  memset(d.id, 2, sizeof d.id);
  memcpy(d.agent_id, a.id, sizeof d.id);
  snprintf(d.name, sizeof d.name, "sdb");
  assert_int_equal(catalog_disk_upsert(cat, &d), RPL_OK);

  const int64_t now = 1000 * D;
  /* cycles 1..6 at these times; all tiers off but "all=1h": keeps 5 and 6 only */
  int64_t times[] = {now - 9 * H, now - 8 * H, now - 7 * H, now - 6 * H, now - 30, now};
  int64_t ids[6];
  for (int i = 0; i < 6; i++) {
    struct catalog_point cp = {.cycle = (uint64_t)i + 1, .time = times[i], .has_snapshot = i != 1};
    memcpy(cp.disk_id, d.id, sizeof cp.disk_id);
    snprintf(cp.snapshot_id, sizeof cp.snapshot_id, "snap-%d", i + 1);
    assert_int_equal(catalog_point_add(cat, &cp, &ids[i]), RPL_OK);
  }
  struct retention_policy p = {.all_s = H, .time_scale = 1};
  struct dels dl = {.fail_id = ids[3]};
  struct retention_result r;
  assert_int_equal(retention_prune(cat, d.id, &p, now, del_cb, &dl, &r), RPL_OK);
  assert_int_equal(r.considered, 5); /* point 2 has no image: not considered */
  assert_int_equal(r.kept, 2);
  assert_int_equal(r.pruned, 2);     /* 1, and 3 (already gone) */
  assert_int_equal(r.failed, 1);     /* 4: tried again next time */
  assert_string_equal(dl.seen, "snap-1;snap-3;snap-4;");
  struct catalog_point got;
  assert_int_equal(catalog_point_get(cat, ids[0], &got), RPL_OK);
  assert_false(got.has_snapshot); /* the row stays, without an image */
  assert_int_equal(catalog_point_get(cat, ids[3], &got), RPL_OK);
  assert_true(got.has_snapshot);
  assert_string_equal(got.snapshot_id, "snap-4");
  assert_int_equal(catalog_point_get(cat, ids[5], &got), RPL_OK);
  assert_true(got.has_snapshot);

  /* the next run deletes only what is left to drop */
  dl = (struct dels){.fail_id = -1};
  assert_int_equal(retention_prune(cat, d.id, &p, now, del_cb, &dl, &r), RPL_OK);
  assert_int_equal(r.considered, 3);
  assert_int_equal(r.pruned, 1);
  assert_int_equal(r.failed, 0);
  assert_string_equal(dl.seen, "snap-4;");
  dl = (struct dels){.fail_id = -1};
  assert_int_equal(retention_prune(cat, d.id, &p, now, del_cb, &dl, &r), RPL_OK);
  assert_int_equal(dl.calls, 0);
  assert_int_equal(r.kept, 2);
  catalog_close(cat);
  tmpdir_remove(dir);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_parse),          cmocka_unit_test(test_all_tier_boundary),
    cmocka_unit_test(test_newest_always_kept), cmocka_unit_test(test_future_kept),
    cmocka_unit_test(test_hourly),         cmocka_unit_test(test_daily),
    cmocka_unit_test(test_time_scale),     cmocka_unit_test(test_idempotent),
    cmocka_unit_test(test_prune),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
