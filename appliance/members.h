/* members.h - the appliance group: appliances sharing one storage account and container share one
 * authority and one register of agents, kept in records beside the replicas, so that an agent
 * registered with one member is accepted by every member. Internal to appliance/ (cmd_init.c,
 * registration.c, session.c, the daemon). */
#ifndef APPLIANCE_MEMBERS_H
#define APPLIANCE_MEMBERS_H

#include <stdbool.h>
#include <stdint.h>

#include "catalog.h"
#include "rpl_error.h"
#include "settings.h"

/*
 * What it promises
 *  - The group's record (MEMBERS_PREFIX "group.conf") is written once, by the first member's init,
 *    and never replaced: its authority's private key is encrypted (AES-256-GCM) with a key derived
 *    (scrypt) from the operator's secret file, and every record carries an HMAC-SHA256 under
 *    another key derived from it. A record someone changed without the secret is refused, never used.
 *  - The secret itself is never stored: a member keeps the group's id and the HMAC key in
 *    STATE/group.conf (0600); the authority's key, like any appliance's, in STATE/appliance.key.
 *  - Agent records (MEMBERS_PREFIX "agents/<id>.conf") say what a member's catalog needs to accept
 *    the agent: hostname, certificate fingerprints (current and renewed), revoked. A revocation is
 *    final: no later write of the record clears it.
 *  - Every function opens its own storage client: callers on any thread, no shared state; they are
 *    rare (init, a registration, a renewal, an unknown agent's first connection, a revocation, the
 *    daemon's sweep once a minute).
 */

#define MEMBERS_PREFIX        "appliance-group/"
#define MEMBERS_SECRET_MIN    32     /* bytes: a secret shorter than a key is a password, guessable offline */
#define MEMBERS_SECRET_MAX    4096
#define MEMBERS_RECORD_MAX    (64u << 10) /* a record holds one certificate and key at most */
#define MEMBERS_SWEEP_S       60     /* how often a member reads the group's revocations and members */
#define MEMBERS_ADDRESS_TTL_S (7 * 86400) /* a member not heard of for longer is left out of the agents' lists */
#define MEMBERS_MAX           8      /* members whose addresses agents are given (PROTO_MAX_MEMBERS) */

struct members {
  bool in_group;
  char group_id[37];
  uint8_t mac_key[32];
};

/* init: makes the group in the settings' storage with this appliance's authority (cert and key
 * PEM), records it in STATE/group.conf and returns its id. RPL_E_MEMBERS_EXIST when the storage holds
 * one already. */
RPL_MUST_CHECK rpl_err members_create(const char *state_dir, const struct appliance_settings *s,
                                      const char *secret_file, const char *ca_cert_pem, const char *ca_key_pem,
                                      char group_id[37]);
/* init --join: reads the group's record and opens it with the secret: the authority's certificate
 * and key (the caller writes them as this appliance's own, then frees both; the key is wiped by
 * the caller), and records the group in STATE/group.conf. */
RPL_MUST_CHECK rpl_err members_join(const char *state_dir, const struct appliance_settings *s,
                                    const char *secret_file, char **ca_cert_pem, char **ca_key_pem,
                                    char group_id[37]);
/* The daemon: STATE/group.conf, or m->in_group false when this appliance is in no group. */
RPL_MUST_CHECK rpl_err members_load(const char *state_dir, struct members *m);

/* Publishes what the catalog says of agent id (after a registration, renewal or revocation),
 * keeping a revocation the record holds already. No-op outside a group. */
RPL_MUST_CHECK rpl_err members_publish_agent(const struct members *m, const struct appliance_settings *s,
                                             struct catalog *cat, const uint8_t id[PROTO_ID_SIZE]);
/* An agent this member does not know, or whose certificate it does not know: reads the group's
 * record of it and puts it in the catalog (hostname, fingerprints, revoked). RPL_E_NOT_FOUND when
 * the group has no such agent (or outside a group). */
RPL_MUST_CHECK rpl_err members_import_agent(const struct members *m, const struct appliance_settings *s,
                                            struct catalog *cat, const uint8_t id[PROTO_ID_SIZE]);
/* The daemon: this member's address (HOST:PORT, as agents reach it) in the group's records, under
 * its id (its lease id), with the time. */
RPL_MUST_CHECK rpl_err members_announce(const struct members *m, const struct appliance_settings *s,
                                        const char *member_id, const char *address);
/* The addresses the group's records list (this member's too), those announced within
 * MEMBERS_ADDRESS_TTL_S, sorted, at most MEMBERS_MAX; records that do not verify are left out. */
RPL_MUST_CHECK rpl_err members_addresses(const struct members *m, const struct appliance_settings *s,
                                         char out[MEMBERS_MAX][256], size_t *n);
/* The daemon's sweep: the group's revocations into the catalog; *revoked_now counts those new here. */
RPL_MUST_CHECK rpl_err members_sweep(const struct members *m, const struct appliance_settings *s,
                                     struct catalog *cat, unsigned *revoked_now);

/* ---- the record format, for the tests and the fuzz target ---- */
/* Appends the "mac=" line (HMAC-SHA256 under key of every byte before it) to body (cap bytes). */
RPL_MUST_CHECK rpl_err members_record_seal(const uint8_t key[32], char *body, size_t cap);
/* An agent record named name, of agent id: its mac checked (RPL_E_MEMBERS_SECRET) and cut off (text
 * is changed), then its fields (RPL_E_MEMBERS_RECORD). pending: the renewed certificate's
 * fingerprint, "" for none. */
RPL_MUST_CHECK rpl_err members_record_agent(const uint8_t key[32], char *text, const char *name,
                                           const uint8_t id[PROTO_ID_SIZE], struct catalog_agent *out,
                                           char pending[CATALOG_MAX_FINGERPRINT + 1]);

#endif
