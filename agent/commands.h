/* commands.h - the mobility-agent subcommands (agent/ internal; used by agent/main.c and cmd_*.c). */
#ifndef AGENT_COMMANDS_H
#define AGENT_COMMANDS_H

/* Each runs one users' command (docs/architecture.md) with argv[0] = the command's name; returns
 * the exit status: 0 on success, else non-zero after one line on stderr saying why. */
struct agent_command {
  const char *name;
  int (*run)(int argc, char **argv);
  const char *usage;
};

#define AGENT_DEFAULT_STATE "/var/lib/mobility-agent"

int agent_cmd_register(int argc, char **argv);
int agent_cmd_run(int argc, char **argv);
int agent_cmd_protect(int argc, char **argv);
int agent_cmd_checkpoint(int argc, char **argv);
int agent_cmd_unprotect(int argc, char **argv);
int agent_cmd_status(int argc, char **argv);
int agent_cmd_cbt(int argc, char **argv);
int agent_cmd_check(int argc, char **argv);

#endif
