/* main.c - replication-appliance's entry point: dispatches the users' commands listed in docs/architecture.md. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "rpl_log.h"
#include "rpl_version.h"

static const struct appliance_command commands[] = {
  {"init", appliance_cmd_init, "init    --state DIR --storage STORAGE [--container NAME] [--private-dns-zone FILE] [--ca-file PEM] [--admin-password-file FILE]"},
  {"check", appliance_cmd_check, "check   --state DIR [--json]"},
  {"run", appliance_cmd_run, "run     --state DIR [--listen ADDR:PORT] [--rpo SECONDS] [--web ADDR:PORT|off] [--web-root DIR]"},
  {"status", appliance_cmd_status, "status  --state DIR [--json]"},
  {"events", appliance_cmd_events, "events  --state DIR [--since SEQ] [--wait SECONDS]   # cycle and point events, JSON lines"},
  {"points", appliance_cmd_points, "points  --state DIR [--disk ID] [--json]   # recovery points (the GET /api/points document)"},
  {"restore", appliance_cmd_restore, "restore --state DIR --disk ID [--point RP] (--out FILE | --verify FILE)"},
  {"failover", appliance_cmd_failover, "failover --state DIR --disk ID [--point RP] (--to-blob NAME [--container C] | --to FILE.vhd)"},
  {"group", appliance_cmd_group, "group   --state DIR create NAME DISK_ID... | delete NAME | list [--json]   # consistency groups across servers"},
  {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
  fprintf(out, "usage: replication-appliance COMMAND [ARGS]\n       replication-appliance --version\n\ncommands:\n");
  for (const struct appliance_command *c = commands; c->name; c++)
    fprintf(out, "  %s\n", c->usage);
}

int main(int argc, char **argv)
{
  /* Daemons log what they do; a command's outcome is its one line on stderr. */
  log_init("replication-appliance", argc > 1 && !strcmp(argv[1], "run") ? LOG_LVL_INFO : LOG_LVL_ERR);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
    printf("replication-appliance %s\n", RPL_VERSION);
    return 0;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  for (const struct appliance_command *c = commands; c->name; c++)
    if (!strcmp(argv[1], c->name))
      return c->run(argc - 1, argv + 1);
  fprintf(stderr, "replication-appliance: unknown command '%s' (see replication-appliance --help)\n", argv[1]);
  return 2;
}
