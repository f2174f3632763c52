/* test_sent_hashes.c - Description: the record of what committed delta cycles sent finds exactly the
 * units whose content on the disk differs from the last committed send, keeps only two windows, drops
 * what was not committed, and refuses to check when it is not complete. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "sent_hashes.h"

/* Not a multiple of a unit: the last unit is partial (2 KiB). */
#define DISK_SIZE ((4u << 20) + 2048u)
#define HOUR_NS (3600ULL * 1000000000ULL)

struct fixture {
  char path[64];
  int fd, fd_direct;
  uint8_t *content; /* what the file holds */
};

static int setup(void **state)
{
  struct fixture *f = calloc(1, sizeof *f);
  strcpy(f->path, "/var/tmp/test_sent_hashes.XXXXXX");
  f->fd = mkstemp(f->path);
  if (f->fd < 0)
    return -1;
  f->content = malloc(DISK_SIZE);
  uint32_t x = 11;
  for (size_t i = 0; i < DISK_SIZE; i++)
    f->content[i] = (uint8_t)((x = x * 1103515245u + 12345u) >> 23);
  if (pwrite(f->fd, f->content, DISK_SIZE, 0) != (ssize_t)DISK_SIZE || fsync(f->fd))
    return -1;
  f->fd_direct = open(f->path, O_RDONLY | O_DIRECT);
  if (f->fd_direct < 0)
    return -1;
  *state = f;
  return 0;
}

static int teardown(void **state)
{
  struct fixture *f = *state;
  close(f->fd_direct);
  close(f->fd);
  unlink(f->path);
  free(f->content);
  free(f);
  return 0;
}

/* What the pipeline would hand over for [off, off + len) of data. */
static void send(struct sent_hashes *sh, const uint8_t *data, uint64_t off, uint32_t len)
{
  uint64_t *h = calloc(len / SENT_UNIT + 1, sizeof *h);
  for (uint32_t u = 0; u * SENT_UNIT < len; u++) {
    uint32_t l = len - u * SENT_UNIT < SENT_UNIT ? len - u * SENT_UNIT : SENT_UNIT;
    h[u] = sent_unit_hash(data + off + (uint64_t)u * SENT_UNIT, l);
  }
  sent_hashes_add(sh, off, len, h);
  free(h);
}

/* Changes the file at [off, off + len) (through the page cache; O_DIRECT reads see it). */
static void rewrite(struct fixture *f, uint64_t off, uint32_t len)
{
  for (uint32_t i = 0; i < len; i++)
    f->content[off + i] ^= 0x5A;
  assert_int_equal(pwrite(f->fd, f->content + off, len, (off_t)off), (ssize_t)len);
}

struct marks {
  uint64_t off[16], len[16];
  unsigned n;
};

static void mark(void *ctx, uint64_t offset, uint64_t length)
{
  struct marks *m = ctx;
  assert_true(m->n < 16);
  m->off[m->n] = offset;
  m->len[m->n++] = length;
}

static bool check(struct fixture *f, struct sent_hashes *sh, struct marks *m, struct sent_check *st)
{
  memset(m, 0, sizeof *m);
  return sent_hashes_check(sh, f->fd_direct, DISK_SIZE, mark, m, st);
}

static void test_differences_found(void **state)
{
  struct fixture *f = *state;
  struct sent_hashes *sh;
  assert_int_equal(sent_hashes_create(0, &sh), RPL_OK);
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 64 << 10);
  send(sh, f->content, 1 << 20, 8 << 10);
  send(sh, f->content, DISK_SIZE - 2048 - 4096, 4096 + 2048); /* up to the end: a partial unit */
  sent_hashes_commit(sh);

  struct marks m;
  struct sent_check st;
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(m.n, 0); /* the disk holds what was sent */
  assert_int_equal(st.checked_bytes, (64 << 10) + (8 << 10) + 4096 + 2048);
  assert_int_equal(st.differing_bytes, 0);

  /* Written after the read (as a write whose completion the kernel skipped): units 2 and 3 of the
   * first extent (one run), a byte of the second, and the partial last unit. */
  rewrite(f, 2 * SENT_UNIT + 100, SENT_UNIT);
  rewrite(f, (1 << 20) + SENT_UNIT + 7, 1);
  rewrite(f, DISK_SIZE - 10, 10);
  rewrite(f, 2 << 20, SENT_UNIT); /* never sent: not this record's to check */
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(m.n, 3);
  assert_int_equal(m.off[0], 2 * SENT_UNIT);
  assert_int_equal(m.len[0], 2 * SENT_UNIT);
  assert_int_equal(m.off[1], (1 << 20) + SENT_UNIT);
  assert_int_equal(m.len[1], SENT_UNIT);
  assert_int_equal(m.off[2], DISK_SIZE - 2048);
  assert_int_equal(m.len[2], 2048);
  assert_int_equal(st.differing_bytes, 3 * SENT_UNIT + 2048);

  struct sent_stats ss;
  sent_hashes_stats(sh, &ss);
  assert_true(ss.complete);
  assert_int_equal(ss.checks, 2);
  assert_int_equal(ss.units, 16 + 2 + 2);
  assert_int_equal(ss.pages, 3); /* of 2 MiB: 0 and 1 MiB in the first, the last two units in the next two */
  assert_int_equal(ss.differing_bytes, 3 * SENT_UNIT + 2048);
  sent_hashes_destroy(sh);
}

