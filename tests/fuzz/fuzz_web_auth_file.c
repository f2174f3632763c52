/* fuzz_web_auth_file.c - Description: libFuzzer target for the configuration manager's login-secret
 * files (web-admin.pbkdf2, web-login.pbkdf2): web_auth_parse on the bytes, then the same bytes as the
 * state directory's admin password file, checked by the real loader when its hash is cheap enough
 * to derive within the time budget. A damaged file must be refused cleanly, never let anyone in. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "file_io.h"
#include "rpl_log.h"
#include "state_files.h"
#include "web.h"
#include "../unit/tmpdir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* PBKDF2 at the files' usual 120000 rounds takes a second under the sanitizers: only inputs at most
 * this costly go through the loader (the parse is the same either way). */
#define CHEAP_ITER 4000
#define AUTH_FILE_CAP 512 /* web_auth.c's cap on the file's size */

static char dir[256];

static void remove_all(void)
{
  char p[400];
  snprintf(p, sizeof p, "%s/%s", dir, STATE_WEB_ADMIN);
  (void)unlink(p);
  (void)rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_set_level((enum log_level)(LOG_LVL_ERR - 1));
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  if (tmpdir_create_in(dir, sizeof dir, base, "fuzz-web-auth"))
    abort();
  atexit(remove_all);
  return 0;
}

/* Whether the salt and hash words, read as the parser reads them, are hex digits only. */
static bool hex_fields(const uint8_t *data, size_t size)
{
  char text[600], kind[32], salt[40], hash[72];
  unsigned iter;
  if (size >= sizeof text)
    return false;
  memcpy(text, data, size);
  text[size] = '\0';
  if (sscanf(text, "%31s %u %39s %71s", kind, &iter, salt, hash) != 4)
    return false;
  return strspn(salt, "0123456789abcdefABCDEF") == strlen(salt) && strspn(hash, "0123456789abcdefABCDEF") == strlen(hash);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct web_auth_hash h;
  rpl_err e = web_auth_parse((const char *)data, size, &h);
  if (e != RPL_OK && e != RPL_E_WEB_AUTH_FILE)
    abort();
  if (e == RPL_OK && (h.iter < 1000 || h.iter > 10000000))
    abort();
  if (e == RPL_OK && !hex_fields(data, size))
    abort(); /* a salt or hash taken from something other than hex digits */
  /* The loader reads the file up to its first NUL; beyond the parse, it only derives. */
  size_t text_len = strnlen((const char *)data, size);
  struct web_auth_hash t;
  rpl_err te = web_auth_parse((const char *)data, text_len, &t);
  if (te == RPL_OK && t.iter > CHEAP_ITER)
    return 0;
  char path[400];
  snprintf(path, sizeof path, "%s/%s", dir, STATE_WEB_ADMIN);
  if (file_write_atomic(path, data, size, 0600) != RPL_OK)
    abort();
  bool ok = true;
  rpl_err ce = web_auth_check_password(dir, "correct horse battery", &ok);
  /* Refused exactly when the parse refuses (or the file is over the loader's cap), and never a match
   * for a password whose hash nobody wrote (a 2^-256 chance aside). */
  rpl_err want = size > AUTH_FILE_CAP ? RPL_E_LIMIT : te;
  if (ok || ce != want)
    abort();
  (void)unlink(path);
  return 0;
}
