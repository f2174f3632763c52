/* fuzz_regkey.c - libFuzzer target for the registration key decoder (user-pasted input). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  char key[CHAN_REGKEY_MAX * 2];
  if (size >= sizeof key)
    size = sizeof key - 1;
  memcpy(key, data, size);
  key[size] = '\0';
  uint8_t secret[CHAN_SECRET_SIZE], fp[CHAN_FINGERPRINT_SIZE];
  if (chan_regkey_decode(key, secret, fp) == RPL_OK) {
    /* Whatever decodes re-encodes to the same key (base64url has one spelling per byte string
     * only up to the unused low bits of the last character, so compare decoded bytes). */
    char again[CHAN_REGKEY_MAX];
    chan_regkey_encode(secret, fp, again);
    uint8_t s2[CHAN_SECRET_SIZE], f2[CHAN_FINGERPRINT_SIZE];
    if (chan_regkey_decode(again, s2, f2) != RPL_OK || memcmp(s2, secret, sizeof s2) || memcmp(f2, fp, sizeof f2))
      abort();
  }
  return 0;
}
