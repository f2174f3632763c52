/* sent_hashes.c - the hashes of the units committed delta cycles sent, in pages freed a window after
 * their last commit, and the check of a skipped completion against the disk. */
#include "sent_hashes.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "file_io.h"
#include "proto.h"

#define CHECK_READ_UNITS 256u /* 1 MiB per read of the check */

struct page {
  uint64_t hash[SENT_PAGE_UNITS];
  uint64_t present[SENT_PAGE_UNITS / 64];
  uint64_t epoch; /* of its last commit */
};

struct sent_hashes {
  pthread_mutex_t lock;
  uint64_t window_ns;
  struct page **pages;        /* by unit / SENT_PAGE_UNITS; NULL where nothing is kept */
  uint64_t npages_max;        /* of the directory (the disk's size when it was made or grew) */
  uint64_t npages, units;     /* pages and units kept */
  uint64_t epoch, epoch_start_ns; /* a new epoch begins at the first commit a window after the last */
  uint64_t complete_since_ns; /* every commit since is in the pages */
  struct {
    uint64_t *units, *hashes;
    uint32_t n, cap;
    bool recorded;
    uint64_t disk_size;
  } pending; /* what the cycle in progress sent */
  uint64_t checks, refused, checked_bytes, differing_bytes, check_ns;
};

static uint64_t boottime_ns(void)
{
  struct timespec now;
  clock_gettime(CLOCK_BOOTTIME, &now);
  return (uint64_t)now.tv_sec * 1000000000ULL + (uint64_t)now.tv_nsec;
}

uint64_t sent_unit_hash(const void *data, uint32_t len)
{
  return proto_hash64(data, len);
}

rpl_err sent_hashes_create(uint64_t window_ns, struct sent_hashes **out)
{
  struct sent_hashes *sh = calloc(1, sizeof *sh);
  *out = NULL;
  if (!sh)
    return RPL_E_NOMEM;
  pthread_mutex_init(&sh->lock, NULL);
  sh->window_ns = window_ns;
  sh->epoch_start_ns = sh->complete_since_ns = boottime_ns();
  *out = sh;
  return RPL_OK;
}

static void free_pages(struct sent_hashes *sh)
{
  for (uint64_t i = 0; i < sh->npages_max; i++) {
    free(sh->pages[i]);
    sh->pages[i] = NULL;
  }
  sh->npages = sh->units = 0;
}

void sent_hashes_destroy(struct sent_hashes *sh)
{
  if (!sh)
    return;
  free_pages(sh);
  free(sh->pages);
  free(sh->pending.units);
  free(sh->pending.hashes);
  pthread_mutex_destroy(&sh->lock);
  free(sh);
}

static void forget_locked(struct sent_hashes *sh, uint64_t now)
{
  free_pages(sh);
  sh->epoch_start_ns = sh->complete_since_ns = now;
}

void sent_hashes_begin(struct sent_hashes *sh, bool recorded, uint64_t disk_size)
{
  pthread_mutex_lock(&sh->lock);
  sh->pending.n = 0;
  sh->pending.recorded = recorded;
  sh->pending.disk_size = disk_size;
  pthread_mutex_unlock(&sh->lock);
}

static bool pending_append(struct sent_hashes *sh, uint64_t unit, uint64_t hash)
{
  if (sh->pending.n == sh->pending.cap) {
    if (sh->pending.cap == SENT_HASHES_MAX_CYCLE_UNITS)
      return false;
    uint32_t cap = sh->pending.cap ? sh->pending.cap * 2 : 4096;
    uint64_t *u = realloc(sh->pending.units, cap * sizeof *u);
    if (u)
      sh->pending.units = u;
    uint64_t *h = u ? realloc(sh->pending.hashes, cap * sizeof *h) : NULL;
    if (!h)
      return false;
    sh->pending.hashes = h;
    sh->pending.cap = cap;
  }
  sh->pending.units[sh->pending.n] = unit;
  sh->pending.hashes[sh->pending.n++] = hash;
  return true;
}

