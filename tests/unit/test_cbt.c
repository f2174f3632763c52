/* test_cbt.c - Description: the tracker's user-side logic without a kernel: extent sets (coalescing,
 * caps), the three-level bitmap (set, find, fold, clear, count against a plain reference), the
 * per-device record (text round trip, corrupt input, resync events and exact acknowledgement), and
 * the JSON writer's escaping. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "cbt.h"
#include "cbt_bitmap.h"
#include "cbt_state.h"
#include "json_out.h"

static void test_extents_coalesce_and_caps(void **state)
{
  struct cbt_extents set;
  cbt_extents_init(&set, 3, 8192);
  assert_int_equal(cbt_extents_add(&set, 0, 4096), RPL_OK);
  assert_int_equal(cbt_extents_add(&set, 4096, 4096), RPL_OK); /* adjacent: coalesced */
  assert_int_equal(set.count, 1);
  assert_int_equal(set.items[0].length, 8192);
  assert_int_equal(cbt_extents_add(&set, 8192, 4096), RPL_OK); /* would exceed max_length: new extent */
  assert_int_equal(set.count, 2);
  assert_int_equal(cbt_extents_add(&set, 100000, 512), RPL_OK);
  assert_int_equal(cbt_extents_add(&set, 200000, 512), RPL_E_LIMIT); /* limit 3 */
  assert_int_equal(set.count, 3);
  assert_int_equal(cbt_extents_add(&set, 100512, 512), RPL_OK); /* coalescing needs no new slot */
  assert_int_equal(cbt_extents_add(&set, 50, 10), RPL_E_INVALID_ARGUMENT); /* out of order */
  assert_int_equal(cbt_extents_add(&set, 300000, 0), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(cbt_extents_add(&set, 300000, 8193), RPL_E_INVALID_ARGUMENT); /* longer than the cap */
  assert_int_equal(cbt_extents_bytes(&set), 8192 + 4096 + 1024);
  cbt_extents_clear(&set);
  assert_int_equal(set.count, 0);
  cbt_extents_free(&set);
  cbt_extents_init(&set, 0, 0);
  assert_int_equal(set.limit, 1);
  cbt_extents_init(&set, SIZE_MAX, 0);
  assert_int_equal(set.limit, CBT_EXTENTS_LIMIT_MAX);
}

/* The bitmap against a byte-per-block reference, on sizes around word and summary boundaries. */
static void check_against_reference(uint64_t nr_blocks, unsigned seed)
{
  struct cbt_layout l;
  cbt_layout_init(&l, nr_blocks);
  assert_true(l.l0_words * 64 >= nr_blocks);
  assert_true(l.l1_words * 64 >= l.l0_words);
  assert_true(l.l2_words * 64 >= l.l1_words);
  uint64_t *a = calloc(l.buffer_words, 8), *b = calloc(l.buffer_words, 8);
  unsigned char *ref = calloc(nr_blocks, 1);
  assert_non_null(a);
  assert_non_null(b);
  assert_non_null(ref);
  srandom(seed);
  int ranges = 1 + (int)(random() % 40);
  for (int i = 0; i < ranges; i++) {
    uint64_t first = (uint64_t)random() % nr_blocks;
    uint64_t len = 1 + (uint64_t)random() % (random() % 4 == 0 ? 5000 : 70);
    uint64_t last = first + len - 1 < nr_blocks ? first + len - 1 : nr_blocks - 1;
    /* half the marks go to b, to test fold */
    cbt_bitmap_set(i % 2 ? b : a, &l, first, last);
    for (uint64_t x = first; x <= last; x++)
      ref[x] = 1;
  }
  uint64_t expected = 0;
  for (uint64_t x = 0; x < nr_blocks; x++)
    expected += ref[x];
  assert_int_equal(cbt_bitmap_count(a, b, &l), expected);
  /* or: the union into a copy of a, b untouched. */
  uint64_t *u = calloc(l.buffer_words, sizeof *u);
  assert_non_null(u);
  memcpy(u, a, l.buffer_words * sizeof *u);
  uint64_t b_blocks = cbt_bitmap_count(b, NULL, &l);
  cbt_bitmap_or(u, b, &l);
  assert_int_equal(cbt_bitmap_count(u, NULL, &l), expected);
  assert_int_equal(cbt_bitmap_count(b, NULL, &l), b_blocks);
  free(u);
  cbt_bitmap_fold(a, b, &l);
  assert_int_equal(cbt_bitmap_count(b, NULL, &l), 0);
  for (uint64_t w = 0; w < l.buffer_words; w++)
    assert_int_equal(b[w], 0); /* fold clears the source entirely */
  assert_int_equal(cbt_bitmap_count(a, NULL, &l), expected);

  /* Walking runs with next_set / next_clear visits exactly the reference's runs. */
  uint64_t pos = 0, seen = 0;
  for (;;) {
    uint64_t s = cbt_bitmap_next_set(a, &l, pos);
    uint64_t ref_s = pos;
    while (ref_s < nr_blocks && !ref[ref_s])
      ref_s++;
    assert_int_equal(s, ref_s);
    if (s >= nr_blocks)
      break;
    uint64_t e = cbt_bitmap_next_clear(a, &l, s);
    uint64_t ref_e = s;
    while (ref_e < nr_blocks && ref[ref_e])
      ref_e++;
    assert_int_equal(e, ref_e);
    seen += e - s;
    pos = e;
  }
  assert_int_equal(seen, expected);
  /* Starting in the middle of a run. */
  for (int i = 0; i < 50; i++) {
    uint64_t from = (uint64_t)random() % nr_blocks;
    uint64_t ref_s = from;
    while (ref_s < nr_blocks && !ref[ref_s])
      ref_s++;
    assert_int_equal(cbt_bitmap_next_set(a, &l, from), ref_s);
  }
  cbt_bitmap_clear(a, &l);
  for (uint64_t w = 0; w < l.buffer_words; w++)
    assert_int_equal(a[w], 0);
  assert_int_equal(cbt_bitmap_next_set(a, &l, 0), nr_blocks);
  free(a);
  free(b);
  free(ref);
}