static void test_latest_commit_counts(void **state)
{
  struct fixture *f = *state;
  struct sent_hashes *sh;
  assert_int_equal(sent_hashes_create(0, &sh), RPL_OK);
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 16 << 10);
  sent_hashes_commit(sh);
  /* Rewritten and sent again in a later cycle: the newer hash is the replica's. */
  rewrite(f, 0, 16 << 10);
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 16 << 10);
  sent_hashes_commit(sh);
  struct marks m;
  struct sent_check st;
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(m.n, 0);
  assert_int_equal(st.checked_bytes, 16 << 10);

  /* A cycle that sent but was not committed (its ACK never came) is dropped by the next begin: its
   * hashes are not the replica's. */
  uint8_t *other = malloc(DISK_SIZE);
  memset(other, 0xEE, DISK_SIZE);
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, other, 0, 16 << 10);
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 64 << 10, 4096);
  sent_hashes_commit(sh);
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(m.n, 0);
  assert_int_equal(st.checked_bytes, (16 << 10) + 4096);
  free(other);
  sent_hashes_destroy(sh);
}

static void test_unrecorded_forgets(void **state)
{
  struct fixture *f = *state;
  struct sent_hashes *sh;
  assert_int_equal(sent_hashes_create(0, &sh), RPL_OK);
  struct marks m;
  struct sent_check st;
  /* A whole-disk or compared cycle: its commit empties the record. */
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 16 << 10);
  sent_hashes_commit(sh);
  sent_hashes_begin(sh, false, DISK_SIZE);
  send(sh, f->content, 0, 16 << 10);
  sent_hashes_commit(sh);
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(st.checked_bytes, 0);
  /* An extent off a unit boundary, or without hashes, makes the cycle unrecorded. */
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 16 << 10);
  send(sh, f->content, 512, 4096);
  sent_hashes_commit(sh);
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(st.checked_bytes, 0);
  sent_hashes_begin(sh, true, DISK_SIZE);
  sent_hashes_add(sh, 0, 4096, NULL);
  sent_hashes_commit(sh);
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(st.checked_bytes, 0);
  /* A partial unit inside the disk (only the last may be partial). */
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 2048);
  sent_hashes_commit(sh);
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(st.checked_bytes, 0);
  /* forget: a takeover's replay. */
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 4096);
  sent_hashes_commit(sh);
  sent_hashes_forget(sh);
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(st.checked_bytes, 0);
  sent_hashes_destroy(sh);
}

static void test_incomplete_refuses(void **state)
{
  struct fixture *f = *state;
  struct sent_hashes *sh;
  assert_int_equal(sent_hashes_create(HOUR_NS, &sh), RPL_OK);
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 4096);
  sent_hashes_commit(sh);
  struct marks m;
  struct sent_check st;
  /* Made just now: a commit of the last hour may be missing. */
  struct sent_stats ss;
  sent_hashes_stats(sh, &ss);
  assert_false(ss.complete);
  assert_false(check(f, sh, &m, &st));
  assert_int_equal(m.n, 0);
  sent_hashes_destroy(sh);
  /* A read that fails (a descriptor that is not open) is no check either. */
  assert_int_equal(sent_hashes_create(0, &sh), RPL_OK);
  sent_hashes_begin(sh, true, DISK_SIZE);
  send(sh, f->content, 0, 4096);
  sent_hashes_commit(sh);
  assert_false(sent_hashes_check(sh, -1, DISK_SIZE, mark, &m, &st));
  int fd = open("/dev/null", O_RDONLY);
  assert_false(sent_hashes_check(sh, fd, DISK_SIZE, mark, &m, &st)); /* reads nothing */
  close(fd);
  sent_hashes_stats(sh, &ss);
  assert_int_equal(ss.refused, 2);
  assert_int_equal(ss.checks, 0);
  sent_hashes_destroy(sh);
}

