/* blob_ops.c - Description: every page-blob operation against Azurite over HTTPS through the
 * private-endpoint path (zone file, pinned address, TLS verified with the test CA): data read back
 * byte-identical, page ranges after clears, snapshots, sequence numbers and fencing, resize, leases,
 * listing; with BLOB_TEST_MODE=auth only the authorization round trip (for SAS and bearer runs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blob.h"

#define MIB (1024u * 1024u)
#define CONTAINER "opstest"

static struct blob_client *client;
static char blob_name[64];

static void fill(unsigned char *buf, size_t len, uint64_t seed)
{
  uint64_t x = seed * 0x9E3779B97F4A7C15ULL + 1;
  for (size_t i = 0; i < len; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    buf[i] = (unsigned char)x;
  }
}

static int open_client(void **state)
{
  struct blob_config cfg;
  blob_config_init(&cfg);
  const char *connstr = getenv("BLOB_TEST_CONNSTR");
  if (!connstr)
    return -1;
  rpl_err perr = blob_connstr_parse(connstr, &cfg.account);
  if (perr != RPL_OK) {
    fprintf(stderr, "connection string: %s\n", rpl_detail(perr));
    return -1;
  }
  cfg.private_dns_zone = getenv("BLOB_TEST_ZONE") && *getenv("BLOB_TEST_ZONE") ? getenv("BLOB_TEST_ZONE") : NULL;
  cfg.ca_file = getenv("BLOB_TEST_CA");
  cfg.identity_endpoint = getenv("BLOB_TEST_IDENTITY");
  cfg.pagelist_slice = 3 * MIB; /* several slices per blob, not aligned to the ranges written */
  cfg.retry_base_ms = 100;
  cfg.list_max_results = 1; /* every listing page holds one blob: the NextMarker loop is exercised */
  rpl_err err = blob_client_open(&cfg, &client);
  if (err != RPL_OK) {
    fprintf(stderr, "open: %s: %s\n", rpl_errname(err), rpl_detail(err));
    return -1;
  }
  snprintf(blob_name, sizeof blob_name, "disk-%s.vhd", getenv("BLOB_TEST_MODE") ? getenv("BLOB_TEST_MODE") : "full");
  return 0;
}

static int close_client(void **state)
{
  blob_client_close(client);
  return 0;
}

struct done_count {
  int ok, failed;
  rpl_err last;
};

static void count_done(void *ctx, rpl_err err, const struct blob_reply *reply)
{
  struct done_count *d = ctx;
  if (err == RPL_OK)
    d->ok++;
  else
    d->failed++, d->last = err;
}

static void expect_bytes(const char *snapshot, uint64_t offset, const unsigned char *want, size_t len)
{
  unsigned char *got = malloc(len);
  assert_non_null(got);
  struct blob_reply reply;
  assert_int_equal(blob_read(client, CONTAINER, blob_name, snapshot, offset, got, len, &reply), RPL_OK);
  assert_memory_equal(got, want, len);
  free(got);
}

static void test_auth_round_trip(void **state)
{
  struct blob_reply reply;
  rpl_err err = blob_container_create(client, CONTAINER, &reply);
  assert_true(err == RPL_OK || err == RPL_E_BLOB_EXISTS);
  assert_int_equal(blob_create_page_blob(client, CONTAINER, blob_name, 1 * MIB, -1, false, &reply), RPL_OK);
  unsigned char page[4096];
  fill(page, sizeof page, 42);
  struct done_count d = {0};
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 8192, page, sizeof page, NULL, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.ok, 1);
  expect_bytes(NULL, 8192, page, sizeof page);
}

static void test_create(void **state)
{
  struct blob_reply reply;
  rpl_err err = blob_container_create(client, CONTAINER, &reply);
  assert_true(err == RPL_OK || err == RPL_E_BLOB_EXISTS);
  assert_int_equal(blob_container_properties(client, CONTAINER, &reply), RPL_OK);
  assert_int_equal(blob_container_properties(client, "nosuchcontainer", &reply), RPL_E_BLOB_NOT_FOUND);
  assert_int_equal(blob_create_page_blob(client, CONTAINER, blob_name, 8 * MIB, 0, true, &reply), RPL_OK);
  assert_int_equal(reply.status, 201);
  /* If-None-Match: * keeps an existing blob. */
  assert_int_equal(blob_create_page_blob(client, CONTAINER, blob_name, 8 * MIB, 0, true, &reply), RPL_E_BLOB_EXISTS);
  assert_int_equal(blob_get_properties(client, CONTAINER, blob_name, NULL, &reply), RPL_OK);
  assert_int_equal(reply.content_length, 8 * MIB);
  assert_string_equal(reply.blob_type, "PageBlob");
  assert_int_equal(reply.sequence_number, 0);
}

