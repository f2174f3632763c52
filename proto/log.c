/* log.c - leveled stderr logging for journald, and redaction of secrets before they reach a log. */
#include "rpl_log.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static const char *log_program = "rpl";
static enum log_level log_level_max = LOG_LVL_INFO;
static int log_with_time = -1; /* on a terminal, or with RPL_LOG_TIME=1 (a log file read closely) */

static const char *const level_names[8] = {
  [LOG_LVL_ERR] = "err", [LOG_LVL_WARN] = "warn", [LOG_LVL_NOTICE] = "notice",
  [LOG_LVL_INFO] = "info", [LOG_LVL_DEBUG] = "debug",
};

int log_level_parse(const char *name)
{
  for (int i = LOG_LVL_ERR; i <= LOG_LVL_DEBUG; i++)
    if (name && strcasecmp(name, level_names[i]) == 0)
      return i;
  return -1;
}

void log_init(const char *program, enum log_level level)
{
  if (program) {
    const char *slash = strrchr(program, '/');
    log_program = slash ? slash + 1 : program;
  }
  log_level_max = level;
  int env = log_level_parse(getenv("RPL_LOG_LEVEL"));
  if (env >= 0)
    log_level_max = (enum log_level)env;
  const char *t = getenv("RPL_LOG_TIME");
  log_with_time = isatty(STDERR_FILENO) || (t && strcmp(t, "1") == 0);
}

void log_set_level(enum log_level level) { log_level_max = level; }
enum log_level log_get_level(void) { return log_level_max; }

void log_msg(enum log_level level, const char *fmt, ...)
{
  if (level > log_level_max)
    return;
  char raw[2048], line[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(raw, sizeof raw, fmt, ap);
  va_end(ap);
  /* Control characters (a newline in a peer's hostname, terminal escapes) are shown as \xNN: one
   * log line can never be made to look like several, or to drive the reader's terminal. */
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)raw; *p && o + 5 < sizeof line; p++) {
    if (*p < 0x20 || *p == 0x7f)
      o += (size_t)snprintf(line + o, sizeof line - o, "\\x%02x", *p);
    else
      line[o++] = (char)*p;
  }
  line[o] = '\0';
  /* One write per line keeps lines whole when several threads log. */
  char out[2200];
  int n;
  if (log_with_time < 0)
    log_with_time = isatty(STDERR_FILENO);
  if (log_with_time) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    localtime_r(&ts.tv_sec, &tm);
    n = snprintf(out, sizeof out, "%02d:%02d:%02d.%03ld %s %s: %s\n", tm.tm_hour, tm.tm_min,
                 tm.tm_sec, ts.tv_nsec / 1000000, log_program, level_names[level], line);
  } else {
    n = snprintf(out, sizeof out, "<%d>%s: %s\n", (int)level, log_program, line);
  }
  if (n > (int)sizeof out - 1)
    n = (int)sizeof out - 1;
  ssize_t w = write(STDERR_FILENO, out, (size_t)n);
  (void)w;
}

/* Keys whose value runs to the next separator and must never be printed. */
static const char *const secret_keys[] = {
  "AccountKey=", "SharedAccessSignature=", "sig=", "Authorization:", "Bearer ", "access_token\":",
  "password=", "secret=",
};

char *log_redact(const char *text, char *out, size_t outsz)
{
  if (outsz == 0)
    return out;
  size_t o = 0;
  const char *p = text ? text : "";
  while (*p && o + 1 < outsz) {
    size_t klen = 0;
    for (size_t k = 0; k < sizeof secret_keys / sizeof secret_keys[0]; k++) {
      size_t l = strlen(secret_keys[k]);
      if (strncasecmp(p, secret_keys[k], l) == 0) {
        klen = l;
        break;
      }
    }
    if (klen == 0) {
      out[o++] = *p++;
      continue;
    }
    for (size_t i = 0; i < klen && o + 1 < outsz; i++)
      out[o++] = *p++;
    while (*p == ' ' || *p == '"')
      p++;
    /* The value ends at a separator of the forms we see: ';' (connection string), '&' (query),
     * '"' / ',' (JSON), white space after a token. "SharedKey account:sig" is one value. */
    int saw_scheme = 0;
    while (*p && *p != ';' && *p != '&' && *p != '"' && *p != ',' && *p != '\n' && *p != '\r') {
      if (*p == ' ') {
        if (saw_scheme)
          break;
        saw_scheme = 1;
      }
      p++;
    }
    for (const char *m = "***"; *m && o + 1 < outsz; m++)
      out[o++] = *m;
  }
  out[o] = '\0';
  return out;
}
