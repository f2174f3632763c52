/* identity.h - the appliance's TLS identity (its CA certificate and key in the state directory)
 * and registration keys. Internal to appliance/. */
#ifndef APPLIANCE_IDENTITY_H
#define APPLIANCE_IDENTITY_H

#include <stddef.h>

#include "catalog.h"
#include "channel.h"
#include "file_io.h"
#include "rpl_error.h"
#include "state_files.h"

/* Loads STATE/appliance.crt and .key, making them first if absent (the key 0600). The caller frees
 * both strings. *created tells whether they were made now. */
RPL_MUST_CHECK rpl_err identity_ensure(const char *state_dir, char **cert_pem, char **key_pem, int *created);
/* Loads them; RPL_E_NOT_FOUND when init has not made them. */
RPL_MUST_CHECK rpl_err identity_load(const char *state_dir, char **cert_pem, char **key_pem);
/* Issues a one-time registration key: records the secret's hash in the catalog and writes the key
 * (CHAN_REGKEY_MAX bytes) to out. */
RPL_MUST_CHECK rpl_err identity_issue_regkey(struct catalog *c, const char *cert_pem, char *out);
/* Opens STATE/catalog.db. */
RPL_MUST_CHECK rpl_err identity_open_catalog(const char *state_dir, struct catalog **out);


#endif
