/* fuzz_members_record.c - libFuzzer target for the appliance group's agent records: the input is a
 * record's body, sealed with a fixed key so that the field parser behind the mac check is reached,
 * and also given as it is (the mac check itself). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "members.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const uint8_t key[32] = {7};
  static const uint8_t id[PROTO_ID_SIZE] = {0x6f, 0x1c, 0x1a, 0x52};
  if (size > MEMBERS_RECORD_MAX)
    return 0;
  char *text = malloc(size + 128);
  if (!text)
    return 0;
  memcpy(text, data, size);
  text[size] = '\0';
  struct catalog_agent a;
  char pending[CATALOG_MAX_FINGERPRINT + 1];
  char *raw = strdup(text);
  if (raw) {
    (void)members_record_agent(key, raw, "fuzz", id, &a, pending);
    free(raw);
  }
  if (members_record_seal(key, text, size + 128) == RPL_OK)
    (void)members_record_agent(key, text, "fuzz", id, &a, pending);
  free(text);
  return 0;
}
