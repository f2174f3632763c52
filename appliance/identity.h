/* identity.h - the appliance's TLS identity (its authority's certificate and key, the listeners'
 * certificate the authority issues, in the state directory) and registration keys. Internal to
 * appliance/. */
#ifndef APPLIANCE_IDENTITY_H
#define APPLIANCE_IDENTITY_H

#include <stddef.h>

#include "catalog.h"
#include "channel.h"
#include "file_io.h"
#include "signer.h"
#include "rpl_error.h"
#include "state_files.h"

/* Loads STATE/appliance.crt and .key, making them first if absent (the key 0600). The caller frees
 * both strings. *created tells whether they were made now. */
RPL_MUST_CHECK rpl_err identity_ensure(const char *state_dir, char **cert_pem, char **key_pem, int *created);
/* Loads the authority's certificate alone (the caller frees it); RPL_E_NOT_FOUND before init. */
RPL_MUST_CHECK rpl_err identity_load_authority(const char *state_dir, char **cert_pem);
/* Makes the given authority (an appliance group's) this appliance's: written when it has none,
 * RPL_OK when it is that one already, RPL_E_MEMBERS_IDENTITY when it has another. */
RPL_MUST_CHECK rpl_err identity_adopt(const char *state_dir, const char *cert_pem, const char *key_pem);
/* Loads them; RPL_E_NOT_FOUND when init has not made them. */
RPL_MUST_CHECK rpl_err identity_load(const char *state_dir, char **cert_pem, char **key_pem);
#define SERVER_CERT_SECONDS (397L * 86400) /* what browsers accept of a server certificate */
#define REGKEY_TTL_DEFAULT_S (24 * 3600)   /* a registration key's life unless init --key-ttl says */
#define REGKEY_TTL_MIN_S     (5 * 60)      /* time to copy a key to a server and run register */
#define REGKEY_TTL_MAX_S     (30 * 86400)  /* a key lying about longer is a password nobody rotates */

/* Issues a one-time registration key valid for ttl_seconds (0: no end), revoking the unused ones
 * before it: records the secret's hash in the catalog (never the key) and writes the key
 * (CHAN_REGKEY_MAX bytes) to out, its expiry (0: none) to *expires_time. */
RPL_MUST_CHECK rpl_err identity_issue_regkey(struct catalog *c, const char *cert_pem, int64_t ttl_seconds, char *out,
                                             int64_t *expires_time);
/* SERVER_CERT_SECONDS, or what $RPL_TEST_SERVER_CERT_SECONDS says (tests, 60 s and up). */
long identity_server_cert_seconds(void);
/* Removes the clear-text key file of older versions, if there is one. */
void identity_remove_legacy_regkey(const char *state_dir);
/* The listeners' certificate and key (STATE/server.crt, server.key; the caller frees both), issued
 * again through the signer when missing, unusable, not the authority's, or two thirds through
 * their life. */
RPL_MUST_CHECK rpl_err identity_server_cert(const char *state_dir, struct signer *sg, const char *ca_cert,
                                            char **cert_pem, char **key_pem);
/* Opens STATE/catalog.db. */
RPL_MUST_CHECK rpl_err identity_open_catalog(const char *state_dir, struct catalog **out);


#endif
