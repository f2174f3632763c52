/* test_blob_xml.c - Description: storage XML (page lists, blob listings, error bodies) parses by
 * element with expat; malformed, oversized and DTD-bearing documents are refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blob_internal.h"

static void test_page_list(void **state)
{
  const char xml[] =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<PageList>"
    "<PageRange><Start>0</Start><End>511</End></PageRange>"
    "<PageRange><Start>512</Start><End>4095</End></PageRange>"   /* adjacent: merged */
    "<ClearRange><Start>4096</Start><End>8191</End></ClearRange>"
    "<PageRange><Start>1048576</Start><End>5242879</End></PageRange>"
    "<NextMarker>2!104!MDAwMDA=</NextMarker></PageList>";
  struct blob_page_list list = {0};
  char marker[256];
  assert_int_equal(blob_xml_parse_page_list(xml, strlen(xml), &list, marker, sizeof marker), RPL_OK);
  assert_int_equal(list.count, 2);
  assert_int_equal(list.ranges[0].offset, 0);
  assert_int_equal(list.ranges[0].length, 4096);
  assert_int_equal(list.ranges[1].offset, 1048576);
  assert_int_equal(list.ranges[1].length, 4194304);
  assert_string_equal(marker, "2!104!MDAwMDA=");
  blob_page_list_free(&list);

  const char empty[] = "<PageList/>";
  assert_int_equal(blob_xml_parse_page_list(empty, strlen(empty), &list, marker, sizeof marker), RPL_OK);
  assert_int_equal(list.count, 0);
  assert_string_equal(marker, "");
}

static void expect_bad_pagelist(const char *xml, rpl_err want)
{
  struct blob_page_list list = {0};
  char marker[64];
  rpl_err got = blob_xml_parse_page_list(xml, strlen(xml), &list, marker, sizeof marker);
  blob_page_list_free(&list);
  if (got != want)
    fail_msg("'%s': got %s, wanted %s", xml, rpl_errname(got), rpl_errname(want));
}

static void test_page_list_bad(void **state)
{
  expect_bad_pagelist("<PageList><PageRange><Start>0</Start></PageRange></PageList>", RPL_E_BLOB_XML);
  expect_bad_pagelist("<PageList><PageRange><Start>1</Start><End>511</End></PageRange></PageList>", RPL_E_BLOB_XML);
  expect_bad_pagelist("<PageList><PageRange><Start>512</Start><End>511</End></PageRange></PageList>", RPL_E_BLOB_XML);
  expect_bad_pagelist("<PageList><PageRange><Start>-0</Start><End>511</End></PageRange></PageList>", RPL_E_BLOB_XML);
  expect_bad_pagelist("<PageList><PageRange><Start>0</Start><End>99999999999999999999999</End></PageRange></PageList>", RPL_E_BLOB_XML);
  expect_bad_pagelist("<PageList><PageRange>", RPL_E_BLOB_XML);
  expect_bad_pagelist("<html><body>proxy error</body></html>", RPL_E_BLOB_XML);
  expect_bad_pagelist("<!DOCTYPE l [<!ENTITY a \"aaaa\">]><PageList>&a;</PageList>", RPL_E_BLOB_XML);
  /* A marker longer than the caller's buffer is an error, not a silent truncation. */
  char big[6000] = "<PageList><NextMarker>";
  memset(big + strlen(big), 'm', 3000);
  strcpy(big + strlen("<PageList><NextMarker>") + 3000, "</NextMarker></PageList>");
  expect_bad_pagelist(big, RPL_E_BLOB_TOO_LARGE);
}

