/* netpath.h - the network path to a storage account: resolution through the system resolver or a
 * private DNS zone file (hosts format), the CNAME chain, and private/public address classification. */
#ifndef NETPATH_H
#define NETPATH_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "rpl_error.h"

#define NETPATH_MAX_ADDRS 8
#define NETPATH_MAX_CHAIN 8
#define NETPATH_NAME_MAX 256
#define NETPATH_ADDR_TEXT 48
/* A zone file is a small hand-kept file; anything bigger is a mistake (wrong file given). */
#define NETPATH_ZONE_MAX_BYTES (1024 * 1024)

/* What an address is, for the private-endpoint rule: everything not listed here is public. */
enum netpath_class {
  NETPATH_PUBLIC = 0,
  NETPATH_RFC1918,      /* 10/8, 172.16/12, 192.168/16 */
  NETPATH_SHARED,       /* 100.64/10 (carrier-grade NAT, used by some private networks) */
  NETPATH_UNIQUE_LOCAL, /* fc00::/7 */
  NETPATH_LOOPBACK,     /* 127/8, ::1 */
};

/* A parsed hosts(5)-format file: "ADDRESS CANONICAL_NAME [ALIAS...]" lines, '#' comments. */
struct netpath_zone;

/* How a host name resolved: the chain of names from the one asked to the one that had addresses,
 * the addresses in resolver order with their class, and where the answer came from. */
struct netpath_route {
  char host[NETPATH_NAME_MAX];
  char chain[NETPATH_MAX_CHAIN][NETPATH_NAME_MAX]; /* chain[0] = host, then each CNAME target */
  size_t chain_len;
  size_t naddrs;
  struct sockaddr_storage addrs[NETPATH_MAX_ADDRS];
  char addr_text[NETPATH_MAX_ADDRS][NETPATH_ADDR_TEXT];
  enum netpath_class classes[NETPATH_MAX_ADDRS];
  const char *source; /* "private DNS zone file" or "system resolver" (static storage) */
};

/* Parses zone text (len bytes, need not be NUL-terminated). On a bad line returns
 * RPL_E_BLOB_ZONE_FILE with the detail (rpl_detail) "line N: what is wrong". */
RPL_MUST_CHECK rpl_err netpath_zone_parse(const char *text, size_t len, struct netpath_zone **out);
/* Reads and parses the file at path (at most NETPATH_ZONE_MAX_BYTES). */
RPL_MUST_CHECK rpl_err netpath_zone_load(const char *path, struct netpath_zone **out);
void netpath_zone_free(struct netpath_zone *zone);

/* Resolves host: from zone when given (a name listed as an alias reports the line's canonical name
 * as its CNAME target), else with getaddrinfo and, for the report, the CNAME chain from the system
 * resolver's DNS servers. RPL_E_BLOB_RESOLVE when the name has no address. */
RPL_MUST_CHECK rpl_err netpath_resolve(const char *host, const struct netpath_zone *zone,
                                       struct netpath_route *out);

enum netpath_class netpath_classify(const struct sockaddr *sa);
const char *netpath_class_name(enum netpath_class cls);
static inline bool netpath_class_is_private(enum netpath_class cls) { return cls != NETPATH_PUBLIC; }

/* RPL_OK when every address of route is private; else RPL_E_BLOB_PUBLIC_ADDRESS with its detail
 * naming the host, the public address and the fix. */
RPL_MUST_CHECK rpl_err netpath_require_private(const struct netpath_route *route);

/* "a.blob.core.windows.net -> a.privatelink.blob.core.windows.net -> 10.1.2.3 (RFC 1918)"; returns out. */
char *netpath_route_format(const struct netpath_route *route, char *out, size_t outsz);

#endif
