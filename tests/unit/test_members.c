/* test_members.c - Description: the appliance group's agent records: a sealed record opens with its
 * key and gives the agent back; a changed byte, another key, a record moved to another agent's name
 * and a damaged field are each refused with their reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>
#include <uuid/uuid.h>

#include "members.h"

static const uint8_t key[32] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
                                17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32};
#define AGENT "6f1c1a52-8d0e-4b0f-9a40-3a1f2c9d7e01"
#define NAME "appliance-group/agents/" AGENT ".conf"

static void sealed(char *buf, size_t cap, const char *revoked, const char *pending)
{
  snprintf(buf, cap,
           "version=1\nagent=" AGENT "\nhostname=db01\nregistered=1700000000\nfingerprint=sha256:aa\npending=%s\n"
           "revoked=%s\n",
           pending, revoked);
  assert_int_equal(members_record_seal(key, buf, cap), RPL_OK);
}

static void test_opens(void **state)
{
  (void)state;
  char buf[1024], pending[CATALOG_MAX_FINGERPRINT + 1];
  uuid_t id;
  uuid_parse(AGENT, id);
  struct catalog_agent a;
  sealed(buf, sizeof buf, "1", "sha256:bb");
  assert_int_equal(members_record_agent(key, buf, NAME, id, &a, pending), RPL_OK);
  assert_string_equal(a.hostname, "db01");
  assert_string_equal(a.cert_fingerprint, "sha256:aa");
  assert_string_equal(pending, "sha256:bb");
  assert_true(a.revoked);
  assert_true(a.registered_time == 1700000000);
  assert_memory_equal(a.id, id, 16);
}

static void test_refused(void **state)
{
  (void)state;
  char buf[1024], pending[CATALOG_MAX_FINGERPRINT + 1];
  uuid_t id, other;
  uuid_parse(AGENT, id);
  uuid_generate(other);
  struct catalog_agent a;
  uint8_t wrong[32];
  memcpy(wrong, key, sizeof wrong);
  wrong[0] ^= 1;

  sealed(buf, sizeof buf, "0", "");
  buf[strlen("version=1\nagent=" AGENT "\nhostname=db0")] = '2'; /* someone without the key renames the host */
  assert_int_equal(members_record_agent(key, buf, NAME, id, &a, pending), RPL_E_MEMBERS_SECRET);

  sealed(buf, sizeof buf, "0", "");
  assert_int_equal(members_record_agent(wrong, buf, NAME, id, &a, pending), RPL_E_MEMBERS_SECRET);

  sealed(buf, sizeof buf, "0", ""); /* a valid record, read as another agent's */
  assert_int_equal(members_record_agent(key, buf, NAME, other, &a, pending), RPL_E_MEMBERS_RECORD);

  sealed(buf, sizeof buf, "maybe", "");
  assert_int_equal(members_record_agent(key, buf, NAME, id, &a, pending), RPL_E_MEMBERS_RECORD);

  snprintf(buf, sizeof buf, "version=1\nagent=" AGENT "\n"); /* no mac line at all */
  assert_int_equal(members_record_agent(key, buf, NAME, id, &a, pending), RPL_E_MEMBERS_RECORD);

  sealed(buf, sizeof buf, "0", "");
  strcat(buf, "revoked=0\n"); /* a line after the mac */
  assert_int_equal(members_record_agent(key, buf, NAME, id, &a, pending), RPL_E_MEMBERS_RECORD);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test(test_opens),
    cmocka_unit_test(test_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
