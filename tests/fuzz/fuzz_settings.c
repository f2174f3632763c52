/* fuzz_settings.c - Description: libFuzzer target for settings_load, the appliance.conf reader, and
 * the retention and recovery-point schedule texts the daemon parses from it at start. The input is
 * the file (written to a temporary state directory: the real loader reads it); what loads must save
 * and load back to the same file, byte for byte. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "file_io.h"
#include "retention.h"
#include "rpl_log.h"
#include "schedule.h"
#include "settings.h"
#include "state_files.h"
#include "../unit/tmpdir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir_a[256], dir_b[256];

static void remove_dir(const char *dir)
{
  char p[400];
  snprintf(p, sizeof p, "%s/%s", dir, STATE_APPLIANCE_CONF);
  (void)unlink(p);
  (void)rmdir(dir);
}

static void remove_all(void)
{
  remove_dir(dir_a);
  remove_dir(dir_b);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_set_level((enum log_level)(LOG_LVL_ERR - 1));
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  if (tmpdir_create_in(dir_a, sizeof dir_a, base, "fuzz-settings") ||
      tmpdir_create_in(dir_b, sizeof dir_b, base, "fuzz-settings"))
    abort();
  atexit(remove_all);
  return 0;
}

static char *conf_text(const char *dir)
{
  char p[400], *text = NULL;
  snprintf(p, sizeof p, "%s/%s", dir, STATE_APPLIANCE_CONF);
  if (file_read_all(p, 1u << 20, &text) != RPL_OK)
    abort();
  return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char path[400];
  snprintf(path, sizeof path, "%s/%s", dir_a, STATE_APPLIANCE_CONF);
  if (file_write_atomic(path, data, size, 0600) != RPL_OK)
    abort();
  static struct appliance_settings s, again;
  if (settings_load(dir_a, &s) != RPL_OK)
    return 0;
  if (!s.storage[0] || !s.max_in_flight || s.lease_duration_s < SETTINGS_MIN_LEASE_S ||
      s.lease_duration_s > SETTINGS_MAX_LEASE_S)
    abort(); /* what loads is usable as it is */
  struct retention_policy pol;
  struct point_schedule sched;
  char text[256];
  if (retention_parse(s.retention, &pol) == RPL_OK) {
    struct retention_policy back;
    retention_format(&pol, text, sizeof text);
    if (retention_parse(text, &back) != RPL_OK || back.all_s != pol.all_s || back.hourly_s != pol.hourly_s ||
        back.daily_s != pol.daily_s)
      abort(); /* the canonical text means the same policy */
  }
  if (schedule_parse(s.points, &sched) == RPL_OK) {
    struct point_schedule back;
    schedule_format(&sched, text, sizeof text);
    if (schedule_parse(text, &back) != RPL_OK || memcmp(back.every_s, sched.every_s, sizeof back.every_s))
      abort();
  }
  /* What loads saves to a file that loads to the same settings, whose file is the same again. */
  if (settings_save(dir_a, &s) != RPL_OK || settings_load(dir_a, &again) != RPL_OK || settings_save(dir_b, &again) != RPL_OK)
    abort();
  char *a = conf_text(dir_a), *b = conf_text(dir_b);
  if (strcmp(a, b))
    abort();
  free(a);
  free(b);
  return 0;
}
