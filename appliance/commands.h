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

int cmd_init(int argc, char **argv);  /* cmd_init.c */
int cmd_check(int argc, char **argv); /* cmd_check.c */
int cmd_run(int argc, char **argv);   /* cmd_run.c */
int cmd_status(int argc, char **argv); /* status.c */
int cmd_events(int argc, char **argv); /* status.c */
int cmd_restore(int argc, char **argv); /* cmd_restore.c */

#endif
