/* test_blob_token.c - Description: managed-identity token responses (IMDS form) parse strictly:
 * access_token and expiry as strings or numbers, escapes decoded; malformed JSON, nested values,
 * missing fields and expired tokens are refused with a clear reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "blob_internal.h"

static void test_imds_response(void **state)
{
  const char json[] =
    "{\"access_token\":\"eyJ0eXAi.eyJhdWQi.c2ln\",\"client_id\":\"1234\",\"expires_in\":\"86399\","
    "\"expires_on\":\"2000003600\",\"ext_expires_in\":\"86399\",\"not_before\":\"1999999999\","
    "\"resource\":\"https:\\/\\/storage.azure.com\\/\",\"token_type\":\"Bearer\"}";
  struct blob_token t;
  assert_int_equal(blob_token_parse(json, strlen(json), 2000000000, &t), RPL_OK);
  assert_string_equal(t.access_token, "eyJ0eXAi.eyJhdWQi.c2ln");
  assert_int_equal(t.expires_on, 2000003600);
  /* Numbers instead of strings, only expires_in, white space, unicode escapes elsewhere. */
  const char json2[] = " { \"token_type\" : \"bearer\", \"note\": \"\\u00e9\\ud83d\\ude00\", \"n\": -1.5e3, \"b\": true, \"z\": null,"
                       " \"expires_in\" : 3600 , \"access_token\" : \"abc\" } ";
  assert_int_equal(blob_token_parse(json2, strlen(json2), 1000, &t), RPL_OK);
  assert_int_equal(t.expires_on, 4600);
}

static void expect_bad(const char *json, const char *phrase)
{
  struct blob_token t;
  rpl_detail_clear();
  rpl_err err = blob_token_parse(json, strlen(json), 2000000000, &t);
  const char *why = rpl_detail(err);
  if (err != RPL_E_BLOB_TOKEN || !strstr(why, phrase))
    fail_msg("'%s': got %s '%s', wanted '%s'", json, rpl_errname(err), why, phrase);
}

static void test_bad_tokens(void **state)
{
  expect_bad("", "not a JSON object");
  expect_bad("[1]", "not a JSON object");
  expect_bad("{\"access_token\":\"a\"}", "neither expires_on nor expires_in");
  expect_bad("{\"expires_in\":\"5\"}", "no access_token");
  expect_bad("{\"access_token\":\"a\",\"expires_in\":\"5\"", "expected ',' or '}'");
  expect_bad("{\"access_token\":\"a\",\"expires_in\":\"5\"} x", "trailing bytes");
  expect_bad("{\"access_token\":{\"x\":1},\"expires_in\":\"5\"}", "nested");
  expect_bad("{\"access_token\":\"a b\",\"expires_in\":\"5\"}", "not allowed in a header");
  expect_bad("{\"access_token\":\"a\",\"expires_on\":\"soon\"}", "expires_on is not epoch seconds");
  expect_bad("{\"access_token\":\"a\",\"expires_on\":\"1\"}", "already expired");
  expect_bad("{\"access_token\":\"a\",\"expires_in\":5,\"token_type\":\"MAC\"}", "token_type");
  expect_bad("{\"access_token\":\"a\\x\",\"expires_in\":5}", "bad value");
  expect_bad("{\"access_token\":\"\\ud800\",\"expires_in\":5}", "bad value");
  expect_bad("{\"access_token\":\"a\",\"expires_in\":01}", "expected ',' or '}'");
  expect_bad("{\"access_token\":\"a\",\"access_token\":\"b\",\"expires_in\":1}", "twice");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_imds_response),
    cmocka_unit_test(test_bad_tokens),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
