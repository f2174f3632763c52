/* netpath.c - resolves the storage host (zone file or system resolver), reports the CNAME chain and
 * classifies addresses, so that the client can refuse a public path before opening a connection. */
#include "netpath.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <resolv.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Caps that keep a hostile or mistaken file from costing memory: entries and names per line. */
#define ZONE_MAX_ENTRIES 65536
#define ZONE_MAX_NAMES_PER_LINE 16

struct zone_entry {
  struct sockaddr_storage addr;
  size_t nnames;
  char names[ZONE_MAX_NAMES_PER_LINE][NETPATH_NAME_MAX]; /* names[0] is the canonical name */
};

struct netpath_zone {
  struct zone_entry *entries;
  size_t count, cap;
};

/* A DNS name as hosts(5) accepts it: labels of letters, digits, '-' and '_', 1-63 bytes each. */
static bool valid_dns_name(const char *name, size_t len)
{
  if (len == 0 || len > 253)
    return false;
  size_t label = 0;
  for (size_t i = 0; i < len; i++) {
    unsigned char ch = (unsigned char)name[i];
    if (ch == '.') {
      if (label == 0)
        return false;
      label = 0;
      continue;
    }
    if (!isalnum(ch) && ch != '-' && ch != '_')
      return false;
    if (++label > 63)
      return false;
  }
  return true;
}

/* Lower-cases name and drops one trailing dot, so "A.Example.com." matches "a.example.com". */
static void normalise_name(const char *in, char *out, size_t outsz)
{
  size_t n = strlen(in);
  if (n > 0 && in[n - 1] == '.')
    n--;
  if (n >= outsz)
    n = outsz - 1;
  for (size_t i = 0; i < n; i++)
    out[i] = (char)tolower((unsigned char)in[i]);
  out[n] = '\0';
}

