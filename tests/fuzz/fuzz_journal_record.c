/* fuzz_journal_record.c - libFuzzer target for the cache journal's record decoder and its crash
 * recovery: the input is decoded record by record in memory, then written as a segment file and
 * opened as a journal (scan, torn-tail cut) whose committed cycles are read back. Garbage must be
 * refused cleanly: no crash, no leak, no read outside the input, no allocation above the caps. */
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "journal.h"
#include "rpl_log.h"
#include "../unit/tmpdir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The disk id the seed corpus was written with, so that inputs reach past the segment header. */
static const uint8_t fuzz_disk[PROTO_ID_SIZE] = {0xf0, 0x0d, 0xfa, 0xce, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
static char state_dir[256], journal_dir[400];

static void remove_state(void)
{
  DIR *d = opendir(journal_dir);
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
  remove_state();
  (void)rmdir(journal_dir);
  char parent[300];
  snprintf(parent, sizeof parent, "%s/journal", state_dir);
  (void)rmdir(parent);
  (void)rmdir(state_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  /* Damage reports are the expected outcome for most inputs: below "err" nothing is printed. */
  log_set_level((enum log_level)(LOG_LVL_ERR - 1));
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  if (tmpdir_create_in(state_dir, sizeof state_dir, base, "fuzz-journal"))
    abort();
  char uuid[37];
  uuid_unparse_lower(fuzz_disk, uuid);
  snprintf(journal_dir, sizeof journal_dir, "%s/journal/%s", state_dir, uuid);
  atexit(remove_all);
  return 0;
}

static void decode_all(const uint8_t *data, size_t size)
{
  size_t off = 0;
  while (off < size) {
    struct journal_record rec;
    size_t used = 0;
    rpl_err e = journal_record_decode(data + off, size - off, &rec, &used);
    if (e == RPL_E_AGAIN) {
      if (used <= size - off || used > JOURNAL_MAX_RECORD)
        abort(); /* AGAIN must ask for more than there is, and never beyond the cap */
      return;
    }
    if (e != RPL_OK)
      return;
    if (used < JOURNAL_HEADER_SIZE || used > size - off || rec.payload_len > JOURNAL_MAX_PAYLOAD ||
        (rec.payload_len && (rec.payload < data + off || rec.payload + rec.payload_len > data + off + used)))
      abort();
    off += used;
  }
}

static void recover_and_read(const uint8_t *data, size_t size)
{
  struct journal *j = NULL;
  /* A first open creates the directories; the input then becomes the first segment. */
  if (journal_open(state_dir, fuzz_disk, NULL, &j) != RPL_OK)
    abort();
  journal_close(j);
  char path[500];
  snprintf(path, sizeof path, "%s/0000000000000001.seg", journal_dir);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || write(fd, data, size) != (ssize_t)size)
    abort();
  close(fd);
  j = NULL;
  if (journal_open(state_dir, fuzz_disk, NULL, &j) == RPL_OK) {
    struct journal_usage u;
    journal_get_usage(j, &u);
    if (u.open_cycle || u.bytes > size)
      abort(); /* recovery only ever cuts */
    for (uint64_t n = u.last_applied + 1; n <= u.last_committed; n++) {
      struct journal_reader *r;
      if (journal_reader_open(j, n, &r) != RPL_OK)
        abort(); /* every cycle the scan committed has a reader */
      struct journal_extent x;
      bool end = false;
      while (!end && journal_reader_next(r, &x, &end) == RPL_OK)
        ;
      journal_reader_close(r);
    }
    /* The recovered journal takes the next cycle. */
    if (journal_begin_cycle(j, u.last_committed + 1, PROTO_CYCLE_PLAIN) != RPL_OK ||
        journal_abandon_cycle(j, u.last_committed + 1) != RPL_OK)
      abort();
    journal_close(j);
  }
  remove_state();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  decode_all(data, size);
  if (size <= (1u << 20))
    recover_and_read(data, size);
  return 0;
}
