/* agent_state.c - agent.conf: key=value lines, written atomically, so a crash mid-save leaves the
 * old state or the new one, never a mix. */
#include "agent_state.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "rpl_log.h"
#include "state_files.h"

#define CONF_CAP  (256u << 10)

void agent_state_path(const struct agent_state *st, const char *name, char *out, size_t outsz)
{
  snprintf(out, outsz, "%s/%s", st->dir, name);
}

void agent_disk_id_text(const uint8_t id[PROTO_ID_SIZE], char out[37])
{
  uuid_unparse_lower(id, out);
}

static int hex_decode(const char *hex, uint8_t *out, size_t n)
{
  /* Digits only: sscanf's %2x alone also takes "a+", " f" and "-1". */
  if (strlen(hex) != 2 * n || strspn(hex, "0123456789abcdefABCDEF") != 2 * n)
    return -1;
  for (size_t i = 0; i < n; i++) {
    unsigned v;
    if (sscanf(hex + 2 * i, "%2x", &v) != 1)
      return -1;
    out[i] = (uint8_t)v;
  }
  return 0;
}

rpl_err agent_state_load(const char *dir, struct agent_state *st)
{
  memset(st, 0, sizeof *st);
  if (strlen(dir) >= sizeof st->dir - 32) {
    log_err("state directory path too long: %s", dir);
    return RPL_E_INVALID_ARGUMENT;
  }
  snprintf(st->dir, sizeof st->dir, "%s", dir);
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
    log_err("cannot create the state directory %s: %s", dir, strerror(errno));
    return errno == EACCES ? RPL_E_PERMISSION : RPL_E_IO;
  }
  char path[600], *text;
  agent_state_path(st, STATE_AGENT_CONF, path, sizeof path);
  rpl_err err = file_read_all(path, CONF_CAP, &text);
  if (err == RPL_E_NOT_FOUND)
    return RPL_OK;
  if (err) {
    log_err("cannot read %s: %s", path, rpl_strerror(err));
    return err;
  }
  int lineno = 0;
  for (char *save = NULL, *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
    lineno++;
    if (!*line || *line == '#')
      continue;
    char *eq = strchr(line, '=');
    if (!eq)
      goto bad;
    *eq = '\0';
    const char *key = line, *val = eq + 1;
    if (!strcmp(key, "agent_id") && strlen(val) < sizeof st->agent_id) {
      strcpy(st->agent_id, val);
    } else if (!strcmp(key, "appliance") && strlen(val) < sizeof st->appliance) {
      strcpy(st->appliance, val);
    } else if (!strcmp(key, "member")) {
      if (st->nmembers == AGENT_MAX_MEMBERS || !*val || strlen(val) >= sizeof st->members[0])
        goto bad;
      strcpy(st->members[st->nmembers++], val);
    } else if (!strcmp(key, "fingerprint")) {
      if (hex_decode(val, st->fingerprint, sizeof st->fingerprint))
        goto bad;
    } else if (!strcmp(key, "disk")) {
      /* disk=UUID DEVICE */
      const char *sp = strchr(val, ' ');
      struct agent_disk *d = &st->disks[st->ndisks];
      if (st->ndisks == AGENT_MAX_DISKS || !sp || sp - val != 36 || strlen(sp + 1) >= sizeof d->device)
        goto bad;
      char id[37];
      memcpy(id, val, 36);
      id[36] = '\0';
      if (uuid_parse(id, d->id))
        goto bad;
      strcpy(d->device, sp + 1);
      st->ndisks++;
    } else {
      goto bad;
    }
    continue;
  bad:
    log_err("%s line %d is malformed: restore it from a backup or re-register the agent", path, lineno);
    free(text);
    return RPL_E_CONFIG;
  }
  free(text);
  st->registered = st->agent_id[0] && st->appliance[0];
  return RPL_OK;
}

rpl_err agent_state_save(const struct agent_state *st)
{
  char buf[CONF_CAP];
  size_t o = 0;
  o += (size_t)snprintf(buf + o, sizeof buf - o, "# mobility-agent state: written by the agent, edit with care\n");
  if (st->agent_id[0]) {
    o += (size_t)snprintf(buf + o, sizeof buf - o, "agent_id=%s\nappliance=%s\nfingerprint=", st->agent_id, st->appliance);
    for (size_t i = 0; i < sizeof st->fingerprint; i++)
      o += (size_t)snprintf(buf + o, sizeof buf - o, "%02x", st->fingerprint[i]);
    o += (size_t)snprintf(buf + o, sizeof buf - o, "\n");
  }
  for (size_t i = 0; i < st->nmembers && o < sizeof buf; i++)
    o += (size_t)snprintf(buf + o, sizeof buf - o, "member=%s\n", st->members[i]);
  for (size_t i = 0; i < st->ndisks && o < sizeof buf; i++) {
    char id[37];
    agent_disk_id_text(st->disks[i].id, id);
    o += (size_t)snprintf(buf + o, sizeof buf - o, "disk=%s %s\n", id, st->disks[i].device);
  }
  if (o >= sizeof buf)
    return RPL_E_LIMIT;
  char path[600];
  agent_state_path(st, STATE_AGENT_CONF, path, sizeof path);
  return file_write_atomic(path, buf, o, 0600);
}

struct agent_disk *agent_state_find_disk(struct agent_state *st, const char *device)
{
  for (size_t i = 0; i < st->ndisks; i++)
    if (!strcmp(st->disks[i].device, device))
      return &st->disks[i];
  return NULL;
}
