/* disks.c - the appliance's disk registry: opening the disks the catalog knows (journal, store),
 * bringing the catalog up to the journal, and the recovery-point images waiting to be recorded. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <uuid/uuid.h>

#include "appliance.h"
#include "file_io.h"
#include "rpl_log.h"
#include "state_files.h"

void id_text(const uint8_t id[PROTO_ID_SIZE], char out[37]) { uuid_unparse_lower(id, out); }

struct disk *find_disk(struct appliance *a, const uint8_t id[PROTO_ID_SIZE])
{
  for (struct disk *d = a->disks; d; d = d->next)
    if (!memcmp(d->id, id, PROTO_ID_SIZE))
      return d;
  return NULL;
}

/* The cache journal's options: the defaults, or for tests a small cache from $RPL_TEST_CACHE_BYTES
 * (bytes, or with a K, M or G suffix), cut into eight segments so that it drains as it is applied. */
static struct journal_options cache_options(const char *disk)
{
  struct journal_options o = {0};
  const char *v = getenv("RPL_TEST_CACHE_BYTES");
  if (!v || !*v)
    return o;
  char *end;
  unsigned long long n = strtoull(v, &end, 10);
  int shift = *end == 'K' ? 10 : *end == 'M' ? 20 : *end == 'G' ? 30 : 0;
  if ((shift && end[1]) || (!shift && *end) || n == 0 || n > (1ull << 40) >> shift) {
    log_warn("RPL_TEST_CACHE_BYTES=%s is not a size: the cache keeps its default size", v);
    return o;
  }
  o.limit_bytes = n << shift;
  o.segment_bytes = o.limit_bytes / 8 > (1u << 20) ? o.limit_bytes / 8 : 1u << 20;
  log_warn("disk %s: RPL_TEST_CACHE_BYTES: its cache holds %llu bytes (tests only)", disk,
           (unsigned long long)o.limit_bytes);
  return o;
}

/* Brings the catalog up to what the journal knows (a crash can fall between the journal's commit
 * or apply and the catalog's record of it). */
static void reconcile_catalog(struct appliance *a, struct disk *d)
{
  struct catalog_disk cd;
  if (catalog_disk_get(a->cat, d->id, &cd))
    return;
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  for (uint64_t n = cd.last_committed_cycle + 1; n <= u.last_committed; n++) {
    struct journal_cycle_info info;
    if (journal_cycle_info(d->journal, n, &info))
      continue; /* trimmed already: applied, and its details are gone */
    struct catalog_cycle cy = {.n = n, .kind = info.kind, .committed_time = time(NULL), .extents = info.totals.extents,
                               .raw_bytes = info.totals.raw_bytes, .payload_bytes = info.totals.payload_bytes};
    memcpy(cy.disk_id, d->id, PROTO_ID_SIZE);
    rpl_err e = catalog_cycle_committed(a->cat, &cy);
    (void)e;
  }
  for (uint64_t n = cd.last_applied_cycle + 1; n <= u.last_applied; n++) {
    rpl_err e = catalog_cycle_applied(a->cat, d->id, n, time(NULL));
    (void)e;
  }
}

/* STATE/journal/<id>[/name]. */
static int journal_path(const char *state_dir, const uint8_t id[PROTO_ID_SIZE], const char *name, char *out,
                        size_t size)
{
  char text[37];
  id_text(id, text);
  int n = snprintf(out, size, "%s/" STATE_JOURNAL_DIR "/%s%s%s", state_dir, text, name ? "/" : "", name ? name : "");
  return n < 0 || (size_t)n >= size ? -1 : 0;
}

static bool delete_asked(const char *state_dir, const uint8_t id[PROTO_ID_SIZE])
{
  char path[1200];
  return !journal_path(state_dir, id, STATE_DELETE_REPLICA, path, sizeof path) && access(path, F_OK) == 0;
}