static bool parse_address(const char *text, struct sockaddr_storage *out)
{
  memset(out, 0, sizeof *out);
  struct sockaddr_in *v4 = (struct sockaddr_in *)out;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)out;
  if (inet_pton(AF_INET, text, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    return true;
  }
  if (inet_pton(AF_INET6, text, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    return true;
  }
  return false;
}

rpl_err netpath_zone_parse(const char *text, size_t len, struct netpath_zone **out)
{
  *out = NULL;
  if (len > NETPATH_ZONE_MAX_BYTES) {
    return rpl_fail(RPL_E_BLOB_ZONE_FILE, "zone file is %zu bytes, over the %d-byte cap", len, NETPATH_ZONE_MAX_BYTES);
  }
  struct netpath_zone *zone = calloc(1, sizeof *zone);
  if (!zone)
    return RPL_E_NOMEM;
  size_t pos = 0;
  unsigned lineno = 0;
  rpl_err err = RPL_OK;
  while (pos < len && err == RPL_OK) {
    lineno++;
    size_t end = pos;
    while (end < len && text[end] != '\n')
      end++;
    char line[4096];
    size_t ll = end - pos;
    if (ll >= sizeof line) {
      err = rpl_fail(RPL_E_BLOB_ZONE_FILE, "line %u: longer than %zu bytes", lineno, sizeof line - 1);
      break;
    }
    memcpy(line, text + pos, ll);
    line[ll] = '\0';
    pos = end + 1;
    if (memchr(line, '\0', ll)) {
      err = rpl_fail(RPL_E_BLOB_ZONE_FILE, "line %u: contains a NUL byte (not a text file)", lineno);
      break;
    }
    char *hash = strchr(line, '#');
    if (hash)
      *hash = '\0';
    char *save = NULL;
    char *field = strtok_r(line, " \t\r\f\v", &save);
    if (!field)
      continue; /* blank or comment-only line */
    struct zone_entry entry;
    memset(&entry, 0, sizeof entry);
    if (!parse_address(field, &entry.addr)) {
      err = rpl_fail(RPL_E_BLOB_ZONE_FILE, "line %u: '%.64s' is not an IPv4 or IPv6 address", lineno, field);
      break;
    }
    while ((field = strtok_r(NULL, " \t\r\f\v", &save)) != NULL) {
      size_t fl = strlen(field);
      if (fl > 0 && field[fl - 1] == '.')
        fl--;
      if (!valid_dns_name(field, fl)) {
        err = rpl_fail(RPL_E_BLOB_ZONE_FILE, "line %u: '%.64s' is not a valid host name", lineno, field);
        break;
      }
      if (entry.nnames == ZONE_MAX_NAMES_PER_LINE) {
        err = rpl_fail(RPL_E_BLOB_ZONE_FILE, "line %u: more than %d names", lineno, ZONE_MAX_NAMES_PER_LINE);
        break;
      }
      normalise_name(field, entry.names[entry.nnames++], NETPATH_NAME_MAX);
    }
    if (err != RPL_OK)
      break;
    if (entry.nnames == 0) {
      err = rpl_fail(RPL_E_BLOB_ZONE_FILE, "line %u: an address with no host name", lineno);
      break;
    }
    if (zone->count == zone->cap) {
      if (zone->cap == ZONE_MAX_ENTRIES) {
        err = rpl_fail(RPL_E_BLOB_ZONE_FILE, "line %u: more than %d entries", lineno, ZONE_MAX_ENTRIES);
        break;
      }
      size_t ncap = zone->cap ? zone->cap * 2 : 8;
      struct zone_entry *grown = realloc(zone->entries, ncap * sizeof *grown);
      if (!grown) {
        err = RPL_E_NOMEM;
        break;
      }
      zone->entries = grown;
      zone->cap = ncap;
    }
    zone->entries[zone->count++] = entry;
  }
  if (err != RPL_OK) {
    netpath_zone_free(zone);
    return err;
  }
  *out = zone;
  return RPL_OK;
}

rpl_err netpath_zone_load(const char *path, struct netpath_zone **out)
{
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) {
    return rpl_fail(RPL_E_BLOB_ZONE_FILE, "cannot open private DNS zone file %s: %s", path, strerror(errno));
  }
  char *buf = malloc(NETPATH_ZONE_MAX_BYTES + 1);
  if (!buf) {
    fclose(f);
    return RPL_E_NOMEM;
  }
  size_t n = fread(buf, 1, NETPATH_ZONE_MAX_BYTES + 1, f);
  bool read_error = ferror(f) != 0;
  fclose(f);
  if (read_error) {
    free(buf);
    return rpl_fail(RPL_E_BLOB_ZONE_FILE, "cannot read private DNS zone file %s", path);
  }
  rpl_err err = netpath_zone_parse(buf, n, out);
  free(buf);
  if (err == RPL_E_BLOB_ZONE_FILE)
    return rpl_fail(err, "private DNS zone file %s: %s", path, rpl_detail(err));
  return err;
}

void netpath_zone_free(struct netpath_zone *zone)
{
  if (!zone)
    return;
  free(zone->entries);
  free(zone);
}

static void add_address(struct netpath_route *route, const struct sockaddr *sa, socklen_t salen)
{
  if (route->naddrs == NETPATH_MAX_ADDRS)
    return;
  for (size_t i = 0; i < route->naddrs; i++)
    if (memcmp(&route->addrs[i], sa, salen) == 0)
      return;
  size_t i = route->naddrs++;
  memset(&route->addrs[i], 0, sizeof route->addrs[i]);
  memcpy(&route->addrs[i], sa, salen);
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, route->addr_text[i], NETPATH_ADDR_TEXT);
  else
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, route->addr_text[i], NETPATH_ADDR_TEXT);
  route->classes[i] = netpath_classify(sa);
}

