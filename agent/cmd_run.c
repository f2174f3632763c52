/* cmd_run.c - `mobility-agent run`: the daemon's options, its start (state, certificate, tracking,
 * control socket, signals), the session until a signal stops it, and its teardown. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "commands.h"
#include "daemon.h"
#include "rpl_log.h"
#include "rpl_version.h"
#include "sdnotify.h"
#include "state_files.h"

#define RUN_USAGE "usage: mobility-agent run [--state DIR] [--freeze-limit-ms N] [--pre-freeze-hook CMD] [--post-thaw-hook CMD]\n"

struct run_opts {
  const char *state_dir;
  unsigned freeze_limit_ms;
  const char *pre_freeze_hook, *post_thaw_hook; /* NULL: none */
};

/* 0, or the exit status of a usage error. */
static int parse_run_opts(int argc, char **argv, struct run_opts *o)
{
  *o = (struct run_opts){.state_dir = AGENT_DEFAULT_STATE, .freeze_limit_ms = 2000};
  static const struct option opts[] = {{"state", required_argument, NULL, 's'},
                                       {"freeze-limit-ms", required_argument, NULL, 'f'},
                                       {"pre-freeze-hook", required_argument, NULL, 'p'},
                                       {"post-thaw-hook", required_argument, NULL, 'q'},
                                       {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case 's': o->state_dir = optarg; break;
    case 'f': o->freeze_limit_ms = (unsigned)strtoul(optarg, NULL, 10); break;
    case 'p': o->pre_freeze_hook = optarg; break;
    case 'q': o->post_thaw_hook = optarg; break;
    default:
      fputs(RUN_USAGE, stderr);
      return 2;
    }
  }
  return 0;
}

static void on_signal(int sig) { atomic_store(&agent_stopping, 1); (void)sig; }

/* A signal only sets the flag: this thread watches it and wakes the session's poll. */
static void *watch_stop(void *arg)
{
  struct agent *a = arg;
  while (!atomic_load(&agent_stopping))
    usleep(100000);
  session_wake(a);
  return NULL;
}

/* The state of a registered agent and the TLS context with its client certificate. */
static int load_registration(struct agent *a, const char *state_dir)
{
  rpl_err err = agent_state_load(state_dir, &a->st);
  if (err) {
    fprintf(stderr, "mobility-agent run: cannot load the state in %s: %s\n", state_dir, rpl_strerror(err));
    return 1;
  }
  if (!a->st.registered) {
    fprintf(stderr, "mobility-agent run: not registered: run 'mobility-agent register --appliance HOST:PORT --key KEY --state %s' first\n",
            state_dir);
    return 1;
  }
  if ((err = renewal_load_identity(a))) {
    fprintf(stderr, "mobility-agent run: the client certificate in %s is missing or invalid (%s): register again\n",
            state_dir, rpl_detail(err));
    return 1;
  }
  return 0;
}

/* Tracking must be on for every protected disk, also after a reboot (it then reports resync); a disk
 * it fails for is marked in error. Then the session's own tracker handle. */
static int start_tracking_all(struct agent *a)
{
  struct cbt_options opt = {.state_dir = a->st.dir};
  struct cbt *boot;
  rpl_err err = cbt_open(&boot, &opt);
  if (err) {
    fprintf(stderr, "mobility-agent run: cannot open the change-block tracker: %s\n", rpl_strerror(err));
    return 1;
  }
  for (size_t i = 0; i < a->st.ndisks; i++) {
    rpl_err e = cbt_start(boot, a->st.disks[i].device);
    char why[RPL_DETAIL_MAX + 128];
    if (e && e != RPL_E_CBT_ALREADY_TRACKED) {
      snprintf(a->rt[i].error, sizeof a->rt[i].error, "tracking failed: %s", rpl_describe(e, why, sizeof why));
      a->rt[i].phase = PHASE_ERROR;
      log_err("%s: %s", a->st.disks[i].device, a->rt[i].error);
    }
  }
  cbt_close(boot);
  if ((err = session_refresh_cbt(a))) {
    fprintf(stderr, "mobility-agent run: cannot open the change-block tracker: %s\n", rpl_strerror(err));
    return 1;
  }
  return 0;
}

static void install_signal_handlers(void)
{
  struct sigaction sa = {.sa_handler = on_signal};
  sigaction(SIGTERM, &sa, NULL);
  sigaction(SIGINT, &sa, NULL);
  signal(SIGPIPE, SIG_IGN);
}

static void release_agent(struct agent *a)
{
  readiness_stop(a);
  for (size_t i = 0; i < AGENT_MAX_DISKS; i++) {
    pipeline_destroy(a->pipes[i]);
    sent_hashes_destroy(a->rt[i].sent);
    if (a->rt[i].fd >= 0)
      close(a->rt[i].fd);
  }
  cbt_close(a->cbt);
  SSL_CTX_free(a->ctx);
  proto_buf_free(&a->out);
  cycle_router_destroy(&a->router);
  close(a->wake);
}

static int run(const struct run_opts *o)
{
  static struct agent a; /* large; one per process */
  memset(&a, 0, sizeof a);
  pthread_mutex_init(&a.lock, NULL);
  pthread_mutex_init(&a.cbt_lock, NULL);
  pthread_mutex_init(&a.retain_lock, NULL);
  cycle_router_init(&a.router);
  if (load_registration(&a, o->state_dir))
    return 1;
  a.freeze = (struct freeze_options){.limit_ms = o->freeze_limit_ms, .pre_hook = o->pre_freeze_hook,
                                     .post_hook = o->post_thaw_hook};
  const char *precopy = getenv("RPL_BENCH_PRECOPY");
  a.no_precopy = precopy && !strcmp(precopy, "off");
  if (a.no_precopy)
    log_warn("RPL_BENCH_PRECOPY=off: points read everything dirty with the filesystems frozen (benchmarks only)");
  pthread_cond_init(&a.changed, NULL);
  a.wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  for (size_t i = 0; i < AGENT_MAX_DISKS; i++)
    a.rt[i].fd = -1;
  if (start_tracking_all(&a))
    return 1;
  struct control_server *ctl;
  rpl_err err = control_server_start(a.st.dir, agent_control_handler, &a, &ctl);
  if (err) {
    fprintf(stderr, "mobility-agent run: cannot serve the control socket in %s: %s\n", o->state_dir, rpl_strerror(err));
    cbt_close(a.cbt);
    return 1;
  }
  install_signal_handlers();
  srand((unsigned)(time(NULL) ^ getpid()));
  log_info("mobility-agent %s: agent %s, appliance %s, %zu protected disk(s)", RPL_VERSION, a.st.agent_id,
           a.st.appliance, a.st.ndisks);
  sd_notify_ready("agent running");

  pthread_t watcher;
  pthread_create(&watcher, NULL, watch_stop, &a);
  session_loop(&a);
  pthread_join(watcher, NULL);

  sd_notify_stopping();
  log_info("stopping");
  control_server_stop(ctl);
  release_agent(&a);
  return 0;
}

int agent_cmd_run(int argc, char **argv)
{
  struct run_opts o;
  int status = parse_run_opts(argc, argv, &o);
  return status ? status : run(&o);
}
