/* fuzz_agent_state.c - Description: libFuzzer target for agent_state_load, the agent.conf reader
 * (registration and protected disks). The input is the file, written to a temporary state directory
 * so that the real loader reads it; what loads must save and load back to the same file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "agent_state.h"
#include "file_io.h"
#include "rpl_log.h"
#include "state_files.h"
#include "../unit/tmpdir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[256];

static void remove_all(void)
{
  char p[400];
  snprintf(p, sizeof p, "%s/%s", dir, STATE_AGENT_CONF);
  (void)unlink(p);
  (void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_set_level((enum log_level)(LOG_LVL_ERR - 1));
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  if (tmpdir_create_in(dir, sizeof dir, base, "fuzz-agent-state"))
    abort();
  atexit(remove_all);
  return 0;
}

static char *conf_text(void)
{
  char p[400], *text = NULL;
  snprintf(p, sizeof p, "%s/%s", dir, STATE_AGENT_CONF);
  if (file_read_all(p, 1u << 20, &text) != RPL_OK)
    abort();
  return text;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char path[400];
  snprintf(path, sizeof path, "%s/%s", dir, STATE_AGENT_CONF);
  if (file_write_atomic(path, data, size, 0600) != RPL_OK)
    abort();
  static struct agent_state st, again;
  if (agent_state_load(dir, &st) != RPL_OK)
    return 0;
  if (st.ndisks > AGENT_MAX_DISKS || (st.registered && (!st.agent_id[0] || !st.appliance[0])))
    abort();
  for (size_t i = 0; i < st.ndisks; i++)
    if (agent_state_find_disk(&st, st.disks[i].device) == NULL)
      abort();
  /* A pinned fingerprint comes only from hex digits (the loader reads up to the first NUL). */
  size_t text_len = strnlen((const char *)data, size);
  for (size_t off = 0; off < text_len;) {
    const char *line = (const char *)data + off, *nl = memchr(line, '\n', text_len - off);
    size_t n = nl ? (size_t)(nl - line) : text_len - off;
    if (n >= 12 && !memcmp(line, "fingerprint=", 12)) {
      size_t hex = 0; /* within the line: the input is not NUL-terminated */
      while (12 + hex < n && strchr("0123456789abcdefABCDEF", line[12 + hex]) && line[12 + hex])
        hex++;
      if (hex < n - 12)
        abort();
    }
    off += n + 1;
  }
  /* What loads saves to a file that loads to the same state, whose file is the same again. */
  if (agent_state_save(&st) != RPL_OK)
    abort();
  char *a = conf_text();
  if (agent_state_load(dir, &again) != RPL_OK || again.ndisks != st.ndisks || agent_state_save(&again) != RPL_OK)
    abort();
  char *b = conf_text();
  if (strcmp(a, b))
    abort();
  free(a);
  free(b);
  return 0;
}
