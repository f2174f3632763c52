/* channel.h - the agent<->appliance secure channel: TLS 1.3 with mutual authentication, the
 * appliance's own CA, certificate pinning by fingerprint, and the registration key. */
#ifndef CHANNEL_H
#define CHANNEL_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#include "rpl_error.h"

#define CHAN_FINGERPRINT_SIZE 32 /* SHA-256 of the certificate's DER encoding */
#define CHAN_SECRET_SIZE      32 /* the registration key's one-time secret */
#define CHAN_REGKEY_PREFIX    "rk1-"
#define CHAN_REGKEY_MAX       128 /* characters of an encoded key, with its NUL */

/* All PEM strings returned are NUL-terminated and malloc'd: the caller frees them. */

/* The appliance's authority: an ECDSA P-256 key and a self-signed CA certificate (valid 10 years)
 * that signs the appliance's TLS server certificate and the agents' client certificates. */
RPL_MUST_CHECK rpl_err chan_make_authority(const char *common_name, char **cert_pem, char **key_pem);
/* An agent's key and certificate signing request. */
RPL_MUST_CHECK rpl_err chan_make_csr(const char *common_name, char **csr_pem, char **key_pem);
enum chan_cert_purpose { CHAN_CERT_CLIENT, CHAN_CERT_SERVER };
#define CHAN_MAX_CERT_SECONDS (3650L * 86400) /* no certificate outlives its authority's ten years */
/* Signs csr_pem with the authority: a certificate for TLS clients (agents) or servers (the
 * appliance's listeners) whose subject CN is `cn` (the CSR's own subject is not trusted), valid for
 * `seconds` from now (backdated for clock skew: an hour, or a tenth of a shorter life). */
RPL_MUST_CHECK rpl_err chan_sign_csr(const char *ca_cert_pem, const char *ca_key_pem, const char *csr_pem,
                                     const char *cn, enum chan_cert_purpose purpose, long seconds, char **cert_pem);
/* RPL_OK when cert_pem is a TLS server certificate issued by ca_pem and valid now. */
RPL_MUST_CHECK rpl_err chan_server_cert_issued_by(const char *cert_pem, const char *ca_pem);
/* A certificate's validity, in seconds since the epoch. */
RPL_MUST_CHECK rpl_err chan_cert_lifetime(const char *cert_pem, int64_t *not_before, int64_t *not_after);
RPL_MUST_CHECK rpl_err chan_fingerprint(const char *cert_pem, uint8_t out[CHAN_FINGERPRINT_SIZE]);
/* "AB:CD:..." form for humans and logs; out needs 3 * CHAN_FINGERPRINT_SIZE bytes. */
void chan_fingerprint_text(const uint8_t fp[CHAN_FINGERPRINT_SIZE], char *out);

/* Registration key: "rk1-" + base64url(secret || appliance fingerprint || CRC32C of both).
 * encode: out needs CHAN_REGKEY_MAX bytes. decode: RPL_E_REGKEY_FORMAT for anything not of that
 * form, RPL_E_REGKEY_CHECKSUM when it is but a character was mistyped. */
void chan_regkey_encode(const uint8_t secret[CHAN_SECRET_SIZE], const uint8_t fp[CHAN_FINGERPRINT_SIZE],
                        char *out);
RPL_MUST_CHECK rpl_err chan_regkey_decode(const char *key, uint8_t secret[CHAN_SECRET_SIZE],
                                          uint8_t fp[CHAN_FINGERPRINT_SIZE]);

/* TLS 1.3 only. The server presents its certificate (issued by the authority ca_pem, which is sent
 * with it) and asks for a client certificate, verified against the authority; a client without one
 * gets through the handshake only so that it can register (the session must then accept nothing
 * but REGISTER). The caller owns the returned SSL_CTX (SSL_CTX_free). */
RPL_MUST_CHECK rpl_err chan_server_ctx(const char *cert_pem, const char *key_pem, const char *ca_pem, SSL_CTX **out);
/* The client accepts a server certificate issued by the authority whose fingerprint is pinned (or
 * that authority's own); cert_pem and key_pem (the agent's client certificate) may be NULL before
 * registration. */
RPL_MUST_CHECK rpl_err chan_client_ctx(const uint8_t pinned[CHAN_FINGERPRINT_SIZE], const char *cert_pem,
                                       const char *key_pem, SSL_CTX **out);
/* After the handshake: the peer certificate's fingerprint; RPL_E_NOT_FOUND when it sent none. */
RPL_MUST_CHECK rpl_err chan_peer_fingerprint(SSL *ssl, uint8_t out[CHAN_FINGERPRINT_SIZE]);
/* After the handshake, on the server: the verified client certificate's CN into cn (size cnsz);
 * RPL_E_NOT_FOUND when the client presented none. */
RPL_MUST_CHECK rpl_err chan_peer_cn(SSL *ssl, char *cn, size_t cnsz);

#endif