static void test_bitmap_matches_reference(void **state)
{
  static const uint64_t sizes[] = {1, 63, 64, 65, 4095, 4096, 4097, 262143, 262144, 262145, 300000, 1 << 20};
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++)
    for (unsigned seed = 1; seed <= 8; seed++)
      check_against_reference(sizes[i], seed * 7919u + (unsigned)i);
}

static void test_bitmap_stale_summary_bits(void **state)
{
  /* A summary bit whose word is clear (left by a fold or clear interrupted by kill -9) is skipped. */
  struct cbt_layout l;
  cbt_layout_init(&l, 1 << 20);
  uint64_t *a = calloc(l.buffer_words, 8);
  assert_non_null(a);
  a[l.l1_offset + 3] = 1;    /* level 1 says word 192 may be dirty; it is not */
  a[l.l2_offset] = 1;
  cbt_bitmap_set(a, &l, 900000, 900001);
  assert_int_equal(cbt_bitmap_next_set(a, &l, 0), 900000);
  assert_int_equal(cbt_bitmap_count(a, NULL, &l), 2);
  free(a);
}

static void test_bitmap_bits_past_the_end(void **state)
{
  /* The legacy tracker stores whole bytes: its last byte may set bits past the last block, which
   * neither a count nor a drain reports. */
  (void)state;
  struct cbt_layout l;
  cbt_layout_init(&l, 70);
  uint64_t *a = calloc(l.buffer_words, 8);
  assert_non_null(a);
  a[1] = 0xFF; /* blocks 64..71 of 70 */
  a[l.l1_offset] = 2;
  a[l.l2_offset] = 1;
  assert_int_equal(cbt_bitmap_count(a, NULL, &l), 6);
  assert_int_equal(cbt_bitmap_next_set(a, &l, 0), 64);
  assert_int_equal(cbt_bitmap_next_clear(a, &l, 64), 70);
  free(a);
}

static struct cbt_record sample_record(void)
{
  struct cbt_record r;
  memset(&r, 0, sizeof r);
  strcpy(r.name, "loop7");
  strcpy(r.path, "/dev/disk/by-id/some disk");
  r.major = 7;
  r.minor = 7;
  r.size = 1ULL << 40;
  r.block_shift = 12;
  r.armed = true;
  for (int i = 0; i < 16; i++)
    r.uuid[i] = (uint8_t)(i * 17);
  strcpy(r.boot_id, "6a910e9b-76ad-4fc4-9c2f-f58f9fe3928b");
  r.resync_count = 5;
  r.resync_acked = 4;
  r.resync_reason = CBT_RESYNC_PROGRAM_MISSED;
  r.resync_time = 1700000000;
  r.program_misses_seen = 3;
  r.losses_seen[2] = 9;
  r.fallback_generation = 0;
  r.diskseq = 42;
  return r;
}

static void test_record_round_trip(void **state)
{
  struct cbt_record r = sample_record(), back;
  char text[CBT_RECORD_MAX_BYTES];
  size_t len = cbt_record_format(&r, text, sizeof text);
  assert_true(len > 0 && len < sizeof text);
  assert_int_equal(cbt_record_parse(text, &back), RPL_OK);
  assert_memory_equal(&r, &back, sizeof r);
  assert_int_equal(cbt_record_format(&r, text, 20), 0); /* does not fit: nothing claimed */
}

