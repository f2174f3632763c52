/* rpl_log.h - leveled logging to stderr in a form journald keeps (<N> priority prefixes). */
#ifndef RPL_LOG_H
#define RPL_LOG_H

#include <stddef.h>

/* syslog(3) priorities, so that journald maps them directly. */
enum log_level { LOG_LVL_ERR = 3, LOG_LVL_WARN = 4, LOG_LVL_NOTICE = 5, LOG_LVL_INFO = 6, LOG_LVL_DEBUG = 7 };

/* Sets the program name shown on each line and the most verbose level printed.
 * The environment variable RPL_LOG_LEVEL (err|warn|notice|info|debug) overrides level. */
void log_init(const char *program, enum log_level level);
void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "err|warn|notice|info|debug"; returns -1 if unknown. */
int log_level_parse(const char *name);

/* One line to stderr. When stderr is the journal or a pipe, the line starts with "<N>" (journald's
 * SyslogLevelPrefix); on a terminal with the level's name. Never pass secrets: use log_redact(). */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...)    log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...)   log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_notice(...) log_msg(LOG_LVL_NOTICE, __VA_ARGS__)
#define log_info(...)   log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...)  log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

/* Copies text into out (size outsz, always NUL-terminated, truncated if needed) with the values of
 * secrets replaced by "***": connection-string AccountKey= / SharedAccessSignature=, SAS query
 * parameter sig=, "Authorization:" header values, bearer tokens. Returns out. */
char *log_redact(const char *text, char *out, size_t outsz);

#endif
