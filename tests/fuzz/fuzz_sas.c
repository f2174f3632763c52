/* fuzz_sas.c - libFuzzer target for SAS token validation. */
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
  if (blob_sas_validate(text) == RPL_OK) {
    /* An accepted token goes into URLs as is: no byte that would break one. */
    for (const char *p = text; *p; p++)
      if (*p == ' ' || *p == '#' || *p == '\r' || *p == '\n' || *p == '?')
        abort();
  }
  free(text);
  return 0;
}
