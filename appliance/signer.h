/* signer.h - the appliance authority's private key kept in a small process of its own, which signs
 * certificate requests and does nothing else: no listener, session or page ever holds the key. */
#ifndef SIGNER_H
#define SIGNER_H

#include "channel.h"
#include "rpl_error.h"

#define SIGNER_MAX_CN 128 /* a subject CN: an agent id or the appliance's name */

struct signer;

/* Forks the signer, which reads the authority's key from STATE/appliance.key itself; the caller
 * never sees it. Call before any thread starts (a fork copies only the calling thread). The signer
 * ends when signer_stop closes its socket or the caller dies. */
RPL_MUST_CHECK rpl_err signer_start(const char *state_dir, struct signer **out);
/* Has csr_pem signed for `cn` (see chan_sign_csr); *cert_pem is malloc'd, the caller frees it.
 * Thread-safe: one request at a time. RPL_E_TLS_CERT for a request the signer refused. */
RPL_MUST_CHECK rpl_err signer_sign(struct signer *s, const char *csr_pem, const char *cn,
                                   enum chan_cert_purpose purpose, long seconds, char **cert_pem);
/* Closes the socket and waits for the signer to exit. NULL is a no-op. */
void signer_stop(struct signer *s);

#endif
