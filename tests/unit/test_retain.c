/* test_retain.c - Description: the agent keeps the blocks of acknowledged cycles until STORED, and
 * answers a takeover's replay only when it knows every cycle after the storage's last one. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "retain.h"

static struct cbt_extents set_of(uint64_t off, uint64_t len)
{
  struct cbt_extents s;
  cbt_extents_init(&s, 16, 0);
  assert_int_equal(cbt_extents_add(&s, off, len), RPL_OK);
  return s;
}

static uint64_t bytes_after(const struct retain *r, uint64_t base)
{
  struct cbt_extents out;
  cbt_extents_init(&out, 1024, 0);
  assert_int_equal(retain_after(r, base, &out), RPL_OK);
  uint64_t b = cbt_extents_bytes(&out);
  cbt_extents_free(&out);
  return b;
}

/* Nothing is known before the first ACK of this process; then every base from the cycle before it. */
static void test_known_from_first_ack(void **state)
{
  (void)state;
  struct retain r = {0};
  assert_false(retain_complete(&r, 0));
  assert_false(retain_complete(&r, 100));
  struct cbt_extents a = set_of(0, 4096), b = set_of(8192, 4096);
  retain_acked(&r, 10, &a, false);
  retain_acked(&r, 11, &b, false);
  assert_false(retain_complete(&r, 8));    /* cycle 9 was acknowledged before this process */
  assert_true(retain_complete(&r, 9));
  assert_true(retain_complete(&r, 11));
  assert_int_equal(bytes_after(&r, 9), 8192);
  assert_int_equal(bytes_after(&r, 10), 4096);
  assert_int_equal(bytes_after(&r, 11), 0);
  retain_stored(&r, 10);                   /* the storage holds 10: only 11's blocks are kept */
  assert_int_equal(r.n, 1);
  assert_int_equal(bytes_after(&r, 9), 4096);
  assert_true(retain_complete(&r, 10));
  cbt_extents_free(&a);
  cbt_extents_free(&b);
  retain_free(&r);
}

/* A new appliance numbers from where its storage is: its cycle n replaces the kept ones from n on. */
static void test_renumbered_after_takeover(void **state)
{
  (void)state;
  struct retain r = {0};
  struct cbt_extents s[4] = {set_of(0, 512), set_of(1024, 512), set_of(2048, 512), set_of(0, 65536)};
  retain_acked(&r, 5, &s[0], false);
  retain_acked(&r, 6, &s[1], false);
  retain_acked(&r, 7, &s[2], false);
  assert_true(retain_complete(&r, 5));     /* the storage at 5: 6 and 7 are replayed */
  assert_int_equal(bytes_after(&r, 5), 1024);
  retain_acked(&r, 6, &s[3], false);       /* the replay, numbered 6 by the new appliance */
  assert_int_equal(r.n, 2);
  assert_int_equal(r.c[1].cycle, 6);
  assert_int_equal(bytes_after(&r, 5), 65536);
  for (int i = 0; i < 4; i++)
    cbt_extents_free(&s[i]);
  retain_free(&r);
}

/* A cycle whose blocks are not known (past the sender's limit) makes a replay from before it impossible. */
static void test_incomplete_cycle(void **state)
{
  (void)state;
  struct retain r = {0};
  struct cbt_extents a = set_of(0, 4096);
  retain_acked(&r, 3, &a, false);
  retain_acked(&r, 4, NULL, true);
  retain_acked(&r, 5, &a, false);
  assert_false(retain_complete(&r, 2));
  assert_false(retain_complete(&r, 3));
  assert_true(retain_complete(&r, 4));
  cbt_extents_free(&a);
  retain_free(&r);
}

/* Extents in any order, overlapping across cycles: the replay's set is sorted and joined. */
static void test_unordered_and_overlapping(void **state)
{
  (void)state;
  struct retain r = {0};
  struct cbt_extents a, b;
  cbt_extents_init(&a, 16, 0);
  cbt_extents_init(&b, 16, 0);
  assert_int_equal(retain_append(&a, 65536, 4096), RPL_OK);
  assert_int_equal(retain_append(&a, 0, 8192), RPL_OK);     /* a point's second read: lower offset */
  assert_int_equal(retain_append(&b, 4096, 8192), RPL_OK);  /* overlaps a's first extent */
  assert_int_equal(retain_append(&b, 69632, 4096), RPL_OK); /* adjacent to a's 65536 + 4096 */
  retain_acked(&r, 1, &a, false);
  retain_acked(&r, 2, &b, false);
  struct cbt_extents out;
  cbt_extents_init(&out, 16, 0);
  assert_int_equal(retain_after(&r, 0, &out), RPL_OK);
  assert_int_equal(out.count, 2);
  assert_true(out.items[0].offset == 0 && out.items[0].length == 12288);
  assert_true(out.items[1].offset == 65536 && out.items[1].length == 8192);
  cbt_extents_free(&out);
  cbt_extents_free(&a);
  cbt_extents_free(&b);
  retain_free(&r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_known_from_first_ack),
    cmocka_unit_test(test_renumbered_after_takeover),
    cmocka_unit_test(test_incomplete_cycle),
    cmocka_unit_test(test_unordered_and_overlapping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
