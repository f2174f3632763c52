/* cmd_control.c - `mobility-agent protect | unprotect | checkpoint | status`: the commands that talk to the
 * running daemon through its control socket; on a terminal, protect shows the initial sync's progress. */
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "commands.h"
#include "control.h"
#include "progress.h"
#include "rpl_clock.h"

#define PROGRESS_POLL_MS 500

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

static volatile sig_atomic_t interrupted;
static void on_interrupt(int sig) { interrupted = 1; (void)sig; }

/* Polls the daemon's `status --progress DEVICE` until the disk's initial sync is complete (the disk
 * is protected) or it failed; on a terminal the progress line is redrawn in place. */
static int wait_initial_sync(const char *state_dir, const char *dev, bool tty)
{
  struct sigaction sa = {.sa_handler = on_interrupt};
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  const char *args[] = {"status", "--progress", dev};
  uint64_t total_seen = 0;
  uint64_t t0 = rpl_mono_ns();
  for (;;) {
    int status;
    char *reply = NULL;
    rpl_err err = control_call(state_dir, 3, args, &status, &reply);
    if (err || status != 0) {
      if (tty)
        fputs("\r\033[K", stdout);
      fprintf(stderr, "mobility-agent protect: cannot follow the initial sync: %s\n",
              err ? rpl_strerror(err) : reply);
      free(reply);
      return 1;
    }
    char phase[32] = "";
    uint64_t done = 0, total = 0, elapsed_ms = 0, last_cycle = 0;
    int got = sscanf(reply, "%31s %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64, phase, &done, &total, &elapsed_ms,
                     &last_cycle);
    const char *more = strchr(reply, '\n');
    if (got != 5) {
      fprintf(stderr, "mobility-agent protect: the daemon answered something unexpected: %s\n", reply);
      free(reply);
      return 1;
    }
    if (!strcmp(phase, "protected") || last_cycle > 0) {
      double s = (double)(rpl_mono_ns() - t0) / 1e9;
      if (tty)
        fputs("\r\033[K", stdout);
      printf("initial sync of %s complete (%" PRIu64 " MiB; waited %.1f s)\n", dev, total_seen >> 20, s);
      free(reply);
      return 0;
    }
    if (!strcmp(phase, "error")) {
      if (tty)
        fputs("\r\033[K", stdout);
      fprintf(stderr, "mobility-agent protect: %s: %s", dev, more && more[1] ? more + 1 : "the disk is in error\n");
      free(reply);
      return 1;
    }
    free(reply);
    if (total > total_seen)
      total_seen = total;
    if (tty) {
      char line[200];
      if (total && done < total)
        progress_format(line, sizeof line, done, total, elapsed_ms);
      else if (total)
        snprintf(line, sizeof line, "all %" PRIu64 " MiB sent, waiting for the appliance to make it durable", total >> 20);
      else
        snprintf(line, sizeof line, "waiting for the appliance to start the initial sync");
      printf("\r\033[K%s: %s: %s", dev, phase, line);
      fflush(stdout);
    }
    if (interrupted) {
      if (tty)
        fputs("\n", stdout);
      printf("stopped following; the initial sync goes on (mobility-agent status)\n");
      return 130;
    }
    poll(NULL, 0, PROGRESS_POLL_MS);
    if (interrupted)
      continue; /* one more look, then the message above */
  }
}

/* protect DEVICE [--wait | --no-wait]: on a terminal (or with --wait) it follows the initial sync
 * until it completes; otherwise (scripts) it returns once the daemon took the disk. */
int agent_cmd_protect(int argc, char **argv)
{
  char **rest = calloc((size_t)argc + 1, sizeof *rest);
  if (!rest) {
    fprintf(stderr, "mobility-agent protect: out of memory\n");
    return 1;
  }
  int n = 0, wait = -1;
  const char *state_dir = AGENT_DEFAULT_STATE, *dev = NULL;
  for (int i = 0; i < argc; i++) {
    if (i > 0 && !strcmp(argv[i], "--wait"))
      wait = 1;
    else if (i > 0 && !strcmp(argv[i], "--no-wait"))
      wait = 0;
    else {
      if (!strcmp(argv[i], "--state") && i + 1 < argc)
        state_dir = argv[i + 1];
      else if (!strncmp(argv[i], "--state=", 8))
        state_dir = argv[i] + 8;
      else if (i > 0 && argv[i][0] != '-' && (i == 0 || strcmp(argv[i - 1], "--state")))
        dev = dev ? dev : argv[i];
      rest[n++] = argv[i];
    }
  }
  bool tty = isatty(STDOUT_FILENO) == 1;
  if (wait < 0)
    wait = tty;
  int status = forward("protect", n, rest);
  free(rest);
  if (status != 0 || !wait || !dev)
    return status;
  fflush(stdout);
  return wait_initial_sync(state_dir, dev, tty);
}
int agent_cmd_checkpoint(int argc, char **argv) { return forward("checkpoint", argc, argv); }
/* --delete-replica cannot be undone: confirmed on the terminal, or by --yes where there is none. */
int agent_cmd_unprotect(int argc, char **argv)
{
  bool del = false, yes = false;
  const char *dev = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--delete-replica"))
      del = true;
    else if (!strcmp(argv[i], "--yes"))
      yes = true;
    else if (!strcmp(argv[i], "--state"))
      i++;
    else if (argv[i][0] != '-' && !dev)
      dev = argv[i];
  }
  if (yes && !del) {
    fprintf(stderr, "mobility-agent unprotect: --yes confirms --delete-replica, which is not given\n");
    return 2;
  }
  if (!del || yes)
    return forward("unprotect", argc, argv);
  if (!isatty(STDIN_FILENO) || !isatty(STDERR_FILENO)) {
    fprintf(stderr, "mobility-agent unprotect: --delete-replica deletes the disk's replica, every recovery point of it "
            "and its catalog rows on the appliance, which cannot be undone: without a terminal to confirm on, give "
            "--yes with it; nothing was changed\n");
    return 2;
  }
  fprintf(stderr, "Unprotect %s and DELETE its replica, every recovery point of it, its cache and its catalog rows on "
          "the appliance? This cannot be undone. Type 'yes' to go on: ", dev ? dev : "the disk");
  fflush(stderr);
  char answer[16] = "";
  if (!fgets(answer, sizeof answer, stdin) || strcmp(answer, "yes\n")) {
    fprintf(stderr, "mobility-agent unprotect: not confirmed; nothing was changed\n");
    return 1;
  }
  char **args = calloc((size_t)argc + 2, sizeof *args);
  if (!args) {
    fprintf(stderr, "mobility-agent unprotect: out of memory\n");
    return 1;
  }
  memcpy(args, argv, (size_t)argc * sizeof *args);
  args[argc] = "--yes";
  int status = forward("unprotect", argc + 1, args);
  free(args);
  return status;
}
int agent_cmd_status(int argc, char **argv) { return forward("status", argc, argv); }