/* Removes a disk's journal folder (flat: segments, markers, the hash index). */
static rpl_err remove_journal_dir(const char *state_dir, const uint8_t id[PROTO_ID_SIZE])
{
  char dir[1200];
  if (journal_path(state_dir, id, NULL, dir, sizeof dir))
    return RPL_E_LIMIT;
  int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0)
    return errno == ENOENT ? RPL_OK : rpl_fail(RPL_E_IO, "cannot open %s: %s", dir, strerror(errno));
  DIR *dp = fdopendir(dfd);
  if (!dp) {
    close(dfd);
    return rpl_fail(RPL_E_IO, "cannot read %s: %s", dir, strerror(errno));
  }
  rpl_err e = RPL_OK;
  for (struct dirent *de; !e && (de = readdir(dp));)
    if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && unlinkat(dfd, de->d_name, 0) != 0 && errno != ENOENT)
      e = rpl_fail(RPL_E_IO, "cannot remove %s/%s: %s", dir, de->d_name, strerror(errno));
  closedir(dp);
  if (!e && rmdir(dir) != 0 && errno != ENOENT)
    e = rpl_fail(RPL_E_IO, "cannot remove %s: %s", dir, strerror(errno));
  if (!e && (e = file_fsync_parent(dir)))
    e = rpl_fail(e, "cannot make the removal of %s durable", dir);
  return e;
}

rpl_err disk_delete_ask(struct appliance *a, struct disk *d)
{
  char path[1200];
  if (journal_path(a->state_dir, d->id, STATE_DELETE_REPLICA, path, sizeof path))
    return RPL_E_LIMIT;
  int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  rpl_err e = RPL_OK;
  if (fd < 0 || fsync(fd) != 0)
    e = rpl_fail(RPL_E_IO, "cannot write %s: %s", path, strerror(errno));
  if (fd >= 0)
    close(fd);
  if (!e && (e = file_fsync_parent(path)))
    e = rpl_fail(e, "cannot make %s durable", path);
  pthread_mutex_lock(&a->lock);
  d->delete_due = true; /* asked even when the marker failed: this run deletes it */
  d->delete_retry_ms = 0;
  pthread_cond_signal(&a->work);
  pthread_mutex_unlock(&a->lock);
  return e;
}

rpl_err disk_retire(struct appliance *a, struct disk *d)
{
  pthread_mutex_lock(&a->lock);
  for (struct disk **p = &a->disks; *p; p = &(*p)->next)
    if (*p == d) {
      *p = d->next;
      a->ndisks--;
      break;
    }
  struct store *st = d->store;
  d->store = NULL;
  d->next = a->retired;
  a->retired = d;
  pthread_cond_broadcast(&a->applied);
  pthread_mutex_unlock(&a->lock);
  if (st)
    st->ops->close(st);
  resync_index_close(d);
  journal_close(d->journal);
  d->journal = NULL;
  return remove_journal_dir(a->state_dir, d->id);
}

/* Journal folders of disks the catalog no longer has, left by a deletion interrupted after its
 * catalog rows went (they hold the marker): removed. */
static void remove_deleted_leftovers(struct appliance *a)
{
  char dir[1100];
  snprintf(dir, sizeof dir, "%s/" STATE_JOURNAL_DIR, a->state_dir);
  DIR *dp = opendir(dir);
  if (!dp)
    return;
  for (struct dirent *de; (de = readdir(dp));) {
    uuid_t id;
    struct catalog_disk cd;
    if (uuid_parse(de->d_name, id) != 0 || !delete_asked(a->state_dir, id) || catalog_disk_get(a->cat, id, &cd) == RPL_OK)
      continue;
    rpl_err e = remove_journal_dir(a->state_dir, id);
    if (e)
      log_warn("disk %s: cannot remove the cache of a deleted disk: %s", de->d_name, rpl_detail(e));
    else
      log_notice("disk %s: the cache of a deleted disk removed (its deletion was interrupted)", de->d_name);
  }
  closedir(dp);
}