static unsigned char image[8 * MIB];

static void test_write_read(void **state)
{
  fill(image, sizeof image, 1);
  struct done_count d = {0};
  for (size_t off = 0; off < sizeof image; off += 4 * MIB)
    assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, off, image + off, 4 * MIB, NULL, count_done, &d), RPL_OK);
  /* Azure refuses more than 4 MiB and unaligned pages: so do we, before sending. */
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 0, image, 4 * MIB + 512, NULL, count_done, &d), RPL_E_BLOB_RANGE);
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 100, image, 512, NULL, count_done, &d), RPL_E_BLOB_RANGE);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.ok, 2);
  assert_int_equal(d.failed, 0);
  expect_bytes(NULL, 0, image, sizeof image);
  expect_bytes(NULL, 4 * MIB - 512, image + 4 * MIB - 512, 1024);
}

static void test_clear_and_page_ranges(void **state)
{
  struct done_count d = {0};
  assert_int_equal(blob_clear_pages_async(client, CONTAINER, blob_name, 1 * MIB, 1 * MIB, NULL, count_done, &d), RPL_OK);
  assert_int_equal(blob_clear_pages_async(client, CONTAINER, blob_name, 6 * MIB, 512, NULL, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.ok, 2);
  memset(image + 1 * MIB, 0, 1 * MIB);
  memset(image + 6 * MIB, 0, 512);
  expect_bytes(NULL, 0, image, sizeof image);
  struct blob_page_list pl = {0};
  struct blob_reply reply;
  assert_int_equal(blob_get_page_ranges(client, CONTAINER, blob_name, NULL, 0, 0, &pl, &reply), RPL_OK);
  assert_int_equal(pl.count, 3);
  assert_int_equal(pl.ranges[0].offset, 0);
  assert_int_equal(pl.ranges[0].length, 1 * MIB);
  assert_int_equal(pl.ranges[1].offset, 2 * MIB);
  assert_int_equal(pl.ranges[1].length, 4 * MIB);
  assert_int_equal(pl.ranges[2].offset, 6 * MIB + 512);
  assert_int_equal(pl.ranges[2].length, 2 * MIB - 512);
  blob_page_list_free(&pl);
  /* A window of the blob. */
  assert_int_equal(blob_get_page_ranges(client, CONTAINER, blob_name, NULL, 512 * 1024, 2 * MIB, &pl, &reply), RPL_OK);
  assert_int_equal(pl.count, 2);
  assert_int_equal(pl.ranges[0].offset, 512 * 1024);
  assert_int_equal(pl.ranges[0].length, 512 * 1024);
  assert_int_equal(pl.ranges[1].offset, 2 * MIB);
  assert_int_equal(pl.ranges[1].length, 512 * 1024);
  blob_page_list_free(&pl);
}

static void test_snapshot(void **state)
{
  struct blob_reply snap, reply;
  assert_int_equal(blob_snapshot(client, CONTAINER, blob_name, &snap), RPL_OK);
  assert_true(strlen(snap.snapshot) > 10);
  unsigned char page[512];
  fill(page, sizeof page, 99);
  struct done_count d = {0};
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 0, page, sizeof page, NULL, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  expect_bytes(NULL, 0, page, sizeof page);
  expect_bytes(snap.snapshot, 0, image, sizeof image); /* the snapshot keeps the old bytes */
  struct blob_page_list pl = {0};
  assert_int_equal(blob_get_page_ranges(client, CONTAINER, blob_name, snap.snapshot, 0, 0, &pl, &reply), RPL_OK);
  assert_int_equal(pl.count, 3);
  blob_page_list_free(&pl);
  assert_int_equal(blob_get_properties(client, CONTAINER, blob_name, snap.snapshot, &reply), RPL_OK);
  assert_int_equal(blob_delete(client, CONTAINER, blob_name, snap.snapshot, &reply), RPL_OK);
  assert_int_equal(blob_get_properties(client, CONTAINER, blob_name, snap.snapshot, &reply), RPL_E_BLOB_NOT_FOUND);
  memcpy(image, page, sizeof page);
}

static void test_sequence_fencing(void **state)
{
  struct blob_reply reply;
  assert_int_equal(blob_set_sequence_number(client, CONTAINER, blob_name, BLOB_SEQUENCE_UPDATE, 5, NULL, &reply), RPL_OK);
  assert_int_equal(reply.sequence_number, 5);
  /* Cycle 6: its writes carry x-ms-if-sequence-number-lt: 6, then the commit sets 6. */
  unsigned char cycle6[4096], late[4096];
  fill(cycle6, sizeof cycle6, 6);
  fill(late, sizeof late, 66);
  struct blob_write_cond c6 = {.sequence_lt = 6};
  struct done_count d = {0};
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 65536, cycle6, sizeof cycle6, &c6, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.ok, 1);
  assert_int_equal(blob_set_sequence_number(client, CONTAINER, blob_name, BLOB_SEQUENCE_UPDATE, 6, NULL, &reply), RPL_OK);
  /* A delayed write of cycle 6 arriving after the commit is fenced, and changes nothing. */
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 65536, late, sizeof late, &c6, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.failed, 1);
  assert_int_equal(d.last, RPL_E_BLOB_FENCED);
  assert_string_equal(rpl_strerror(RPL_E_BLOB_FENCED), "stale write fenced: the blob's sequence number shows a newer cycle is committed (412)");
  expect_bytes(NULL, 65536, cycle6, sizeof cycle6);
  memcpy(image + 65536, cycle6, sizeof cycle6);
  /* Cycle 7's writes pass. */
  struct blob_write_cond c7 = {.sequence_lt = 7};
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 65536, cycle6, sizeof cycle6, &c7, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.ok, 2);
  /* max keeps the larger; increment adds one. */
  assert_int_equal(blob_set_sequence_number(client, CONTAINER, blob_name, BLOB_SEQUENCE_MAX, 3, NULL, &reply), RPL_OK);
  assert_int_equal(reply.sequence_number, 6);
  assert_int_equal(blob_set_sequence_number(client, CONTAINER, blob_name, BLOB_SEQUENCE_INCREMENT, 0, NULL, &reply), RPL_OK);
  assert_int_equal(reply.sequence_number, 7);
}

