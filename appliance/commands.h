/* commands.h - the replication-appliance subcommands (appliance/ internal; used by appliance/main.c and cmd_*.c). */
#ifndef APPLIANCE_COMMANDS_H
#define APPLIANCE_COMMANDS_H

/* Each runs one users' command (docs/architecture.md) with argv[0] = the command's name; returns the exit
 * status: 0 on success, else non-zero after one line on stderr saying why. */
struct appliance_command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *usage;
};

#define APPLIANCE_DEFAULT_STATE "/var/lib/replication-appliance"

int appliance_cmd_init(int argc, char **argv);  /* cmd_init.c */
int appliance_cmd_check(int argc, char **argv); /* cmd_check.c */
int appliance_cmd_run(int argc, char **argv);   /* cmd_run.c */
int appliance_cmd_status(int argc, char **argv); /* status.c */
int appliance_cmd_events(int argc, char **argv); /* status.c */
int appliance_cmd_points(int argc, char **argv); /* status.c */
int appliance_cmd_restore(int argc, char **argv); /* cmd_restore.c */
int appliance_cmd_failover(int argc, char **argv); /* cmd_failover.c */
int appliance_cmd_group(int argc, char **argv);  /* cmd_group.c */

#endif
