/* cmd_check.c - `replication-appliance check`: runs each prerequisite of the storage path (private
 * DNS path, TCP reach, proxy, TLS verification, authorization, time skew; or the replica directory
 * for file: storage) and prints one line each, PASS or FAIL with the remedy; --json prints one JSON
 * document instead. Exit status 1 when any prerequisite fails. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "commands.h"
#include "json_out.h"
#include "prereq.h"
#include "rpl_log.h"
#include "settings.h"
#include "store.h"

static void write_json(const char *state_dir, const struct appliance_settings *s, const struct prereq_report *r,
                       FILE *out)
{
  struct json_out j;
  json_init(&j, out);
  json_object_begin(&j, NULL);
  json_string(&j, "state", state_dir);
  json_string(&j, "storage", store_backend(s)->kind);
  json_bool(&j, "ok", prereq_failed(r) == 0);
  json_array_begin(&j, "checks");
  for (size_t i = 0; i < r->n; i++) {
    json_object_begin(&j, NULL);
    json_string(&j, "name", r->items[i].name);
    json_string(&j, "result", r->items[i].pass ? "PASS" : "FAIL");
    json_string(&j, "detail", r->items[i].detail);
    json_string(&j, "remedy", r->items[i].pass ? "" : r->items[i].remedy);
    json_object_end(&j);
  }
  json_array_end(&j);
  json_object_end(&j);
  if (!json_finish(&j))
    log_err("check: the JSON report could not be written");
}

void check_write_json(const char *state_dir, const struct appliance_settings *s, FILE *out, size_t *failed)
{
  struct prereq_report *r = calloc(1, sizeof *r);
  if (!r) {
    fprintf(out, "{\"error\":\"out of memory\"}\n");
    *failed = 1;
    return;
  }
  prereq_run(s, r);
  *failed = prereq_failed(r);
  write_json(state_dir, s, r, out);
  free(r);
}

int appliance_cmd_check(int argc, char **argv)
{
  static const struct option opts[] = {
    {"state", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'}, {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *state = APPLIANCE_DEFAULT_STATE;
  bool json = false;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 's': state = optarg; break;
    case 'j': json = true; break;
    case 'h': printf("usage: replication-appliance check --state DIR [--json]\n"); return 0;
    default:
      fprintf(stderr, "replication-appliance check: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "replication-appliance check: unexpected argument '%s' (see --help)\n", argv[optind]);
    return 2;
  }
  /* The report is the output: the client's own log lines would only repeat it on stderr. */
  if (!getenv("RPL_LOG_LEVEL"))
    log_set_level(LOG_LVL_ERR);
  struct appliance_settings s;
  rpl_err err = settings_load(state, &s);
  if (err != RPL_OK) {
    fprintf(stderr, "replication-appliance check: %s\n", rpl_detail(err));
    return 1;
  }
  struct prereq_report r;
  prereq_run(&s, &r);
  size_t failed = prereq_failed(&r);
  if (json) {
    write_json(state, &s, &r, stdout);
  } else {
    for (size_t i = 0; i < r.n; i++) {
      if (r.items[i].pass)
        printf("PASS  %s: %s\n", r.items[i].name, r.items[i].detail);
      else
        printf("FAIL  %s: %s; fix: %s\n", r.items[i].name, r.items[i].detail, r.items[i].remedy);
    }
  }
  fflush(stdout);
  if (failed) {
    char names[512] = "";
    size_t pos = 0;
    for (size_t i = 0; i < r.n && pos < sizeof names; i++)
      if (!r.items[i].pass)
        pos += (size_t)snprintf(names + pos, sizeof names - pos, "%s%s", pos ? ", " : "", r.items[i].name);
    fprintf(stderr, "replication-appliance check: %zu of %zu prerequisites failed: %s\n", failed, r.n, names);
    return 1;
  }
  return 0;
}
