/* fuzz_connstr.c - libFuzzer target for the storage connection-string parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blob.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char *text = malloc(size + 1);
  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  struct blob_account acct;
  if (blob_connstr_parse(text, &acct) == RPL_OK) {
    /* What parses must be usable: a host, a port, an endpoint that starts with the scheme. */
    if (!acct.host[0] || acct.port == 0 || strncmp(acct.endpoint, acct.https ? "https://" : "http://", acct.https ? 8 : 7) != 0)
      abort();
    /* A service principal's parts go into a URL path and a form unescaped: only safe characters. */
    if (acct.auth == BLOB_AUTH_CLIENT_SECRET || acct.auth == BLOB_AUTH_CLIENT_CERT) {
      if (!acct.tenant[0] || !acct.client_id[0] || acct.credential_file[0] != '/' ||
          strncmp(acct.authority, "https://", 8) != 0 || strpbrk(acct.tenant, "/?#&\"% ") ||
          strpbrk(acct.client_id, "/?#&\"% ") || strpbrk(acct.authority + 8, "/?#&\"% "))
        abort();
    }
  }
  free(text);
  return 0;
}
