/* test_connstr.c - Description: connection strings in every standard form (and the environment
 * variable) parse to the right endpoint, style and credential; malformed ones get clear errors
 * that never echo a secret; SAS tokens are validated. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "blob.h"

#define DEVKEY "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

static void test_production_form(void **state)
{
  struct blob_account a;
  assert_int_equal(blob_connstr_parse("DefaultEndpointsProtocol=https;AccountName=acct1;AccountKey=" DEVKEY
                                      ";EndpointSuffix=core.windows.net", &a), RPL_OK);
  assert_string_equal(a.name, "acct1");
  assert_string_equal(a.host, "acct1.blob.core.windows.net");
  assert_int_equal(a.port, 443);
  assert_true(a.https);
  assert_string_equal(a.base_path, "");
  assert_int_equal(a.auth, BLOB_AUTH_SHARED_KEY);
  assert_int_equal(a.key_len, 64);
  /* Defaults: https and core.windows.net; keys are case-insensitive; spaces around parts ignored. */
  assert_int_equal(blob_connstr_parse(" accountname=acct2 ; ACCOUNTKEY=" DEVKEY ";", &a), RPL_OK);
  assert_string_equal(a.endpoint, "https://acct2.blob.core.windows.net:443");
  assert_int_equal(blob_connstr_parse("AccountName=acct3;AccountKey=" DEVKEY ";EndpointSuffix=core.chinacloudapi.cn",
                                      &a), RPL_OK);
  assert_string_equal(a.host, "acct3.blob.core.chinacloudapi.cn");
}

static void test_blob_endpoint_styles(void **state)
{
  struct blob_account a;
  /* A production-style name with a port (tests reach Azurite so): account in the host. */
  assert_int_equal(blob_connstr_parse("DefaultEndpointsProtocol=https;AccountName=devstoreaccount1;AccountKey=" DEVKEY
                                      ";BlobEndpoint=https://devstoreaccount1.blob.core.windows.net:10443/", &a), RPL_OK);
  assert_string_equal(a.host, "devstoreaccount1.blob.core.windows.net");
  assert_int_equal(a.port, 10443);
  assert_string_equal(a.base_path, "");
  /* Emulator path style: the endpoint's path carries the account. */
  assert_int_equal(blob_connstr_parse("AccountName=devstoreaccount1;AccountKey=" DEVKEY
                                      ";BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1", &a), RPL_OK);
  assert_string_equal(a.base_path, "/devstoreaccount1");
  assert_false(a.https);
  /* An IP host without a path gets the account in the path. */
  assert_int_equal(blob_connstr_parse("AccountName=devstoreaccount1;AccountKey=" DEVKEY
                                      ";BlobEndpoint=https://127.0.0.1:10000", &a), RPL_OK);
  assert_string_equal(a.base_path, "/devstoreaccount1");
  assert_string_equal(a.endpoint, "https://127.0.0.1:10000/devstoreaccount1");
  /* BlobEndpoint alone names the account through its host. */
  assert_int_equal(blob_connstr_parse("BlobEndpoint=https://acct9.blob.core.windows.net;SharedAccessSignature=sv=2021-08-06&sp=rw&sig=abc%2Bdef%3D",
                                      &a), RPL_OK);
  assert_string_equal(a.name, "acct9");
  assert_int_equal(a.auth, BLOB_AUTH_SAS);
  assert_string_equal(a.sas, "sv=2021-08-06&sp=rw&sig=abc%2Bdef%3D");
  /* No credential: the managed identity. */
  assert_int_equal(blob_connstr_parse("AccountName=acct4", &a), RPL_OK);
  assert_int_equal(a.auth, BLOB_AUTH_BEARER);
}

static void test_development_storage(void **state)
{
  struct blob_account a;
  assert_int_equal(blob_connstr_parse("UseDevelopmentStorage=true", &a), RPL_OK);
  assert_string_equal(a.name, "devstoreaccount1");
  assert_string_equal(a.endpoint, "http://127.0.0.1:10000/devstoreaccount1");
  assert_string_equal(a.base_path, "/devstoreaccount1");
  assert_int_equal(a.key_len, 64);
  assert_int_equal(blob_connstr_parse("UseDevelopmentStorage=true;DevelopmentStorageProxyUri=http://10.1.2.3", &a), RPL_OK);
  assert_string_equal(a.host, "10.1.2.3");
  assert_int_equal(blob_connstr_parse("UseDevelopmentStorage=false", &a), RPL_E_BLOB_CONNSTR);
}