void sent_hashes_add(struct sent_hashes *sh, uint64_t offset, uint32_t length, const uint64_t *unit_hashes)
{
  pthread_mutex_lock(&sh->lock);
  if (!sh->pending.recorded || !length)
    goto out;
  uint64_t end = offset + length;
  if (!unit_hashes || offset % SENT_UNIT || (end % SENT_UNIT && end != sh->pending.disk_size)) {
    sh->pending.recorded = false;
    goto out;
  }
  uint32_t units = (length + SENT_UNIT - 1) / SENT_UNIT;
  for (uint32_t i = 0; i < units; i++)
    if (!pending_append(sh, (offset >> SENT_UNIT_SHIFT) + i, unit_hashes[i])) {
      sh->pending.recorded = false;
      break;
    }
out:
  pthread_mutex_unlock(&sh->lock);
}

/* The directory covers the disk as the cycle saw it (it grows with the disk). False without memory. */
static bool directory_for(struct sent_hashes *sh, uint64_t disk_size)
{
  uint64_t units = (disk_size + SENT_UNIT - 1) / SENT_UNIT;
  uint64_t need = (units + SENT_PAGE_UNITS - 1) / SENT_PAGE_UNITS;
  if (need <= sh->npages_max)
    return true;
  struct page **p = realloc(sh->pages, need * sizeof *p);
  if (!p)
    return false;
  memset(p + sh->npages_max, 0, (need - sh->npages_max) * sizeof *p);
  sh->pages = p;
  sh->npages_max = need;
  return true;
}

/* False past SENT_HASHES_MAX_PAGES or without memory. */
static bool put(struct sent_hashes *sh, uint64_t unit, uint64_t hash)
{
  uint64_t pi = unit / SENT_PAGE_UNITS, u = unit % SENT_PAGE_UNITS;
  if (pi >= sh->npages_max)
    return false;
  struct page *pg = sh->pages[pi];
  if (!pg) {
    if (sh->npages == SENT_HASHES_MAX_PAGES || !(pg = calloc(1, sizeof *pg)))
      return false;
    sh->pages[pi] = pg;
    sh->npages++;
  }
  if (!(pg->present[u / 64] & (1ULL << (u % 64)))) {
    pg->present[u / 64] |= 1ULL << (u % 64);
    sh->units++;
  }
  pg->hash[u] = hash;
  pg->epoch = sh->epoch;
  return true;
}

/* A new epoch a window after the last one began; pages committed to in neither it nor the one
 * before (nothing for a whole window) go. */
static void next_epoch_if_due(struct sent_hashes *sh, uint64_t now)
{
  if (now - sh->epoch_start_ns < sh->window_ns)
    return;
  sh->epoch++;
  sh->epoch_start_ns = now;
  for (uint64_t i = 0; i < sh->npages_max; i++) {
    struct page *pg = sh->pages[i];
    if (!pg || pg->epoch + 1 >= sh->epoch)
      continue;
    for (unsigned w = 0; w < SENT_PAGE_UNITS / 64; w++)
      sh->units -= (uint64_t)__builtin_popcountll(pg->present[w]);
    free(pg);
    sh->pages[i] = NULL;
    sh->npages--;
  }
}

void sent_hashes_commit(struct sent_hashes *sh)
{
  pthread_mutex_lock(&sh->lock);
  uint64_t now = boottime_ns();
  bool ok = sh->pending.recorded && directory_for(sh, sh->pending.disk_size);
  if (ok) {
    next_epoch_if_due(sh, now);
    for (uint32_t i = 0; i < sh->pending.n && ok; i++) /* in the order sent: a unit read twice keeps the last */
      ok = put(sh, sh->pending.units[i], sh->pending.hashes[i]);
  }
  if (!ok)
    forget_locked(sh, now);
  sh->pending.n = 0;
  sh->pending.recorded = false; /* until the next begin */
  pthread_mutex_unlock(&sh->lock);
}

void sent_hashes_forget(struct sent_hashes *sh)
{
  pthread_mutex_lock(&sh->lock);
  forget_locked(sh, boottime_ns());
  pthread_mutex_unlock(&sh->lock);
}

static bool complete_locked(const struct sent_hashes *sh)
{
  return boottime_ns() - sh->complete_since_ns >= sh->window_ns;
}

