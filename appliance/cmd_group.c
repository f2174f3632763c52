/* cmd_group.c - `replication-appliance group`: consistency groups across servers (create, delete,
 * list), the command and its part in the daemon (over the control socket). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <uuid/uuid.h>

#include "commands.h"
#include "control.h"
#include "group_point.h"
#include "json_out.h"

#define GROUP_USAGE "usage: group --state DIR create NAME DISK_ID... | delete NAME | list [--json]"

/* ---- in the daemon ------------------------------------------------------------------------- */

static int reply_error(struct control_reply *out, const char *what, rpl_err err)
{
  char why[RPL_DETAIL_MAX + 256];
  control_printf(out, "group %s: %s", what, rpl_describe(err, why, sizeof why));
  return err == RPL_E_GROUP_UNKNOWN || err == RPL_E_GROUP_NAME || err == RPL_E_GROUP_EXISTS ||
                 err == RPL_E_GROUP_MEMBER || err == RPL_E_GROUP_EMPTY
           ? 2
           : 1;
}

static int ctl_group_create(struct appliance *a, int argc, char **argv, struct control_reply *out)
{
  struct catalog_group *g = calloc(1, sizeof *g);
  if (!g)
    return reply_error(out, "create", RPL_E_NOMEM);
  rpl_err err = RPL_OK;
  if (argc < 3 || !proto_group_name_ok(argv[2], strlen(argv[2])))
    err = argc < 3 ? RPL_E_GROUP_NAME : rpl_fail(RPL_E_GROUP_NAME, "'%s'", argv[2]);
  else if (argc < 4)
    err = RPL_E_GROUP_EMPTY;
  else if (argc - 3 > CATALOG_GROUP_MAX_DISKS)
    err = rpl_fail(RPL_E_LIMIT, "a group has at most %d disks", CATALOG_GROUP_MAX_DISKS);
  for (int i = 3; i < argc && !err; i++)
    if (uuid_parse(argv[i], g->disks[g->n++]))
      err = rpl_fail(RPL_E_GROUP_MEMBER, "'%s' is not a disk id (a UUID, see 'replication-appliance status')",
                     argv[i]);
  if (!err) {
    snprintf(g->name, sizeof g->name, "%s", argv[2]);
    g->created_time = time(NULL);
    err = gp_create(a, g);
  }
  free(g);
  if (err)
    return reply_error(out, "create", err);
  control_printf(out, "group %s created with %d disk(s)\n", argv[2], argc - 3);
  return 0;
}

int gp_control(struct appliance *a, int argc, char **argv, struct control_reply *out)
{
  const char *act = argc > 1 ? argv[1] : "";
  if (!strcmp(act, "create"))
    return ctl_group_create(a, argc, argv, out);
  if (!strcmp(act, "delete")) {
    rpl_err err = argc == 3 ? gp_delete(a, argv[2]) : rpl_fail(RPL_E_GROUP_UNKNOWN, "name one group");
    if (err)
      return reply_error(out, "delete", err);
    control_printf(out, "group %s deleted (its points are kept)\n", argv[2]);
    return 0;
  }
  if (!strcmp(act, "list")) {
    bool json = argc > 2 && !strcmp(argv[2], "--json");
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f)
      return reply_error(out, "list", RPL_E_NOMEM);
    struct json_out j;
    if (json) {
      json_init(&j, f);
      json_object_begin(&j, NULL);
      json_array_begin(&j, "groups");
    }
    gp_write(a, json ? &j : NULL, f);
    if (json) {
      json_array_end(&j);
      json_object_end(&j);
      json_finish(&j);
    }
    fclose(f);
    control_printf(out, "%s", buf ? buf : "");
    free(buf);
    return 0;
  }
  control_printf(out, "group: " GROUP_USAGE);
  return 2;
}

/* ---- the command ----------------------------------------------------------------------------- */

int appliance_cmd_group(int argc, char **argv)
{
  const char *state = APPLIANCE_DEFAULT_STATE;
  const char *args[CONTROL_MAX_ARGS];
  int n = 0;
  args[n++] = "group";
  bool json = false;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--state") && i + 1 < argc) {
      state = argv[++i];
    } else if (!strcmp(argv[i], "--json")) {
      json = true;
    } else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
      printf("replication-appliance " GROUP_USAGE "\n");
      return 0;
    } else if (argv[i][0] == '-' || n == CONTROL_MAX_ARGS - 1) {
      fprintf(stderr, "replication-appliance group: %s\n", n == CONTROL_MAX_ARGS - 1 ? "too many disks" : GROUP_USAGE);
      return 2;
    } else {
      args[n++] = argv[i];
    }
  }
  const char *act = n > 1 ? args[1] : "";
  bool ok = (!strcmp(act, "create") && n >= 3) || (!strcmp(act, "delete") && n == 3) || (!strcmp(act, "list") && n == 2);
  if (!ok || (json && strcmp(act, "list"))) {
    fprintf(stderr, "replication-appliance group: %s\n",
            !strcmp(act, "create") && n == 3 ? rpl_strerror(RPL_E_GROUP_EMPTY) : GROUP_USAGE);
    return 2;
  }
  if (json)
    args[n++] = "--json";
  int status;
  char *reply;
  rpl_err err = control_call(state, n, args, &status, &reply);
  if (err == RPL_E_NO_DAEMON) {
    fprintf(stderr, "replication-appliance group: the appliance is not running (no control socket in %s): start it "
            "with 'replication-appliance run --state %s'\n", state, state);
    return 1;
  }
  if (err) {
    fprintf(stderr, "replication-appliance group: %s\n", rpl_strerror(err));
    return 1;
  }
  fputs(reply, status ? stderr : stdout);
  if (status && reply[0] && reply[strlen(reply) - 1] != '\n')
    fputc('\n', stderr);
  free(reply);
  return status;
}
