/* fuzz_state_files.c - Description: libFuzzer target for the small files the appliance reads back
 * from its state directory at start with code of its own (not SQLite's): the lease id (lease-id) and
 * a disk's journal "applied" marker. The first byte picks the file, the rest is its content, read by
 * the real loaders from a temporary state directory: damage is refused or replaced, never trusted. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "file_io.h"
#include "journal.h"
#include "lease.h"
#include "rpl_log.h"
#include "state_files.h"
#include "../unit/tmpdir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The disk id the seed corpus's applied markers name. */
static const uint8_t fuzz_disk[PROTO_ID_SIZE] = {0xf0, 0x0d, 0xfa, 0xce, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static char state_dir[256], journal_dir[400];

static void remove_in(const char *dir)
{
  DIR *d = opendir(dir);
  if (d) {
    struct dirent *de;
    while ((de = readdir(d)))
      if (de->d_name[0] != '.')
        (void)unlinkat(dirfd(d), de->d_name, 0);
    closedir(d);
  }
}

static void remove_all(void)
{
  remove_in(journal_dir);
  (void)rmdir(journal_dir);
  char p[300];
  snprintf(p, sizeof p, "%s/%s", state_dir, STATE_JOURNAL_DIR);
  (void)rmdir(p);
  remove_in(state_dir);
  (void)rmdir(state_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_set_level((enum log_level)(LOG_LVL_ERR - 1));
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  if (tmpdir_create_in(state_dir, sizeof state_dir, base, "fuzz-state"))
    abort();
  char uuid[37];
  uuid_unparse_lower(fuzz_disk, uuid);
  snprintf(journal_dir, sizeof journal_dir, "%s/%s/%s", state_dir, STATE_JOURNAL_DIR, uuid);
  atexit(remove_all);
  return 0;
}

static void write_file(const char *path, const uint8_t *data, size_t size)
{
  if (file_write_atomic(path, data, size, 0600) != RPL_OK)
    abort();
}

/* lease-id: a UUID (and a line break) is kept as it is; anything else is replaced by a new one. */
static void lease_id(const uint8_t *data, size_t size)
{
  char path[400], id[40], *text = NULL;
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_LEASE_ID);
  write_file(path, data, size);
  uuid_t u;
  if (lease_owner_id(state_dir, id) != RPL_OK || strlen(id) != 36 || uuid_parse(id, u))
    abort();
  char first[37] = "";
  if (size >= 36) {
    memcpy(first, data, 36);
    first[36] = '\0';
  }
  bool kept = size >= 36 && strlen(first) == 36 && !uuid_parse(first, u);
  if (kept ? strcmp(id, first) != 0 : false)
    abort();
  /* A replaced id is written back, so that the next start proposes the same one. */
  if (!kept && (file_read_all(path, 64, &text) != RPL_OK || strncmp(text, id, 36) || text[36] != '\n'))
    abort();
  free(text);
  (void)unlink(path);
}

/* journal/<disk>/applied: a checksummed record naming the disk and its last applied cycle. */
static void applied_marker(const uint8_t *data, size_t size)
{
  struct journal *j = NULL;
  if (journal_open(state_dir, fuzz_disk, NULL, &j) != RPL_OK) /* creates the folders */
    abort();
  journal_close(j);
  char path[500];
  snprintf(path, sizeof path, "%s/%s", journal_dir, STATE_JOURNAL_APPLIED);
  write_file(path, data, size);
  j = NULL;
  if (journal_open(state_dir, fuzz_disk, NULL, &j) == RPL_OK) {
    struct journal_usage use;
    journal_get_usage(j, &use);
    if (use.last_committed < use.last_applied || use.open_cycle)
      abort();
    journal_close(j);
  }
  remove_in(journal_dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1 || size > 4096)
    return 0;
  if (data[0] & 1)
    applied_marker(data + 1, size - 1);
  else
    lease_id(data + 1, size - 1);
  return 0;
}