static void test_lease(void **state)
{
  struct blob_reply reply;
  const char *proposed = "8c3e2ad4-9f4a-4b5c-9d1e-0a1b2c3d4e5f";
  assert_int_equal(blob_lease(client, CONTAINER, blob_name, BLOB_LEASE_ACQUIRE, 15, proposed, &reply), RPL_OK);
  assert_string_equal(reply.lease_id, proposed);
  unsigned char page[512];
  fill(page, sizeof page, 7);
  struct done_count d = {0};
  /* Without the lease id a write of a leased blob is refused. */
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 0, page, sizeof page, NULL, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.failed, 1);
  assert_int_equal(d.last, RPL_E_LEASE_HELD); /* LeaseIdMissing: someone holds it */
  struct blob_write_cond with_lease = {.lease_id = proposed}; /* no fencing: sequence_lt 0 */
  assert_int_equal(blob_put_page_async(client, CONTAINER, blob_name, 0, page, sizeof page, &with_lease, count_done, &d), RPL_OK);
  assert_int_equal(blob_client_drain(client), RPL_OK);
  assert_int_equal(d.ok, 1);
  memcpy(image, page, sizeof page);
  assert_int_equal(blob_lease(client, CONTAINER, blob_name, BLOB_LEASE_RENEW, 0, proposed, &reply), RPL_OK);
  assert_int_equal(blob_lease(client, CONTAINER, blob_name, BLOB_LEASE_ACQUIRE, 15, "11111111-2222-4333-8444-555555555555", &reply), RPL_E_LEASE_HELD);
  assert_int_equal(blob_lease(client, CONTAINER, blob_name, BLOB_LEASE_BREAK, 0, NULL, &reply), RPL_OK);
  assert_int_equal(blob_lease(client, CONTAINER, blob_name, BLOB_LEASE_ACQUIRE, -1, NULL, &reply), RPL_OK);
  char held[64];
  snprintf(held, sizeof held, "%s", reply.lease_id);
  assert_true(strlen(held) > 0);
  assert_int_equal(blob_get_properties(client, CONTAINER, blob_name, NULL, &reply), RPL_OK);
  assert_string_equal(reply.lease_state, "leased");
  assert_int_equal(blob_lease(client, CONTAINER, blob_name, BLOB_LEASE_RELEASE, 0, held, &reply), RPL_OK);
  expect_bytes(NULL, 0, image, sizeof image);
}