static void test_pages_expire(void **state)
{
  struct fixture *f = *state;
  struct sent_hashes *sh;
  /* A window of 1 ns: every commit begins a new epoch; a page committed to in neither the current
   * epoch nor the one before goes. Pages are 2 MiB of disk: units at 0, 2 MiB and 4 MiB (the partial
   * last unit) are in three. */
  assert_int_equal(sent_hashes_create(1, &sh), RPL_OK);
  const uint64_t at[] = {0, 2u << 20, 4u << 20};
  for (int i = 0; i < 3; i++) {
    sent_hashes_begin(sh, true, DISK_SIZE);
    send(sh, f->content, at[i], i == 2 ? 2048 : SENT_UNIT);
    sent_hashes_commit(sh);
  }
  struct sent_stats ss;
  sent_hashes_stats(sh, &ss);
  assert_int_equal(ss.pages, 2);
  assert_int_equal(ss.units, 2);
  rewrite(f, 0, 1); /* the first page is gone: not checked */
  struct marks m;
  struct sent_check st;
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(st.checked_bytes, SENT_UNIT + 2048);
  assert_int_equal(m.n, 0);
  rewrite(f, 2u << 20, 1);
  assert_true(check(f, sh, &m, &st));
  assert_int_equal(m.n, 1);
  assert_int_equal(m.off[0], 2u << 20);
  sent_hashes_destroy(sh);
}

static void test_caps(void **state)
{
  (void)state;
  struct sent_hashes *sh;
  assert_int_equal(sent_hashes_create(0, &sh), RPL_OK);
  uint64_t h[256] = {0};
  /* More units than one cycle may record: unrecorded, so its commit empties the record. */
  uint64_t big = (uint64_t)SENT_HASHES_MAX_CYCLE_UNITS * SENT_UNIT * 2;
  sent_hashes_begin(sh, true, big);
  sent_hashes_add(sh, 0, SENT_UNIT, h);
  sent_hashes_commit(sh);
  struct sent_stats ss;
  sent_hashes_stats(sh, &ss);
  assert_int_equal(ss.units, 1);
  sent_hashes_begin(sh, true, big);
  for (uint64_t off = 0; off <= (uint64_t)SENT_HASHES_MAX_CYCLE_UNITS * SENT_UNIT; off += 1u << 20)
    sent_hashes_add(sh, off, 1u << 20, h);
  sent_hashes_commit(sh);
  sent_hashes_stats(sh, &ss);
  assert_int_equal(ss.units, 0);
  assert_int_equal(ss.pages, 0);
  /* More pages than the record may keep: one unit in each of SENT_HASHES_MAX_PAGES + 1 pages. */
  uint64_t page = (uint64_t)SENT_PAGE_UNITS * SENT_UNIT;
  sent_hashes_begin(sh, true, page * (SENT_HASHES_MAX_PAGES + 1));
  for (uint64_t i = 0; i < SENT_HASHES_MAX_PAGES; i++)
    sent_hashes_add(sh, i * page, SENT_UNIT, h);
  sent_hashes_commit(sh);
  sent_hashes_stats(sh, &ss);
  assert_int_equal(ss.pages, SENT_HASHES_MAX_PAGES);
  sent_hashes_begin(sh, true, page * (SENT_HASHES_MAX_PAGES + 1));
  sent_hashes_add(sh, SENT_HASHES_MAX_PAGES * page, SENT_UNIT, h);
  sent_hashes_commit(sh);
  sent_hashes_stats(sh, &ss);
  assert_int_equal(ss.pages, 0);
  sent_hashes_destroy(sh);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_differences_found, setup, teardown),
    cmocka_unit_test_setup_teardown(test_latest_commit_counts, setup, teardown),
    cmocka_unit_test_setup_teardown(test_unrecorded_forgets, setup, teardown),
    cmocka_unit_test_setup_teardown(test_incomplete_refuses, setup, teardown),
    cmocka_unit_test_setup_teardown(test_pages_expire, setup, teardown),
    cmocka_unit_test(test_caps),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
