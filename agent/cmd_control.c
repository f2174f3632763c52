/* cmd_control.c - `mobility-agent protect | checkpoint | status`: the commands that talk to the
 * running daemon through its control socket. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "control.h"

/* Pulls --state DIR out of argv; the rest goes to the daemon unchanged. */
static int forward(const char *cmd, int argc, char **argv)
{
  const char *state_dir = AGENT_DEFAULT_STATE;
  const char *args[CONTROL_MAX_ARGS];
  int n = 0;
  args[n++] = cmd;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--state") && i + 1 < argc) {
      state_dir = argv[++i];
    } else if (!strncmp(argv[i], "--state=", 8)) {
      state_dir = argv[i] + 8;
    } else if (n < CONTROL_MAX_ARGS) {
      args[n++] = argv[i];
    } else {
      fprintf(stderr, "mobility-agent %s: too many arguments\n", cmd);
      return 2;
    }
  }
  int status;
  char *reply;
  rpl_err err = control_call(state_dir, n, args, &status, &reply);
  if (err == RPL_E_NO_DAEMON) {
    fprintf(stderr, "mobility-agent %s: the agent is not running (no control socket in %s): start it with 'mobility-agent run --state %s'\n",
            cmd, state_dir, state_dir);
    return 1;
  }
  if (err) {
    fprintf(stderr, "mobility-agent %s: %s\n", cmd, rpl_strerror(err));
    return 1;
  }
  if (status == 0) {
    fputs(reply, stdout);
  } else {
    size_t l = strlen(reply);
    fprintf(stderr, "mobility-agent %s: %s%s", cmd, reply, l && reply[l - 1] == '\n' ? "" : "\n");
  }
  free(reply);
  return status;
}

int agent_cmd_protect(int argc, char **argv) { return forward("protect", argc, argv); }
int agent_cmd_checkpoint(int argc, char **argv) { return forward("checkpoint", argc, argv); }
int agent_cmd_status(int argc, char **argv) { return forward("status", argc, argv); }