static void test_resize(void **state)
{
  struct blob_reply reply;
  assert_int_equal(blob_resize(client, CONTAINER, blob_name, 12 * MIB, NULL, &reply), RPL_OK);
  assert_int_equal(blob_get_properties(client, CONTAINER, blob_name, NULL, &reply), RPL_OK);
  assert_int_equal(reply.content_length, 12 * MIB);
  assert_int_equal(blob_resize(client, CONTAINER, blob_name, 4 * MIB, NULL, &reply), RPL_OK);
  struct blob_page_list pl = {0};
  assert_int_equal(blob_get_page_ranges(client, CONTAINER, blob_name, NULL, 0, 0, &pl, &reply), RPL_OK);
  /* [1 MiB, 2 MiB) was cleared earlier; nothing above 4 MiB survives the shrink. */
  assert_int_equal(pl.count, 2);
  assert_int_equal(pl.ranges[0].offset, 0);
  assert_int_equal(pl.ranges[0].length, 1 * MIB);
  assert_int_equal(pl.ranges[1].offset, 2 * MIB);
  assert_int_equal(pl.ranges[1].length, 2 * MIB);
  blob_page_list_free(&pl);
  expect_bytes(NULL, 0, image, 4 * MIB);
  assert_int_equal(blob_resize(client, CONTAINER, blob_name, 1000, NULL, &reply), RPL_E_BLOB_RANGE);
}

static void test_list_and_delete(void **state)
{
  struct blob_reply reply;
  assert_int_equal(blob_create_page_blob(client, CONTAINER, "other-1.vhd", 1 * MIB, 3, false, &reply), RPL_OK);
  assert_int_equal(blob_create_page_blob(client, CONTAINER, "other-2.vhd", 1 * MIB, -1, false, &reply), RPL_OK);
  struct blob_list list = {0};
  assert_int_equal(blob_list_blobs(client, CONTAINER, NULL, &list, &reply), RPL_OK);
  bool saw_disk = false, saw_other = false;
  for (size_t i = 0; i < list.count; i++) {
    if (strcmp(list.items[i].name, blob_name) == 0)
      saw_disk = list.items[i].content_length == 4 * MIB;
    if (strcmp(list.items[i].name, "other-1.vhd") == 0)
      saw_other = list.items[i].content_length == 1 * MIB && list.items[i].sequence_number == 3 &&
                  strcmp(list.items[i].blob_type, "PageBlob") == 0;
  }
  assert_true(saw_disk);
  assert_true(saw_other);
  assert_true(list.count >= 3);
  blob_list_free(&list);
  assert_int_equal(blob_list_blobs(client, CONTAINER, "other-", &list, &reply), RPL_OK);
  assert_int_equal(list.count, 2); /* two pages of one, joined through NextMarker */
  assert_string_equal(list.items[0].name, "other-1.vhd");
  assert_string_equal(list.items[1].name, "other-2.vhd");
  blob_list_free(&list);
  assert_int_equal(blob_delete(client, CONTAINER, "other-2.vhd", NULL, &reply), RPL_OK);
  assert_int_equal(blob_delete(client, CONTAINER, "other-1.vhd", NULL, &reply), RPL_OK);
  assert_int_equal(blob_get_properties(client, CONTAINER, "other-1.vhd", NULL, &reply), RPL_E_BLOB_NOT_FOUND);
  assert_int_equal(blob_delete(client, CONTAINER, "other-1.vhd", NULL, &reply), RPL_E_BLOB_NOT_FOUND);
  /* Connections were reused: far fewer than requests. */
  struct blob_stats st;
  blob_client_stats(client, &st);
  fprintf(stderr, "blob_ops: %llu requests over %llu connections, %llu retries\n", (unsigned long long)st.requests,
          (unsigned long long)st.connections, (unsigned long long)st.retries);
  assert_true(st.connections * 4 < st.requests);
  assert_true(st.clock_seen);
}

int main(void)
{
  const char *mode = getenv("BLOB_TEST_MODE");
  if (mode && strcmp(mode, "full") != 0) {
    const struct CMUnitTest auth[] = {cmocka_unit_test(test_auth_round_trip)};
    return cmocka_run_group_tests(auth, open_client, close_client);
  }
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_create), cmocka_unit_test(test_write_read),
    cmocka_unit_test(test_clear_and_page_ranges), cmocka_unit_test(test_snapshot),
    cmocka_unit_test(test_sequence_fencing), cmocka_unit_test(test_lease),
    cmocka_unit_test(test_resize), cmocka_unit_test(test_list_and_delete),
  };
  return cmocka_run_group_tests(tests, open_client, close_client);
}
