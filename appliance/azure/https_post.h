/* https_post.h - one JSON POST over HTTPS to an address the operator configured (the appliance's
 * alert webhooks): the server verified against a pinned CA file or the system's CAs, no proxy, no
 * redirects, bounded in time and in the answer kept. Public header of rpl_azure, for appliance/. */
#ifndef RPL_HTTPS_POST_H
#define RPL_HTTPS_POST_H

#include <stddef.h>

#include "rpl_error.h"

#define HTTPS_POST_ANSWER_MAX 512 /* bytes of a refusal's answer kept for its detail */

/* Whether url is one a webhook may use: https://, a host, no user or password in it.
 * RPL_E_WEBHOOK_URL with the reason. */
RPL_MUST_CHECK rpl_err https_url_check(const char *url);

/* POSTs len bytes of body as application/json to url. ca_file (NULL or "": the system's CAs) is the
 * only authority the server's certificate may chain to. RPL_OK on a 2xx answer; otherwise
 * RPL_E_WEBHOOK_DELIVERY with its detail (what curl said, or the status and the answer's first
 * bytes). *status is the HTTP status (0: no answer). The caller owns every argument. */
RPL_MUST_CHECK rpl_err https_post_json(const char *url, const char *ca_file, const char *body, size_t len,
                                       unsigned timeout_s, long *status);

#endif
