/* fuzz_token_json.c - libFuzzer target for the token JSON parser (managed identity, Entra ID) and
 * the OAuth error answer parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blob_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct blob_token t;
  if (blob_token_parse((const char *)data, size, 1700000000, &t) == RPL_OK) {
    /* The token goes into a header: printable, no spaces, and it must not have expired. */
    for (const char *p = t.access_token; *p; p++)
      if (*p <= ' ' || *p == 0x7f)
        abort();
    if (!t.access_token[0] || t.expires_on <= 1700000000)
      abort();
  }
  /* An error answer's fields go into a one-line detail: no line breaks, cut to fit. */
  char error[16], desc[64];
  if (blob_token_parse_error((const char *)data, size, error, sizeof error, desc, sizeof desc) == RPL_OK)
    if (strlen(error) >= sizeof error || strlen(desc) >= sizeof desc || strpbrk(error, "\r\n") || strpbrk(desc, "\r\n"))
      abort();
  return 0;
}
