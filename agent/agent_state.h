/* agent_state.h - the agent's persistent state: registration (agent id, appliance address, pinned
 * fingerprint, client certificate) and the protected disks. Internal to agent/. */
#ifndef AGENT_STATE_H
#define AGENT_STATE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channel.h"
#include "proto.h"
#include "rpl_error.h"
#include "file_io.h"

#define AGENT_MAX_DISKS 64
#define AGENT_MAX_MEMBERS 8 /* other appliances of the appliance group: a group is a few, not a fleet */

struct agent_disk {
  char device[256];
  uint8_t id[PROTO_ID_SIZE];
};

struct agent_state {
  char dir[512];
  bool registered;
  char agent_id[64];
  char appliance[256];                 /* HOST:PORT: the appliance registered with */
  char members[AGENT_MAX_MEMBERS][256]; /* HOST:PORT of the other members of its appliance group: the
                                          agent moves to the next when the one it uses is gone */
  size_t nmembers;
  uint8_t fingerprint[CHAN_FINGERPRINT_SIZE];
  struct agent_disk disks[AGENT_MAX_DISKS];
  size_t ndisks;
};

/* Reads DIR/agent.conf (missing: an unregistered agent with no disks). Creates DIR (0700). */
RPL_MUST_CHECK rpl_err agent_state_load(const char *dir, struct agent_state *st);
/* Writes DIR/agent.conf atomically (temporary file, fsync, rename, fsync of the directory). */
RPL_MUST_CHECK rpl_err agent_state_save(const struct agent_state *st);
/* Paths of the client certificate and key in the state directory. */
void agent_state_path(const struct agent_state *st, const char *name, char *out, size_t outsz);


struct agent_disk *agent_state_find_disk(struct agent_state *st, const char *device);
void agent_disk_id_text(const uint8_t id[PROTO_ID_SIZE], char out[37]);

#endif
