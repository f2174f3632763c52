/* main.c - mobility-agent's entry point: dispatches the users' commands listed in docs/architecture.md. */
#include <stdio.h>
#include <string.h>

#include <openssl/ssl.h>
#if RPL_STATIC_PROGRAM
#include <nss.h>
#endif

#include "commands.h"
#include "rpl_log.h"
#include "rpl_version.h"

static const struct agent_command commands[] = {
  {"cbt", agent_cmd_cbt, "cbt start|stop|drain|status|ack ...  the change-block tracker alone (cbt --help)"},
  {"register", agent_cmd_register, "register --appliance HOST:PORT --key KEY [--state DIR]"},
  {"run", agent_cmd_run, "run [--state DIR] [--freeze-limit-ms N] [--pre-freeze-hook CMD] [--post-thaw-hook CMD]"},
  {"protect", agent_cmd_protect, "protect DEVICE [--wait | --no-wait] [--state DIR]"},
  {"unprotect", agent_cmd_unprotect, "unprotect DEVICE [--delete-replica [--yes]] [--state DIR]"},
  {"checkpoint", agent_cmd_checkpoint, "checkpoint [DEVICE | --group NAME] [--wait] [--state DIR]"},
  {"status", agent_cmd_status, "status [--state DIR] [--json]"},
  {"check", agent_cmd_check, "check [--state DIR] [--json] [--root DIR]"},
  {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
  fprintf(out, "usage: mobility-agent COMMAND [ARGS]\n       mobility-agent --version\n\ncommands:\n");
  for (const struct agent_command *c = commands; c->name; c++)
    fprintf(out, "  %s\n", c->usage);
}

/* The agent runs on servers whose libraries are not the build machine's (cmake/StaticAgent.cmake):
 * nothing it does may depend on their configuration files naming code to load. */
static void portable_runtime(void)
{
  /* The server's openssl.cnf may name engines or providers built for its own libcrypto: loading one
   * into this program (dlopen) would mix two OpenSSLs. The agent's TLS is fixed (TLS 1.3, pinned
   * identities), so it reads no OpenSSL configuration at all. */
  OPENSSL_init_ssl(OPENSSL_INIT_NO_LOAD_CONFIG, NULL);
#if RPL_STATIC_PROGRAM
  /* Static glibc has the "files" (/etc/hosts) and "dns" (/etc/resolv.conf) host lookups built in;
   * any other source in the server's nsswitch.conf (mdns, resolve, sss, ...) would be dlopen()ed
   * from the server's glibc, which is not ours. The appliance's address comes from those two. */
  __nss_configure_lookup("hosts", "files dns");
#endif
}

int main(int argc, char **argv)
{
  portable_runtime();
  /* Daemons log what they do; a command's outcome is its one line on stderr. */
  log_init("mobility-agent", argc > 1 && !strcmp(argv[1], "run") ? LOG_LVL_INFO : LOG_LVL_ERR);
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
    printf("mobility-agent %s\n", RPL_VERSION);
    return 0;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  for (const struct agent_command *c = commands; c->name; c++)
    if (!strcmp(argv[1], c->name))
      return c->run(argc - 1, argv + 1);
  fprintf(stderr, "mobility-agent: unknown command '%s' (see mobility-agent --help)\n", argv[1]);
  return 2;
}
