/* fuzz_blob_xml.c - libFuzzer target for the storage XML parsers (page list, blob listing, error);
 * the first byte picks the parser. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "blob_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size == 0)
    return 0;
  const char *xml = (const char *)data + 1;
  size_t len = size - 1;
  char marker[256], code[64], message[256];
  switch (data[0] % 3) {
  case 0: {
    struct blob_page_list pl = {0};
    if (blob_xml_parse_page_list(xml, len, &pl, marker, sizeof marker) == RPL_OK)
      for (size_t i = 0; i < pl.count; i++)
        if (pl.ranges[i].offset % 512 || pl.ranges[i].length % 512 || pl.ranges[i].length == 0)
          abort();
    blob_page_list_free(&pl);
    break;
  }
  case 1: {
    struct blob_list bl = {0};
    (void)blob_xml_parse_blob_list(xml, len, &bl, marker, sizeof marker);
    blob_list_free(&bl);
    break;
  }
  default:
    (void)blob_xml_parse_error(xml, len, code, sizeof code, message, sizeof message);
    break;
  }
  return 0;
}