static void test_env(void **state)
{
  struct blob_account a;
  unsetenv("AZURE_STORAGE_CONNECTION_STRING");
  assert_int_equal(blob_connstr_from_env(&a), RPL_E_NOT_FOUND);
  setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=envacct;AccountKey=" DEVKEY, 1);
  assert_int_equal(blob_connstr_from_env(&a), RPL_OK);
  assert_string_equal(a.name, "envacct");
  unsetenv("AZURE_STORAGE_CONNECTION_STRING");
}

static void expect_bad(const char *text, rpl_err want, const char *phrase)
{
  struct blob_account a;
  rpl_detail_clear();
  rpl_err got = blob_connstr_parse(text, &a);
  const char *why = rpl_detail(got);
  if (got != want || !strstr(why, phrase))
    fail_msg("'%s': got %s '%s', wanted %s containing '%s'", text, rpl_errname(got), why, rpl_errname(want), phrase);
  /* Nothing secret is echoed. */
  assert_null(strstr(why, "c2VjcmV0"));
}

static void test_malformed(void **state)
{
  expect_bad("", RPL_E_BLOB_CONNSTR, "empty");
  expect_bad("AccountName=acct;c2VjcmV0a2V5", RPL_E_BLOB_CONNSTR, "part 2 is not Key=Value");
  expect_bad("AccountName=acct;AccountKey=c2VjcmV0!!", RPL_E_BLOB_CONNSTR, "AccountKey is not a base64 key");
  expect_bad("AccountName=Bad_Name;AccountKey=" DEVKEY, RPL_E_BLOB_CONNSTR, "3-24 lower-case");
  expect_bad("AccountName=acct;AccountName=acct;AccountKey=" DEVKEY, RPL_E_BLOB_CONNSTR, "twice");
  expect_bad("AccountName=acct;Colour=blue", RPL_E_BLOB_CONNSTR, "unknown key 'Colour'");
  expect_bad("AccountKey=" DEVKEY, RPL_E_BLOB_CONNSTR, "needs AccountName");
  expect_bad("AccountName=acct;BlobEndpoint=ftp://x", RPL_E_BLOB_CONNSTR, "https://");
  expect_bad("AccountName=acct;BlobEndpoint=https://host:99999", RPL_E_BLOB_CONNSTR, "port");
  expect_bad("AccountName=acct;BlobEndpoint=https://host/?sv=1", RPL_E_BLOB_CONNSTR, "query");
  expect_bad("DefaultEndpointsProtocol=gopher;AccountName=acct", RPL_E_BLOB_CONNSTR, "DefaultEndpointsProtocol");
  expect_bad("AccountName=acct;AccountKey=" DEVKEY ";SharedAccessSignature=sv=1&sig=x", RPL_E_BLOB_CONNSTR, "not both");
  expect_bad("AccountName=acct;SharedAccessSignature=sp=r&sig=x", RPL_E_BLOB_SAS, "sv=");
  expect_bad("AccountName=acct;SharedAccessSignature=sv=1&sig=a b", RPL_E_BLOB_SAS, "encoded");
}

static void test_sas(void **state)
{
  assert_int_equal(blob_sas_validate("sv=2021-08-06&ss=b&srt=sco&sp=rwdlac&se=2030-01-01T00:00:00Z&st=2020-01-01T00:00:00Z&spr=https&sig=AbC%2F%2B%3D"), RPL_OK);
  assert_int_equal(blob_sas_validate("?sv=1&sig=x"), RPL_E_BLOB_SAS);
  assert_int_equal(blob_sas_validate("sv=1&sig=x%2"), RPL_E_BLOB_SAS);
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_SAS), "escape"));
  assert_int_equal(blob_sas_validate("sv=1&&sig=x"), RPL_E_BLOB_SAS);
  assert_int_equal(blob_sas_validate("sv=1&sig="), RPL_E_BLOB_SAS);
  assert_int_equal(blob_sas_validate("sv=1&sig=x&evil=1"), RPL_E_BLOB_SAS);
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_SAS), "unknown parameter 'evil'"));
  assert_int_equal(blob_sas_validate(""), RPL_E_BLOB_SAS);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_production_form), cmocka_unit_test(test_blob_endpoint_styles),
    cmocka_unit_test(test_development_storage), cmocka_unit_test(test_env),
    cmocka_unit_test(test_malformed), cmocka_unit_test(test_sas),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