static void test_blob_list(void **state)
{
  const char xml[] =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>"
    "<EnumerationResults ServiceEndpoint=\"https://a.blob.core.windows.net/\" ContainerName=\"c\">"
    "<Prefix>disk</Prefix><Blobs>"
    "<Blob><Name>disk-1.vhd</Name><Properties><Content-Length>1048576</Content-Length>"
    "<BlobType>PageBlob</BlobType><x-ms-blob-sequence-number>7</x-ms-blob-sequence-number>"
    "<LeaseState>leased</LeaseState></Properties><Metadata/></Blob>"
    "<Blob><Name>disk &amp; 2</Name><Properties><Content-Length>512</Content-Length>"
    "<BlobType>PageBlob</BlobType></Properties></Blob>"
    "</Blobs><NextMarker>next1</NextMarker></EnumerationResults>";
  struct blob_list list = {0};
  char marker[64];
  assert_int_equal(blob_xml_parse_blob_list(xml, strlen(xml), &list, marker, sizeof marker), RPL_OK);
  assert_int_equal(list.count, 2);
  assert_string_equal(list.items[0].name, "disk-1.vhd");
  assert_int_equal(list.items[0].content_length, 1048576);
  assert_int_equal(list.items[0].sequence_number, 7);
  assert_string_equal(list.items[0].blob_type, "PageBlob");
  assert_string_equal(list.items[0].lease_state, "leased");
  assert_string_equal(list.items[1].name, "disk & 2");
  assert_int_equal(list.items[1].sequence_number, -1);
  assert_string_equal(marker, "next1");
  blob_list_free(&list);
  const char nameless[] = "<EnumerationResults><Blobs><Blob><Properties/></Blob></Blobs></EnumerationResults>";
  assert_int_equal(blob_xml_parse_blob_list(nameless, strlen(nameless), &list, marker, sizeof marker), RPL_E_BLOB_XML);
  blob_list_free(&list);
}

/* List Blobs with include=snapshots,metadata: snapshot ids and metadata lines, base blob too. */
static void test_snapshot_list(void **state)
{
  (void)state;
  const char *xml =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ServiceEndpoint=\"x\" ContainerName=\"c\">"
    "<Blobs><Blob><Name>d.vhd</Name><Snapshot>2026-11-29T06:00:00.1234567Z</Snapshot>"
    "<Properties><BlobType>PageBlob</BlobType><x-ms-blob-sequence-number>7</x-ms-blob-sequence-number></Properties>"
    "<Metadata><rplcycle>7</rplcycle><rpltime>1790000000</rpltime></Metadata></Blob>"
    "<Blob><Name>d.vhd</Name><Properties><BlobType>PageBlob</BlobType><LeaseState>leased</LeaseState>"
    "<x-ms-blob-sequence-number>9</x-ms-blob-sequence-number></Properties><Metadata /></Blob>"
    "</Blobs><NextMarker /></EnumerationResults>";
  struct blob_list list = {0};
  char marker[64] = "";
  assert_int_equal(blob_xml_parse_blob_list(xml, strlen(xml), &list, marker, sizeof marker), RPL_OK);
  assert_int_equal(list.count, 2);
  assert_string_equal(list.items[0].snapshot, "2026-11-29T06:00:00.1234567Z");
  assert_string_equal(list.items[0].metadata, "rplcycle=7\nrpltime=1790000000\n");
  assert_int_equal(list.items[0].sequence_number, 7);
  assert_string_equal(list.items[1].snapshot, "");
  assert_string_equal(list.items[1].metadata, "");
  assert_string_equal(list.items[1].lease_state, "leased");
  blob_list_free(&list);
}

static void test_error_body(void **state)
{
  const char xml[] =
    "\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>SequenceNumberConditionNotMet</Code>"
    "<Message>The sequence number condition specified was not met.\nRequestId:1234\nTime:2024</Message></Error>";
  char code[64], msg[256];
  assert_int_equal(blob_xml_parse_error(xml, strlen(xml), code, sizeof code, msg, sizeof msg), RPL_OK);
  assert_string_equal(code, "SequenceNumberConditionNotMet");
  assert_string_equal(msg, "The sequence number condition specified was not met.");
  assert_int_equal(blob_xml_parse_error("<Error><Code>x", 14, code, sizeof code, msg, sizeof msg), RPL_E_BLOB_XML);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_page_list), cmocka_unit_test(test_page_list_bad),
    cmocka_unit_test(test_blob_list), cmocka_unit_test(test_error_body), cmocka_unit_test(test_snapshot_list),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