static void test_record_rejects_corruption(void **state)
{
  struct cbt_record r = sample_record(), back;
  char text[CBT_RECORD_MAX_BYTES], bad[CBT_RECORD_MAX_BYTES + 64];
  cbt_record_format(&r, text, sizeof text);
  static const struct { const char *from, *to; } edits[] = {
    {"resync_count 5", "resync_count x5"},
    {"resync_count 5", "resync_count 3"},        /* acked beyond count */
    {"uuid ", "uuid zz"},
    {"dev 7:7", "dev 7"},
    {"mode ebpf", "mode both"},
    {"name loop7", "name ../etc"},
    {"version 1", "version 2"},
    {"resync_reason program-missed", "resync_reason gremlins"},
    {"block_shift 12", "block_shift 99"},
  };
  for (size_t i = 0; i < sizeof edits / sizeof edits[0]; i++) {
    const char *at = strstr(text, edits[i].from);
    assert_non_null(at);
    snprintf(bad, sizeof bad, "%.*s%s%s", (int)(at - text), text, edits[i].to, at + strlen(edits[i].from));
    assert_int_equal(cbt_record_parse(bad, &back), RPL_E_CBT_STATE_CORRUPT);
  }
  /* A missing required field. */
  const char *at = strstr(text, "boot_id");
  snprintf(bad, sizeof bad, "%.*s", (int)(at - text), text);
  assert_int_equal(cbt_record_parse(bad, &back), RPL_E_CBT_STATE_CORRUPT);
  assert_int_equal(cbt_record_parse("", &back), RPL_E_CBT_STATE_CORRUPT);
  /* Unknown keys from a newer agent are ignored. */
  snprintf(bad, sizeof bad, "%sfuture_key 1\n", text);
  assert_int_equal(cbt_record_parse(bad, &back), RPL_OK);
}

static void test_resync_events_and_exact_ack(void **state)
{
  struct cbt_record r = sample_record();
  r.resync_count = 0;
  r.resync_acked = 0;
  uint8_t before[16];
  memcpy(before, r.uuid, 16);
  assert_false(cbt_record_resync_required(&r));
  cbt_record_raise(&r, CBT_RESYNC_REBOOT, 100);
  assert_true(cbt_record_resync_required(&r));
  assert_int_equal(r.resync_count, 1);
  assert_memory_not_equal(before, r.uuid, 16); /* a loss renews the tracker UUID */
  assert_true(r.has_previous_uuid);
  assert_memory_equal(before, r.previous_uuid, 16); /* a slot still carrying it was being renewed */
  struct cbt_record back;
  char text[CBT_RECORD_MAX_BYTES];
  assert_true(cbt_record_format(&r, text, sizeof text) > 0);
  assert_int_equal(cbt_record_parse(text, &back), RPL_OK);
  assert_true(back.has_previous_uuid);
  assert_memory_equal(back.previous_uuid, before, 16);
  cbt_record_raise(&r, CBT_RESYNC_RESIZE, 101);
  assert_int_equal(r.resync_reason, CBT_RESYNC_RESIZE);
  assert_int_equal(cbt_record_ack(&r, 1), RPL_E_CBT_ACK_STALE); /* event 2 came after event 1 */
  assert_true(cbt_record_resync_required(&r));
  assert_int_equal(cbt_record_ack(&r, 3), RPL_E_INVALID_ARGUMENT);
  assert_int_equal(cbt_record_ack(&r, 2), RPL_OK);
  assert_false(cbt_record_resync_required(&r));
  cbt_record_raise(&r, CBT_RESYNC_PROGRAM_MISSED, 102);
  assert_true(cbt_record_resync_required(&r)); /* a new event after the acknowledged one keeps it set */
  assert_string_equal(cbt_resync_reason_name(CBT_RESYNC_NO_EBPF), "no-ebpf");
  assert_string_equal(cbt_resync_reason_name(CBT_RESYNC_COMPLETION_MISSED), "completion-missed");
  assert_string_equal(cbt_resync_reason_name((enum cbt_resync_reason)999), "unknown");
}

static void test_json_escaping(void **state)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  assert_non_null(f);
  struct json_out j;
  json_init(&j, f);
  json_object_begin(&j, NULL);
  json_string(&j, "quote\"back\\slash", "tab\there\nnew\x01" "ctl \xc3\xa9 bad\xff\xc3 end");
  json_u64(&j, "n", 18446744073709551615ULL);
  json_bool(&j, "b", false);
  json_string(&j, "null", NULL);
  json_array_begin(&j, "a");
  json_u64(&j, NULL, 1);
  json_object_begin(&j, NULL);
  json_object_end(&j);
  json_array_end(&j);
  json_object_end(&j);
  assert_true(json_finish(&j));
  fclose(f);
  assert_string_equal(buf, "{\"quote\\\"back\\\\slash\":\"tab\\there\\nnew\\u0001ctl \xc3\xa9 bad\\ufffd\\ufffd end\","
                           "\"n\":18446744073709551615,\"b\":false,\"null\":null,\"a\":[1,{}]}\n");
  free(buf);

  /* Unbalanced nesting is reported. */
  f = open_memstream(&buf, &len);
  json_init(&j, f);
  json_object_end(&j);
  assert_false(json_finish(&j));
  fclose(f);
  free(buf);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_extents_coalesce_and_caps),
    cmocka_unit_test(test_bitmap_matches_reference),
    cmocka_unit_test(test_bitmap_stale_summary_bits),
    cmocka_unit_test(test_bitmap_bits_past_the_end),
    cmocka_unit_test(test_record_round_trip),
    cmocka_unit_test(test_record_rejects_corruption),
    cmocka_unit_test(test_resync_events_and_exact_ack),
    cmocka_unit_test(test_json_escaping),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