static void add_chain(struct netpath_route *route, const char *name)
{
  char norm[NETPATH_NAME_MAX];
  normalise_name(name, norm, sizeof norm);
  if (route->chain_len > 0 && strcmp(route->chain[route->chain_len - 1], norm) == 0)
    return;
  if (route->chain_len < NETPATH_MAX_CHAIN)
    memcpy(route->chain[route->chain_len++], norm, sizeof norm);
}

static rpl_err resolve_in_zone(const char *name, const struct netpath_zone *zone,
                               struct netpath_route *route)
{
  const char *canonical = NULL;
  for (size_t i = 0; i < zone->count; i++) {
    const struct zone_entry *e = &zone->entries[i];
    for (size_t k = 0; k < e->nnames; k++) {
      if (strcmp(e->names[k], name) != 0)
        continue;
      if (!canonical)
        canonical = e->names[0];
      socklen_t len = e->addr.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
      add_address(route, (const struct sockaddr *)&e->addr, len);
      break;
    }
  }
  if (!canonical)
    return RPL_E_BLOB_RESOLVE;
  add_chain(route, canonical); /* an alias line reads as "name CNAME canonical" */
  return RPL_OK;
}

/* The CNAME chain as the system's DNS servers answer it; best effort, for the report only (the
 * addresses come from getaddrinfo, which also honours /etc/hosts and nsswitch). */
static void dns_cname_chain(const char *host, struct netpath_route *route)
{
  struct __res_state res;
  memset(&res, 0, sizeof res);
  if (res_ninit(&res) != 0)
    return;
  res.retrans = 2;
  res.retry = 1;
  char name[NETPATH_NAME_MAX];
  normalise_name(host, name, sizeof name);
  for (int hop = 0; hop < NETPATH_MAX_CHAIN - 1; hop++) {
    unsigned char answer[4096];
    int n = res_nquery(&res, name, ns_c_in, ns_t_cname, answer, sizeof answer);
    if (n <= 0)
      break;
    ns_msg msg;
    if (ns_initparse(answer, n, &msg) != 0)
      break;
    bool followed = false;
    for (int i = 0; i < ns_msg_count(msg, ns_s_an) && !followed; i++) {
      ns_rr rr;
      if (ns_parserr(&msg, ns_s_an, i, &rr) != 0 || ns_rr_type(rr) != ns_t_cname)
        continue;
      char target[NETPATH_NAME_MAX];
      if (ns_name_uncompress(ns_msg_base(msg), ns_msg_end(msg), ns_rr_rdata(rr), target, sizeof target) < 0)
        continue;
      add_chain(route, target);
      normalise_name(target, name, sizeof name);
      followed = true;
    }
    if (!followed)
      break;
  }
  res_nclose(&res);
}

rpl_err netpath_resolve(const char *host, const struct netpath_zone *zone, struct netpath_route *out)
{
  memset(out, 0, sizeof *out);
  size_t hl = strlen(host);
  if (hl >= NETPATH_NAME_MAX) {
    return rpl_fail(RPL_E_BLOB_RESOLVE, "host name is longer than %d bytes", NETPATH_NAME_MAX - 1);
  }
  normalise_name(host, out->host, sizeof out->host);
  add_chain(out, out->host);
  /* An address literal needs no resolution and has no chain. */
  struct sockaddr_storage literal;
  if (parse_address(out->host, &literal)) {
    out->source = "address literal";
    add_address(out, (struct sockaddr *)&literal,
                literal.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    return RPL_OK;
  }
  if (zone) {
    out->source = "private DNS zone file";
    if (resolve_in_zone(out->host, zone, out) != RPL_OK) {
      return rpl_fail(RPL_E_BLOB_RESOLVE, "%s is not in the private DNS zone file: add a line '<private endpoint address> %s'",
                      out->host, out->host);
    }
    return RPL_OK;
  }
  out->source = "system resolver";
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_CANONNAME};
  struct addrinfo *res = NULL;
  int rc = getaddrinfo(out->host, NULL, &hints, &res);
  if (rc != 0) {
    return rpl_fail(RPL_E_BLOB_RESOLVE, "cannot resolve %s: %s (check the DNS servers in /etc/resolv.conf, or give the private DNS zone file)",
                    out->host, gai_strerror(rc));
  }
  dns_cname_chain(out->host, out);
  if (res->ai_canonname)
    add_chain(out, res->ai_canonname);
  for (struct addrinfo *ai = res; ai; ai = ai->ai_next)
    if (ai->ai_family == AF_INET || ai->ai_family == AF_INET6)
      add_address(out, ai->ai_addr, ai->ai_addrlen);
  freeaddrinfo(res);
  if (out->naddrs == 0) {
    return rpl_fail(RPL_E_BLOB_RESOLVE, "%s has no IPv4 or IPv6 address", out->host);
  }
  return RPL_OK;
}

