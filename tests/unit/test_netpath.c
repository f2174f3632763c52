/* test_netpath.c - Description: private DNS zone files (hosts format) parse or fail with the line
 * number; names resolve through them with the CNAME chain; addresses are classified private or
 * public and a public one is refused with the host, the address and the fix. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "netpath.h"

static enum netpath_class classify(const char *text)
{
  struct sockaddr_storage ss;
  memset(&ss, 0, sizeof ss);
  if (strchr(text, ':')) {
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
    v6->sin6_family = AF_INET6;
    assert_int_equal(inet_pton(AF_INET6, text, &v6->sin6_addr), 1);
  } else {
    struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
    v4->sin_family = AF_INET;
    assert_int_equal(inet_pton(AF_INET, text, &v4->sin_addr), 1);
  }
  return netpath_classify((struct sockaddr *)&ss);
}

static void test_classify(void **state)
{
  assert_int_equal(classify("10.0.0.1"), NETPATH_RFC1918);
  assert_int_equal(classify("172.16.0.1"), NETPATH_RFC1918);
  assert_int_equal(classify("172.31.255.255"), NETPATH_RFC1918);
  assert_int_equal(classify("172.32.0.1"), NETPATH_PUBLIC);
  assert_int_equal(classify("172.15.255.255"), NETPATH_PUBLIC);
  assert_int_equal(classify("192.168.1.1"), NETPATH_RFC1918);
  assert_int_equal(classify("192.169.0.1"), NETPATH_PUBLIC);
  assert_int_equal(classify("100.64.0.1"), NETPATH_SHARED);
  assert_int_equal(classify("100.127.255.255"), NETPATH_SHARED);
  assert_int_equal(classify("100.128.0.0"), NETPATH_PUBLIC);
  assert_int_equal(classify("127.0.0.1"), NETPATH_LOOPBACK);
  assert_int_equal(classify("20.60.1.2"), NETPATH_PUBLIC);
  assert_int_equal(classify("::1"), NETPATH_LOOPBACK);
  assert_int_equal(classify("fd12:3456::1"), NETPATH_UNIQUE_LOCAL);
  assert_int_equal(classify("fc00::1"), NETPATH_UNIQUE_LOCAL);
  assert_int_equal(classify("fe80::1"), NETPATH_PUBLIC);
  assert_int_equal(classify("2603:1020::1"), NETPATH_PUBLIC);
  assert_int_equal(classify("::ffff:10.1.2.3"), NETPATH_RFC1918);
  assert_int_equal(classify("::ffff:8.8.8.8"), NETPATH_PUBLIC);
}

static void test_zone_resolution(void **state)
{
  const char text[] =
    "# private DNS zone privatelink.blob.core.windows.net, as a hosts file\n"
    "10.1.2.3   acct.privatelink.blob.core.windows.net acct.blob.core.windows.net  # the endpoint\n"
    "\n"
    "127.0.0.1\tdevstoreaccount1.blob.core.windows.net.\n"
    "203.0.113.9 public.blob.core.windows.net\n";
  struct netpath_zone *zone;
  assert_int_equal(netpath_zone_parse(text, strlen(text), &zone), RPL_OK);
  struct netpath_route r;
  assert_int_equal(netpath_resolve("ACCT.blob.core.windows.net", zone, &r), RPL_OK);
  assert_int_equal(r.chain_len, 2);
  assert_string_equal(r.chain[0], "acct.blob.core.windows.net");
  assert_string_equal(r.chain[1], "acct.privatelink.blob.core.windows.net");
  assert_int_equal(r.naddrs, 1);
  assert_string_equal(r.addr_text[0], "10.1.2.3");
  assert_int_equal(netpath_require_private(&r), RPL_OK);
  char line[512];
  netpath_route_format(&r, line, sizeof line);
  assert_string_equal(line, "acct.blob.core.windows.net -> acct.privatelink.blob.core.windows.net -> 10.1.2.3 (private, RFC 1918) [private DNS zone file]");

  assert_int_equal(netpath_resolve("devstoreaccount1.blob.core.windows.net", zone, &r), RPL_OK);
  assert_int_equal(r.classes[0], NETPATH_LOOPBACK);

  assert_int_equal(netpath_resolve("public.blob.core.windows.net", zone, &r), RPL_OK);
  assert_int_equal(netpath_require_private(&r), RPL_E_BLOB_PUBLIC_ADDRESS);
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_PUBLIC_ADDRESS), "public.blob.core.windows.net"));
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_PUBLIC_ADDRESS), "203.0.113.9"));
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_PUBLIC_ADDRESS), "link the private DNS zone"));
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_PUBLIC_ADDRESS), "approve the private endpoint connection"));

  assert_int_equal(netpath_resolve("missing.blob.core.windows.net", zone, &r), RPL_E_BLOB_RESOLVE);
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_RESOLVE), "not in the private DNS zone file"));
  netpath_zone_free(zone);
}

static void expect_bad_zone(const char *text, const char *phrase)
{
  struct netpath_zone *zone = NULL;
  rpl_detail_clear();
  rpl_err err = netpath_zone_parse(text, strlen(text), &zone);
  const char *why = rpl_detail(err);
  if (err != RPL_E_BLOB_ZONE_FILE || !strstr(why, phrase))
    fail_msg("'%s': got %s '%s', wanted '%s'", text, rpl_errname(err), why, phrase);
  assert_null(zone);
}

static void test_zone_errors(void **state)
{
  expect_bad_zone("10.0.0.1 ok.example\n10.0.0.300 bad.example\n", "line 2: '10.0.0.300' is not an IPv4 or IPv6 address");
  expect_bad_zone("10.0.0.1\n", "line 1: an address with no host name");
  expect_bad_zone("10.0.0.1 bad..name\n", "line 1: 'bad..name' is not a valid host name");
  expect_bad_zone("10.0.0.1 bad/name\n", "not a valid host name");
  expect_bad_zone("acct.blob.core.windows.net 10.0.0.1\n", "not an IPv4 or IPv6 address");
  char nul[] = "10.0.0.1 a\0b\n";
  struct netpath_zone *zone = NULL;
  assert_int_equal(netpath_zone_parse(nul, sizeof nul - 1, &zone), RPL_E_BLOB_ZONE_FILE);
  assert_int_equal(netpath_zone_load("/nonexistent/zone", &zone), RPL_E_BLOB_ZONE_FILE);
  assert_non_null(strstr(rpl_detail(RPL_E_BLOB_ZONE_FILE), "cannot open"));
}

static void test_literal_and_system(void **state)
{
  struct netpath_route r;
  assert_int_equal(netpath_resolve("10.9.8.7", NULL, &r), RPL_OK);
  assert_int_equal(r.classes[0], NETPATH_RFC1918);
  /* localhost comes from /etc/hosts through the system resolver. */
  assert_int_equal(netpath_resolve("localhost", NULL, &r), RPL_OK);
  assert_true(r.naddrs >= 1);
  assert_int_equal(r.classes[0], NETPATH_LOOPBACK);
  assert_string_equal(r.source, "system resolver");
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_classify), cmocka_unit_test(test_zone_resolution),
    cmocka_unit_test(test_zone_errors), cmocka_unit_test(test_literal_and_system),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
