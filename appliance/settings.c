/* settings.c - loads and saves the appliance's key=value settings file in its state directory. */
#include "settings.h"

#include "ratelimit.h"
#include "state_files.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SETTINGS_MAX_BYTES (64 * 1024)

void settings_defaults(struct appliance_settings *s)
{
  memset(s, 0, sizeof *s);
  snprintf(s->container, sizeof s->container, "%s", SETTINGS_DEFAULT_CONTAINER);
  s->require_private_endpoint = true;
  s->max_in_flight = 16;
  s->lease_duration_s = SETTINGS_DEFAULT_LEASE_S;
}

struct field {
  const char *key;
  size_t offset, size; /* a char array in the struct; size 0 = special */
};

#define STR_FIELD(name) {#name, offsetof(struct appliance_settings, name), sizeof(((struct appliance_settings *)0)->name)}
static const struct field fields[] = {
  STR_FIELD(storage), STR_FIELD(container), STR_FIELD(private_dns_zone), STR_FIELD(ca_file),
  STR_FIELD(proxy), STR_FIELD(proxy_bypass), STR_FIELD(identity_endpoint), STR_FIELD(retention),
  STR_FIELD(points), STR_FIELD(key_ttl), STR_FIELD(alerts), STR_FIELD(webhook_ca), STR_FIELD(upload_check),
};

/* A whole decimal number in [min, max] and nothing else; *out is untouched otherwise. */
static bool parse_whole(const char *value, unsigned min, unsigned max, unsigned *out)
{
  if (!*value || strspn(value, "0123456789") != strlen(value) || strlen(value) > 9)
    return false;
  unsigned long n = strtoul(value, NULL, 10);
  if (n < min || n > max)
    return false;
  *out = (unsigned)n;
  return true;
}

rpl_err settings_load(const char *state_dir, struct appliance_settings *s)
{
  settings_defaults(s);
  char path[4200];
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_APPLIANCE_CONF);
  FILE *f = fopen(path, "r");
  if (!f) {
    if (errno == ENOENT) {
      return rpl_fail(RPL_E_NOT_FOUND, "no settings in %s: run 'replication-appliance init --state %s --storage ...' first", state_dir, state_dir);
    }
    int saved = errno;
    return rpl_fail(saved == EACCES ? RPL_E_PERMISSION : RPL_E_IO, "cannot read %s: %s", path, strerror(saved));
  }
  char *line = malloc(SETTINGS_MAX_BYTES);
  if (!line) {
    fclose(f);
    return RPL_E_NOMEM;
  }
  rpl_err err = RPL_OK;
  unsigned lineno = 0;
  while (err == RPL_OK && fgets(line, SETTINGS_MAX_BYTES, f)) {
    lineno++;
    line[strcspn(line, "\n")] = '\0';
    if (!line[0] || line[0] == '#')
      continue;
    char *eq = strchr(line, '=');
    if (!eq) {
      err = rpl_fail(RPL_E_CONFIG, "%s line %u: not key=value", path, lineno);
      break;
    }
    *eq = '\0';
    const char *key = line, *value = eq + 1;
    bool known = false;
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
      if (strcmp(key, fields[i].key) != 0)
        continue;
      known = true;
      if (strlen(value) >= fields[i].size) {
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: %s is too long", path, lineno, key);
      } else {
        memcpy((char *)s + fields[i].offset, value, strlen(value) + 1);
      }
    }
    if (!known && strcmp(key, "allow_http_emulator") == 0) {
      known = true;
      unsigned v;
      if (!parse_whole(value, 0, 1, &v))
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: allow_http_emulator must be 0 or 1", path, lineno);
      else
        s->allow_http_emulator = v == 1;
    }
    if (!known && strcmp(key, "require_private_endpoint") == 0) {
      known = true;
      unsigned v;
      if (!parse_whole(value, 0, 1, &v))
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: require_private_endpoint must be 0 or 1", path, lineno);
      else
        s->require_private_endpoint = v == 1;
    }
    if (!known && strcmp(key, "max_in_flight") == 0) {
      known = true;
      if (!parse_whole(value, 1, SETTINGS_MAX_IN_FLIGHT, &s->max_in_flight)) {
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: max_in_flight must be a whole number of requests from 1 to %u", path,
                       lineno, SETTINGS_MAX_IN_FLIGHT);
      }
    }
    if (!known && strcmp(key, "lease_duration_s") == 0) {
      known = true;
      if (!parse_whole(value, SETTINGS_MIN_LEASE_S, SETTINGS_MAX_LEASE_S, &s->lease_duration_s)) {
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: lease_duration_s must be a whole number of seconds from %u to %u "
                       "(what Azure allows for a lease)", path, lineno, SETTINGS_MIN_LEASE_S, SETTINGS_MAX_LEASE_S);
      }
    }
    if (!known && (strcmp(key, "upload_limit_mbps") == 0 || strcmp(key, "agent_limit_mbps") == 0)) {
      known = true;
      unsigned *dst = key[0] == 'u' ? &s->upload_limit_mbps : &s->agent_limit_mbps;
      if (!rate_limit_parse_mbps(value, dst)) {
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: %s must be a whole number of MB/s from 0 (no limit) to %u", path, lineno, key,
                       RATELIMIT_MAX_MBPS);
      }
    }
    if (!known && strcmp(key, "webhook") == 0) { /* one line per webhook */
      known = true;
      size_t n = 0;
      while (n < SETTINGS_MAX_WEBHOOKS && s->webhook[n][0])
        n++;
      if (n == SETTINGS_MAX_WEBHOOKS)
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: more than %d webhooks", path, lineno, SETTINGS_MAX_WEBHOOKS);
      else if (!*value || strlen(value) >= sizeof s->webhook[n])
        err = rpl_fail(RPL_E_CONFIG, "%s line %u: webhook is empty or too long", path, lineno);
      else
        memcpy(s->webhook[n], value, strlen(value) + 1);
    }
    if (!known) {
      err = rpl_fail(RPL_E_CONFIG, "%s line %u: unknown setting '%.40s'", path, lineno, key);
    }
  }
  free(line);
  fclose(f);
  if (err == RPL_OK && !s->storage[0]) {
    err = rpl_fail(RPL_E_CONFIG, "%s has no storage setting: run init again", path);
  }
  return err;
}