enum netpath_class netpath_classify(const struct sockaddr *sa)
{
  if (sa->sa_family == AF_INET) {
    uint32_t a = ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr);
    if ((a >> 24) == 10 || (a >> 20) == ((172u << 4) | 1u) || (a >> 16) == ((192u << 8) | 168u))
      return NETPATH_RFC1918;
    if ((a >> 22) == ((100u << 2) | 1u)) /* 100.64.0.0/10 */
      return NETPATH_SHARED;
    if ((a >> 24) == 127)
      return NETPATH_LOOPBACK;
    return NETPATH_PUBLIC;
  }
  if (sa->sa_family == AF_INET6) {
    const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
    if (IN6_IS_ADDR_LOOPBACK(a))
      return NETPATH_LOOPBACK;
    if ((a->s6_addr[0] & 0xfe) == 0xfc)
      return NETPATH_UNIQUE_LOCAL;
    if (IN6_IS_ADDR_V4MAPPED(a)) {
      struct sockaddr_in v4 = {.sin_family = AF_INET};
      memcpy(&v4.sin_addr, &a->s6_addr[12], 4);
      return netpath_classify((const struct sockaddr *)&v4);
    }
    return NETPATH_PUBLIC;
  }
  return NETPATH_PUBLIC;
}

const char *netpath_class_name(enum netpath_class cls)
{
  switch (cls) {
  case NETPATH_RFC1918: return "private, RFC 1918";
  case NETPATH_SHARED: return "private, 100.64.0.0/10";
  case NETPATH_UNIQUE_LOCAL: return "private, fc00::/7";
  case NETPATH_LOOPBACK: return "loopback";
  case NETPATH_PUBLIC: break;
  }
  return "public";
}

rpl_err netpath_require_private(const struct netpath_route *route)
{
  for (size_t i = 0; i < route->naddrs; i++) {
    if (netpath_class_is_private(route->classes[i]))
      continue;
    return rpl_fail(RPL_E_BLOB_PUBLIC_ADDRESS, "%s resolves to the public address %s (%s): storage must be reached over its private endpoint; "
                    "link the private DNS zone privatelink.blob.core.windows.net to this network (or give the zone file), "
                    "approve the private endpoint connection on the storage account, and flush DNS caches",
                    route->host, route->addr_text[i], route->source ? route->source : "resolver");
  }
  if (route->naddrs == 0) {
    return rpl_fail(RPL_E_BLOB_RESOLVE, "%s has no address", route->host);
  }
  return RPL_OK;
}

char *netpath_route_format(const struct netpath_route *route, char *out, size_t outsz)
{
  if (outsz == 0)
    return out;
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; i < route->chain_len && o < outsz; i++)
    o += (size_t)snprintf(out + o, outsz - o, "%s%s", i ? " -> " : "", route->chain[i]);
  for (size_t i = 0; i < route->naddrs && o < outsz; i++)
    o += (size_t)snprintf(out + o, outsz - o, "%s%s (%s)", i ? ", " : " -> ", route->addr_text[i],
                          netpath_class_name(route->classes[i]));
  if (o < outsz && route->source)
    snprintf(out + o, outsz - o, " [%s]", route->source);
  return out;
}
