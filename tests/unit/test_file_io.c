/* test_file_io.c - Description: capped whole-file reads and atomic replacement keep their promises
 * (content, mode, cap, missing file, no temp file left behind). */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "file_io.h"
#include "tmpdir.h"

static int setup(void **state)
{
  static char dir[PATH_MAX];
  if (tmpdir_create(dir, sizeof dir, "fileio") != 0)
    return -1;
  *state = dir;
  return 0;
}

static int teardown(void **state)
{
  tmpdir_remove(*state);
  return 0;
}

static void test_write_then_read(void **state)
{
  char path[PATH_MAX + 16], tmp[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/conf", (char *)*state);
  assert_int_equal(file_write_atomic(path, "first\n", 6, 0600), RPL_OK);
  assert_int_equal(file_write_atomic(path, "second value\n", 13, 0640), RPL_OK);
  char *text = NULL;
  assert_int_equal(file_read_all(path, 1024, &text), RPL_OK);
  assert_string_equal(text, "second value\n");
  free(text);
  struct stat st;
  assert_int_equal(stat(path, &st), 0);
  assert_int_equal(st.st_mode & 0777, 0640);
  /* A link planted where a fixed temporary name would be is not followed: its target stays. */
  char victim[PATH_MAX + 16];
  snprintf(victim, sizeof victim, "%s/victim", (char *)*state);
  assert_int_equal(file_write_atomic(victim, "keep", 4, 0600), RPL_OK);
  snprintf(tmp, sizeof tmp, "%s.tmp", path);
  assert_int_equal(symlink(victim, tmp), 0);
  assert_int_equal(file_write_atomic(path, "third\n", 6, 0600), RPL_OK);
  assert_int_equal(file_read_all(victim, 1024, &text), RPL_OK);
  assert_string_equal(text, "keep");
  free(text);
  assert_int_equal(unlink(tmp), 0);
  /* and nothing is left behind: the folder holds the two files only */
  DIR *dir = opendir((char *)*state);
  assert_non_null(dir);
  int entries = 0;
  for (struct dirent *e; (e = readdir(dir));)
    entries += strcmp(e->d_name, ".") && strcmp(e->d_name, "..");
  closedir(dir);
  assert_int_equal(entries, 2);
}

static void test_read_cap_and_missing(void **state)
{
  char path[PATH_MAX + 16];
  snprintf(path, sizeof path, "%s/big", (char *)*state);
  char data[100];
  memset(data, 'x', sizeof data);
  assert_int_equal(file_write_atomic(path, data, sizeof data, 0600), RPL_OK);
  char *text = (char *)1;
  assert_int_equal(file_read_all(path, 99, &text), RPL_E_LIMIT);
  assert_null(text);
  assert_int_equal(file_read_all(path, 100, &text), RPL_OK);
  assert_int_equal(strlen(text), 100);
  free(text);
  snprintf(path, sizeof path, "%s/absent", (char *)*state);
  assert_int_equal(file_read_all(path, 100, &text), RPL_E_NOT_FOUND);
  assert_null(text);
}

static void test_write_into_missing_directory(void **state)
{
  char path[PATH_MAX + 32];
  snprintf(path, sizeof path, "%s/no/such/file", (char *)*state);
  assert_int_equal(file_write_atomic(path, "x", 1, 0600), RPL_E_NOT_FOUND);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test_setup_teardown(test_write_then_read, setup, teardown),
    cmocka_unit_test_setup_teardown(test_read_cap_and_missing, setup, teardown),
    cmocka_unit_test_setup_teardown(test_write_into_missing_directory, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