void sent_hashes_stats(struct sent_hashes *sh, struct sent_stats *st)
{
  pthread_mutex_lock(&sh->lock);
  *st = (struct sent_stats){.complete = complete_locked(sh), .units = sh->units, .pages = sh->npages,
                            .checks = sh->checks, .refused = sh->refused, .checked_bytes = sh->checked_bytes,
                            .differing_bytes = sh->differing_bytes, .check_ms = sh->check_ns / 1000000};
  pthread_mutex_unlock(&sh->lock);
}

struct check_pass {
  int fd;
  uint64_t disk_size;
  uint8_t *buf;
  void (*mark)(void *ctx, uint64_t offset, uint64_t length);
  void *ctx;
  struct sent_check *st;
  uint64_t run_off, run_len; /* differing bytes not handed to mark yet */
};

/* Units [first, first + n) of page pg (all present), read in one go and compared. False on a read error. */
static bool check_run(struct check_pass *c, const struct page *pg, uint64_t page_first, uint64_t first, uint64_t n)
{
  uint64_t off = first << SENT_UNIT_SHIFT;
  if (off >= c->disk_size) /* the disk shrank: nothing there to compare */
    return true;
  uint64_t len = n << SENT_UNIT_SHIFT;
  if (len > c->disk_size - off)
    len = c->disk_size - off;
  size_t got = 0;
  if (file_pread_full(c->fd, c->buf, (size_t)len, off, &got) != RPL_OK || got != len)
    return false;
  c->st->checked_bytes += len;
  for (uint64_t k = 0; k < n; k++) {
    uint64_t u_off = off + (k << SENT_UNIT_SHIFT);
    if (u_off >= off + len)
      break;
    uint32_t u_len = off + len - u_off < SENT_UNIT ? (uint32_t)(off + len - u_off) : SENT_UNIT;
    if (sent_unit_hash(c->buf + (k << SENT_UNIT_SHIFT), u_len) == pg->hash[first + k - page_first])
      continue;
    c->st->differing_bytes += u_len;
    if (c->run_len && c->run_off + c->run_len == u_off) {
      c->run_len += u_len;
      continue;
    }
    if (c->run_len)
      c->mark(c->ctx, c->run_off, c->run_len);
    c->run_off = u_off;
    c->run_len = u_len;
  }
  return true;
}

bool sent_hashes_check(struct sent_hashes *sh, int fd, uint64_t disk_size,
                       void (*mark)(void *ctx, uint64_t offset, uint64_t length), void *ctx, struct sent_check *st)
{
  memset(st, 0, sizeof *st);
  pthread_mutex_lock(&sh->lock);
  uint64_t start_ns = boottime_ns();
  struct check_pass c = {.fd = fd, .disk_size = disk_size, .mark = mark, .ctx = ctx, .st = st};
  bool ok = complete_locked(sh) && fd >= 0 &&
            posix_memalign((void **)&c.buf, 4096, (size_t)CHECK_READ_UNITS * SENT_UNIT) == 0;
  for (uint64_t pi = 0; ok && pi < sh->npages_max; pi++) {
    const struct page *pg = sh->pages[pi];
    if (!pg)
      continue;
    uint64_t page_first = pi * SENT_PAGE_UNITS;
    for (uint64_t u = 0; ok && u < SENT_PAGE_UNITS;) { /* runs of present units, CHECK_READ_UNITS at most */
      if (!(pg->present[u / 64] & (1ULL << (u % 64)))) {
        u++;
        continue;
      }
      uint64_t end = u + 1;
      while (end < SENT_PAGE_UNITS && end - u < CHECK_READ_UNITS && (pg->present[end / 64] & (1ULL << (end % 64))))
        end++;
      ok = check_run(&c, pg, page_first, page_first + u, end - u);
      u = end;
    }
  }
  if (ok && c.run_len)
    mark(ctx, c.run_off, c.run_len);
  if (ok) {
    sh->checks++;
    sh->checked_bytes += st->checked_bytes;
    sh->differing_bytes += st->differing_bytes;
  } else {
    sh->refused++;
  }
  sh->check_ns += boottime_ns() - start_ns;
  pthread_mutex_unlock(&sh->lock);
  free(c.buf);
  return ok;
}
