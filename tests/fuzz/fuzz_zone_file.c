/* fuzz_zone_file.c - libFuzzer target for the private DNS zone file (hosts format) parser and the
 * lookups made through it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "netpath.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct netpath_zone *zone = NULL;
  if (netpath_zone_parse((const char *)data, size, &zone) != RPL_OK)
    return 0;
  struct netpath_route route;
  static const char *const names[] = {"acct.blob.core.windows.net", "a", "localhost"};
  for (size_t i = 0; i < 3; i++) {
    if (netpath_resolve(names[i], zone, &route) == RPL_OK) {
      if (route.naddrs == 0 || route.chain_len == 0)
        abort();
      char line[2048];
      netpath_route_format(&route, line, sizeof line);
      (void)netpath_require_private(&route);
    }
  }
  netpath_zone_free(zone);
  return 0;
}
