/* cmd_check.c - `mobility-agent check`: boot readiness for Azure of this server (or of a mounted tree
 * with --root), one line per check with its remedy, or one JSON document with --json. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent_state.h"
#include "commands.h"
#include "json_out.h"
#include "readiness.h"
#include "state_files.h"

static void write_json(const struct readiness_input *in, const struct readiness_report *r)
{
  struct json_out j;
  json_init(&j, stdout);
  json_object_begin(&j, NULL);
  json_string(&j, "root", in->root);
  json_bool(&j, "ok", readiness_count(r, READINESS_FAIL) == 0);
  if (r->generation)
    json_u64(&j, "generation", (uint64_t)r->generation);
  else
    json_string(&j, "generation", NULL);
  json_string(&j, "firmware", r->firmware);
  json_string(&j, "partition_table", r->partition_table);
  json_object_begin(&j, "boot_disk");
  json_string(&j, "device", r->boot_disk[0] ? r->boot_disk : NULL);
  json_u64(&j, "size", r->boot_disk_size);
  json_object_end(&j);
  json_string(&j, "kernel", r->kernel[0] ? r->kernel : NULL);
  json_string(&j, "kernel_from", r->kernel_from[0] ? r->kernel_from : NULL);
  json_string(&j, "initramfs", r->initramfs[0] ? r->initramfs : NULL);
  json_array_begin(&j, "protected_disks");
  for (size_t i = 0; i < in->nprotected; i++)
    json_string(&j, NULL, in->protected_devs[i]);
  json_array_end(&j);
  json_array_begin(&j, "checks");
  for (size_t i = 0; i < r->n; i++) {
    json_object_begin(&j, NULL);
    json_string(&j, "name", r->checks[i].name);
    json_string(&j, "result", readiness_result_name(r->checks[i].result));
    json_string(&j, "detail", r->checks[i].detail);
    json_string(&j, "remedy", r->checks[i].remedy);
    json_object_end(&j);
  }
  json_array_end(&j);
  json_object_end(&j);
  if (!json_finish(&j))
    fprintf(stderr, "mobility-agent check: the JSON report could not be written\n");
}

static void write_table(const struct readiness_report *r)
{
  for (size_t i = 0; i < r->n; i++) {
    const struct readiness_check *k = &r->checks[i];
    printf("%s  %-20s %s\n", readiness_result_name(k->result), k->name, k->detail);
    if (k->remedy[0])
      printf("      %-20s fix: %s\n", "", k->remedy);
  }
  if (r->generation)
    printf("Azure generation %d (%s, %s)\n", r->generation, r->firmware, r->partition_table);
}

/* The protected disks from the agent's state; a missing state directory is an agent with none (and
 * is not created: check runs before anything is registered). */
static int load_protected(const char *state_dir, struct agent_state *st, struct readiness_input *in)
{
  struct stat sb;
  char conf[600];
  snprintf(conf, sizeof conf, "%s/%s", state_dir, STATE_AGENT_CONF);
  if (stat(state_dir, &sb) != 0 || stat(conf, &sb) != 0)
    return 0;
  rpl_err err = agent_state_load(state_dir, st);
  if (err) {
    fprintf(stderr, "mobility-agent check: cannot read the agent state in %s: %s\n", state_dir, rpl_strerror(err));
    return 1;
  }
  for (size_t i = 0; i < st->ndisks && in->nprotected < READINESS_MAX_PROTECTED; i++)
    in->protected_devs[in->nprotected++] = st->disks[i].device;
  return 0;
}

int agent_cmd_check(int argc, char **argv)
{
  static const struct option opts[] = {
    {"state", required_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'},
    {"root", required_argument, NULL, 'r'},  {"help", no_argument, NULL, 'h'},
    {NULL, 0, NULL, 0},
  };
  const char *state = AGENT_DEFAULT_STATE;
  struct readiness_input in = {.root = "/", .live = true};
  bool json = false;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (ch) {
    case 's': state = optarg; break;
    case 'j': json = true; break;
    case 'r': in.root = optarg; in.live = !strcmp(optarg, "/"); break;
    case 'h': printf("usage: mobility-agent check [--state DIR] [--json] [--root DIR]\n"); return 0;
    default:
      fprintf(stderr, "mobility-agent check: unknown or incomplete option '%s' (see --help)\n", argv[optind - 1]);
      return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "mobility-agent check: unexpected argument '%s' (see --help)\n", argv[optind]);
    return 2;
  }
  struct agent_state *st = calloc(1, sizeof *st);
  struct readiness_report *r = calloc(1, sizeof *r);
  int status = 1;
  if (!st || !r) {
    fprintf(stderr, "mobility-agent check: out of memory\n");
    goto out;
  }
  if (load_protected(state, st, &in))
    goto out;
  readiness_run(&in, r);
  if (json)
    write_json(&in, r);
  else
    write_table(r);
  fflush(stdout);
  size_t failed = readiness_count(r, READINESS_FAIL);
  status = 0;
  if (failed) {
    char names[256] = "";
    size_t pos = 0;
    for (size_t i = 0; i < r->n && pos < sizeof names; i++)
      if (r->checks[i].result == READINESS_FAIL)
        pos += (size_t)snprintf(names + pos, sizeof names - pos, "%s%s", pos ? ", " : "", r->checks[i].name);
    fprintf(stderr, "mobility-agent check: %zu of %zu readiness checks failed (%s): this server would not boot "
                    "in Azure as it is\n", failed, r->n, names);
    status = 1;
  }
out:
  free(st);
  free(r);
  return status;
}