rpl_err settings_save(const char *state_dir, const struct appliance_settings *s)
{
  if (mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
    int saved = errno;
    return rpl_fail(saved == EACCES ? RPL_E_PERMISSION : RPL_E_IO, "cannot create the state directory %s: %s",
                    state_dir, strerror(saved));
  }
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (strchr((const char *)s + fields[i].offset, '\n')) {
      return rpl_fail(RPL_E_CONFIG, "%s must not contain a line break", fields[i].key);
    }
  for (size_t i = 0; i < SETTINGS_MAX_WEBHOOKS; i++)
    if (strchr(s->webhook[i], '\n'))
      return rpl_fail(RPL_E_CONFIG, "webhook must not contain a line break");
  char tmp[4200], path[4200];
  snprintf(path, sizeof path, "%s/%s", state_dir, STATE_APPLIANCE_CONF);
  snprintf(tmp, sizeof tmp, "%s/.%s.tmp", state_dir, STATE_APPLIANCE_CONF);
  unlink(tmp);
  /* 0600 from creation: the credentials never sit in a readable file, not even briefly. */
  int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) {
    int saved = errno;
    return rpl_fail(saved == EACCES ? RPL_E_PERMISSION : RPL_E_IO, "cannot write %s: %s", tmp, strerror(saved));
  }
  FILE *f = fdopen(fd, "w");
  if (!f) {
    close(fd);
    return RPL_E_NOMEM;
  }
  fprintf(f, "# replication-appliance settings (written by init; holds credentials: keep it 0600)\n");
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    fprintf(f, "%s=%s\n", fields[i].key, (const char *)s + fields[i].offset);
  fprintf(f, "allow_http_emulator=%d\n", s->allow_http_emulator ? 1 : 0);
  fprintf(f, "require_private_endpoint=%d\nmax_in_flight=%u\nlease_duration_s=%u\n", s->require_private_endpoint ? 1 : 0,
          s->max_in_flight, s->lease_duration_s);
  fprintf(f, "upload_limit_mbps=%u\nagent_limit_mbps=%u\n", s->upload_limit_mbps, s->agent_limit_mbps);
  for (size_t i = 0; i < SETTINGS_MAX_WEBHOOKS; i++)
    if (s->webhook[i][0])
      fprintf(f, "webhook=%s\n", s->webhook[i]);
  bool ok = fflush(f) == 0 && fsync(fileno(f)) == 0;
  ok = fclose(f) == 0 && ok;
  if (!ok || rename(tmp, path) != 0) {
    rpl_err e = rpl_fail(RPL_E_IO, "cannot write %s: %s", path, strerror(errno));
    unlink(tmp);
    return e;
  }
  int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  return RPL_OK;
}