/* Opens the disk's journal and replica and adds it to the list (lock held). */
rpl_err open_disk(struct appliance *a, const struct catalog_disk *cd, struct disk **out)
{
  if (a->ndisks >= MAX_DISKS)
    return rpl_fail(RPL_E_LIMIT, "this appliance serves at most %d disks: move the agent to another appliance",
                    MAX_DISKS);
  struct disk *d = calloc(1, sizeof *d);
  if (!d)
    return RPL_E_NOMEM;
  memcpy(d->id, cd->id, PROTO_ID_SIZE);
  memcpy(d->agent, cd->agent_id, PROTO_ID_SIZE);
  snprintf(d->name, sizeof d->name, "%.255s", cd->name);
  d->size = cd->size_bytes;
  d->sector = cd->sector_size;
  d->state = cd->state;
  d->unprotected_time = cd->unprotected_time;
  snprintf(d->reason, sizeof d->reason, "%.255s", cd->state_reason);
  char id[37];
  id_text(d->id, id);
  char why[RPL_DETAIL_MAX];
  struct journal_options jo = cache_options(id);
  rpl_err err = journal_open(a->state_dir, d->id, &jo, &d->journal);
  if (err) {
    snprintf(why, sizeof why, "%s", rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    err = rpl_fail(err, "cannot open its cache journal %s/%s/%s: %s", a->state_dir, STATE_JOURNAL_DIR, id, why);
  }
  /* A backend reached over the network is opened by the applier once the storage checks pass. */
  if (!err && !a->backend->opens_after_checks && (err = a->backend->open(&a->settings, d->id, d->size, &d->store))) {
    snprintf(why, sizeof why, "%s", rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
    err = rpl_fail(err, "cannot open its %s: %s", a->backend->name, why);
  }
  if (err) {
    log_err("disk %s: %s", id, rpl_detail(err));
    journal_close(d->journal);
    if (d->store)
      d->store->ops->close(d->store);
    free(d);
    return err;
  }
  struct journal_usage u;
  journal_get_usage(d->journal, &u);
  /* A journal that lost its history (new, or moved aside) starts where the catalog stands. */
  if (u.last_committed < cd->last_applied_cycle && u.cycles_pending == 0 && u.open_cycle == 0) {
    if (journal_set_base(d->journal, cd->last_applied_cycle) == RPL_OK)
      journal_get_usage(d->journal, &u);
  }
  resync_index_open(a, d);
  if (d->store)
    resync_index_store_opened(d, d->store);
  d->last_committed = u.last_committed;
  d->last_applied = u.last_applied;
  if (d->state == CATALOG_DISK_ERROR && !strncmp(d->reason, "cannot open its ", 16)) {
    /* It could not be opened before and can now: what it missed (a replaced journal, a replica
     * restored from elsewhere) is compared against the agent's disk. */
    d->state = CATALOG_DISK_RESYNC_REQUIRED;
    d->want_resync = true;
    snprintf(d->reason, sizeof d->reason, "opened again after: %.200s; resync", cd->state_reason);
  }
  reconcile_catalog(a, d);
  if (delete_asked(a->state_dir, d->id)) { /* an unprotect --delete-replica this run finishes */
    d->delete_due = true;
    if (!d->unprotected_time)
      d->unprotected_time = (int64_t)time(NULL);
  }
  schedule_init_disk(a, d, (int64_t)rpl_unix_ms());
  d->next = a->disks;
  a->disks = d;
  a->ndisks++;
  *out = d;
  return RPL_OK;
}

/* The catalog's disks, collected first: its mutex is held during the callback. */
struct disk_list {
  struct catalog_disk *items[MAX_DISKS];
  size_t n, over;
};

static int load_disk_cb(const struct catalog_disk *cd, void *ctx)
{
  struct disk_list *l = ctx;
  struct catalog_disk *c = l->n < MAX_DISKS ? malloc(sizeof *c) : NULL;
  if (!c) {
    l->over++;
    return 0;
  }
  *c = *cd;
  l->items[l->n++] = c;
  return 0;
}

rpl_err load_disks(struct appliance *a)
{
  struct disk_list *l = calloc(1, sizeof *l);
  if (!l)
    return RPL_E_NOMEM;
  rpl_err err = catalog_disk_foreach(a->cat, NULL, load_disk_cb, l);
  if (!err && l->over) /* the others are served; these are said, not dropped silently */
    log_err("the catalog holds %zu disk(s) beyond the %d this appliance serves (or memory ran out): they are not "
            "served; move their agents to another appliance", l->over, MAX_DISKS);
  /* A disk that cannot be opened (a damaged journal, an unreadable replica) is marked ERROR with
   * its reason; the others start. */
  for (size_t i = 0; i < l->n; i++) {
    struct disk *d;
    rpl_err e = err ? err : open_disk(a, l->items[i], &d);
    if (!err && e) {
      rpl_err se = catalog_disk_set_state(a->cat, l->items[i]->id, CATALOG_DISK_ERROR,
                                          rpl_detail(e)[0] ? rpl_detail(e) : rpl_strerror(e));
      (void)se;
    }
    free(l->items[i]);
  }
  free(l);
  if (!err)
    remove_deleted_leftovers(a);
  return err;
}

/* The image of recovery-point cycle n was taken (blob snapshot, or file copy): kept for finish_groups. */
void remember_snapshot(struct appliance *a, struct disk *d, uint64_t n, const char *id)
{
  pthread_mutex_lock(&a->snap_lock);
  if (d->nsnaps == MAX_SNAPS) { /* the oldest was never claimed (its point was not offered) */
    memmove(&d->snaps[0], &d->snaps[1], (MAX_SNAPS - 1) * sizeof d->snaps[0]);
    d->nsnaps--;
  }
  d->snaps[d->nsnaps].cycle = n;
  snprintf(d->snaps[d->nsnaps].id, sizeof d->snaps[0].id, "%s", id);
  d->nsnaps++;
  pthread_mutex_unlock(&a->snap_lock);
}

bool claim_snapshot(struct appliance *a, struct disk *d, uint64_t n, char *id, size_t idsz)
{
  bool found = false;
  pthread_mutex_lock(&a->snap_lock);
  for (unsigned i = 0; i < d->nsnaps && !found; i++)
    if (d->snaps[i].cycle == n) {
      snprintf(id, idsz, "%s", d->snaps[i].id);
      memmove(&d->snaps[i], &d->snaps[i + 1], (d->nsnaps - i - 1) * sizeof d->snaps[0]);
      d->nsnaps--;
      found = true;
    }
  pthread_mutex_unlock(&a->snap_lock);
  return found;
}

/* The upload bucket of an agent (created on first use; NULL without a per-agent limit). Lock held. */
struct rate_limit *agent_limit(struct appliance *a, const uint8_t agent[PROTO_ID_SIZE])
{
  if (!a->settings.agent_limit_mbps || !a->agent_limits)
    return NULL;
  for (size_t i = 0; i < a->nagent_limits; i++)
    if (!memcmp(a->agent_limits[i].agent, agent, PROTO_ID_SIZE))
      return &a->agent_limits[i].rl;
  if (a->nagent_limits == MAX_AGENT_LIMITS)
    return NULL; /* the appliance-wide limit still holds */
  size_t i = a->nagent_limits++;
  memcpy(a->agent_limits[i].agent, agent, PROTO_ID_SIZE);
  rate_limit_init(&a->agent_limits[i].rl, (uint64_t)a->settings.agent_limit_mbps * 1000000);
  return &a->agent_limits[i].rl;
}

void close_disks(struct appliance *a)
{
  for (struct disk *d = a->disks, *next; d; d = next) {
    next = d->next;
    if (d->store)
      d->store->ops->close(d->store);
    resync_index_close(d);
    journal_close(d->journal);
    free(d);
  }
  a->disks = NULL;
  a->ndisks = 0;
  for (struct disk *d = a->retired, *next; d; d = next) {
    next = d->next;
    free(d); /* its store, index and journal were closed when it was deleted */
  }
  a->retired = NULL;
}
