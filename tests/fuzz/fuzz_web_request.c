/* fuzz_web_request.c - Description: libFuzzer target for the configuration manager's request
 * handling (appliance/web.c, web_api.c): routes, login, cookies and sessions, the CSRF check and the
 * URL-encoded forms of every API. A real server (web_start, HTTPS, a catalog and settings in a
 * temporary state directory) runs in this process; each input is sent as it is over a TLS connection
 * (after "@S@" and "@C@" are replaced by a logged-in session's cookie value and CSRF token), and the
 * answer must keep the server's promises: no session without the password, nothing changed by a
 * request without the CSRF token, every answer an HTTP one. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "catalog.h"
#include "file_io.h"
#include "fuzz_socket.h"
#include "identity.h"
#include "rpl_log.h"
#include "settings.h"
#include "state_files.h"
#include "web.h"
#include "../unit/tmpdir.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ANSWER (8u << 20)

static char dir[256], replica[300], password[65], session[65], csrf[65];
static char *conf_copy, *admin_copy; /* the files a request without the CSRF token must not change */
static char *cert, *key;
static struct catalog *cat;
static struct web_server *web;
static SSL_CTX *client_ctx;
static unsigned short port;
static char *answer;

/* ---- what the daemon would provide ------------------------------------------------------------ */

static char schedule_text[SCHEDULE_TEXT_MAX] = SCHEDULE_DEFAULT;

static void status_json(void *ctx, FILE *f)
{
  (void)ctx;
  fputs("{\"disks\":[]}\n", f);
}
static void sample(void *ctx, web_sample_fn fn, void *arg)
{
  (void)ctx;
  (void)fn;
  (void)arg; /* no disks */
}
static rpl_err disk_request(void *ctx, const uint8_t id[PROTO_ID_SIZE], enum web_disk_action act)
{
  (void)ctx;
  (void)id;
  (void)act;
  return RPL_E_NOT_FOUND;
}
static rpl_err disk_unprotect(void *ctx, const uint8_t id[PROTO_ID_SIZE], bool delete_replica)
{
  (void)ctx;
  (void)id;
  (void)delete_replica;
  return RPL_E_NOT_FOUND;
}
static void schedule_get(void *ctx, char *text, size_t size)
{
  (void)ctx;
  snprintf(text, size, "%s", schedule_text);
}
static void schedule_set(void *ctx, const struct point_schedule *s)
{
  (void)ctx;
  schedule_format(s, schedule_text, sizeof schedule_text);
}

/* ---- one exchange over TLS -------------------------------------------------------------------- */

/* Whether a blocking TLS call is to be made again: it was interrupted (libFuzzer's timeout alarm
 * fires every few seconds), not refused. */
static bool interrupted(SSL *ssl, int rc)
{
  int e = SSL_get_error(ssl, rc);
  return (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && errno == EINTR;
}

/* Sends req from the source address 127.0.0.SRC and reads the answer until the server closes:
 * its length. The fuzz inputs come from another address than the harness's own logins, so that
 * their failed logins (rate-limited per address) never lock the harness out. */
static size_t exchange(const char *req, size_t len, int src)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in from = {.sin_family = AF_INET}, to = {.sin_family = AF_INET, .sin_port = htons(port)};
  from.sin_addr.s_addr = htonl(0x7f000000u | (unsigned)src);
  to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  struct timeval tv = {.tv_sec = 8};
  if (fd < 0 || bind(fd, (struct sockaddr *)&from, sizeof from) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0) {
    fprintf(stderr, "fuzz_web_request: cannot make the client socket: %s\n", strerror(errno));
    abort();
  }
  if (fuzz_connect(fd, (struct sockaddr *)&to, sizeof to) != 0)
    abort();
  SSL *ssl = SSL_new(client_ctx);
  if (!ssl || !SSL_set_fd(ssl, fd))
    abort();
  int rc;
  while ((rc = SSL_connect(ssl)) != 1) {
    if (!interrupted(ssl, rc)) {
      fprintf(stderr, "fuzz_web_request: no TLS handshake with the server: %s\n", ERR_error_string(ERR_get_error(), NULL));
      abort(); /* the server takes every connection's handshake, whatever came before */
    }
  }
  size_t off = 0;
  while (off < len) {
    rc = SSL_write(ssl, req + off, (int)(len - off > (1u << 20) ? (1u << 20) : len - off));
    if (rc <= 0 && interrupted(ssl, rc))
      continue;
    if (rc <= 0)
      break; /* it answered and closed early (a body too large): fine */
    off += (size_t)rc;
  }
  /* The end of the request: the server sees the stream end once it has read it all. */
  (void)shutdown(fd, SHUT_WR);
  size_t have = 0;
  while (have < MAX_ANSWER) {
    rc = SSL_read(ssl, answer + have, (int)(MAX_ANSWER - have));
    if (rc <= 0 && interrupted(ssl, rc))
      continue;
    if (rc <= 0 && errno == EAGAIN && SSL_get_error(ssl, rc) == SSL_ERROR_WANT_READ) {
      fprintf(stderr, "fuzz_web_request: the server neither answered nor closed within %ld s\n", (long)tv.tv_sec);
      abort();
    }
    if (rc <= 0)
      break;
    have += (size_t)rc;
  }
  answer[have] = '\0';
  SSL_free(ssl);
  close(fd);
  ERR_clear_error();
  return have;
}

static bool log_in(void)
{
  char req[512];
  int n = snprintf(req, sizeof req,
                   "POST /api/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                   "Content-Length: %zu\r\nConnection: close\r\n\r\npassword=%s",
                   strlen("password=") + strlen(password), password);
  exchange(req, (size_t)n, 1);
  const char *c = strstr(answer, "rpl_session="), *t = strstr(answer, "\"csrf_token\":\"");
  if (!c || !t || strspn(c + 12, "0123456789abcdef") < 64 || strspn(t + 14, "0123456789abcdef") < 64)
    return false;
  memcpy(session, c + 12, 64);
  memcpy(csrf, t + 14, 64);
  session[64] = csrf[64] = '\0';
  return true;
}

/* ---- set-up ----------------------------------------------------------------------------------- */

static char *read_state(const char *name)
{
  char p[400], *text = NULL;
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (file_read_all(p, 1u << 20, &text) != RPL_OK)
    abort();
  return text;
}

static void restore_state(const char *name, const char *text)
{
  char p[400];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  if (file_write_atomic(p, text, strlen(text), 0600) != RPL_OK)
    abort();
}

/* The admin password file as web_auth writes it, at the fewest rounds its reader takes (1000, not
 * 120000): every login an input tries costs a millisecond, not a tenth of a second. */
static void write_cheap_password(void)
{
  uint8_t salt[WEB_AUTH_SALT_SIZE], hash[WEB_AUTH_HASH_SIZE];
  if (RAND_bytes(salt, sizeof salt) != 1 ||
      PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, sizeof salt, 1000, EVP_sha256(), sizeof hash, hash) != 1)
    abort();
  char line[200];
  int n = snprintf(line, sizeof line, "pbkdf2-sha256 1000 ");
  for (size_t i = 0; i < sizeof salt; i++)
    n += snprintf(line + n, sizeof line - (size_t)n, "%02x", salt[i]);
  line[n++] = ' ';
  for (size_t i = 0; i < sizeof hash; i++)
    n += snprintf(line + n, sizeof line - (size_t)n, "%02x", hash[i]);
  line[n++] = '\n';
  line[n] = '\0';
  restore_state(STATE_WEB_ADMIN, line);
}

static void stop_all(void)
{
  web_stop(web);
  catalog_close(cat);
  tmpdir_remove(dir);
}

static unsigned short free_port(void)
{
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t l = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &l) != 0)
    abort();
  close(fd);
  return ntohs(a.sin_port);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
  (void)argc;
  (void)argv;
  log_set_level((enum log_level)(LOG_LVL_ERR - 1));
  const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
  if (tmpdir_create_in(dir, sizeof dir, base, "fuzz-web"))
    abort();
  atexit(stop_all);
  snprintf(replica, sizeof replica, "%s/replica", dir);
  if (mkdir(replica, 0700) != 0)
    abort();
  static struct appliance_settings s;
  settings_defaults(&s);
  snprintf(s.storage, sizeof s.storage, "file:%s", replica);
  uint8_t rnd[32];
  if (RAND_bytes(rnd, sizeof rnd) != 1)
    abort();
  for (size_t i = 0; i < sizeof rnd; i++)
    snprintf(password + 2 * i, 3, "%02x", rnd[i]);
  int created;
  if (settings_save(dir, &s) != RPL_OK || identity_ensure(dir, &cert, &key, &created) != RPL_OK ||
      identity_open_catalog(dir, &cat) != RPL_OK)
    abort();
  write_cheap_password();
  port = free_port();
  char addr[32];
  snprintf(addr, sizeof addr, "127.0.0.1:%u", port);
  struct web_config wc = {.addr = addr, .root = RPL_WEB_SOURCE_DIR, .state_dir = dir, .cert_pem = cert, .key_pem = key, .ca_pem = cert,
                          .cat = cat, .sample_s = 3600,
                          .ops = {.status_json = status_json, .sample = sample, .disk_request = disk_request,
                                  .disk_unprotect = disk_unprotect,
                                  .schedule_get = schedule_get, .schedule_set = schedule_set}};
  if (web_start(&wc, &web) != RPL_OK)
    abort();
  client_ctx = SSL_CTX_new(TLS_client_method());
  answer = malloc(MAX_ANSWER + 1);
  if (!client_ctx || !answer)
    abort();
  SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL); /* our own server's fresh certificate */
  if (!log_in())
    abort();
  conf_copy = read_state(STATE_APPLIANCE_CONF);
  admin_copy = read_state(STATE_WEB_ADMIN);
  return 0;
}

/* ---- one input -------------------------------------------------------------------------------- */

/* Each "@S@" becomes the session cookie value, each "@C@" the CSRF token. */
static char *substitute(const uint8_t *data, size_t size, size_t *len, bool *has_s, bool *has_c)
{
  char *out = malloc(size * 22 + 1);
  if (!out)
    abort();
  size_t o = 0;
  *has_s = *has_c = false;
  for (size_t i = 0; i < size;) {
    if (i + 3 <= size && data[i] == '@' && data[i + 2] == '@' && (data[i + 1] == 'S' || data[i + 1] == 'C')) {
      bool s = data[i + 1] == 'S';
      memcpy(out + o, s ? session : csrf, 64);
      *(s ? has_s : has_c) = true;
      o += 64;
      i += 3;
    } else {
      out[o++] = (char)data[i++];
    }
  }
  out[o] = '\0';
  *len = o;
  return out;
}

/* A 200 answer with a JSON body: only a logged-in request gets one. */
static bool has_json_ok(const char *a, size_t len)
{
  for (const char *p = a; (p = strstr(p, "HTTP/1.")); p++) {
    if ((size_t)(p - a) + 12 > len || strncmp(p + 8, " 200", 4))
      continue;
    const char *end = strstr(p, "\r\n\r\n");
    const char *json = strstr(p, "application/json");
    if (json && (!end || json < end))
      return true;
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size > (64u << 10))
    return 0;
  size_t len;
  bool has_s, has_c;
  char *req = substitute(data, size, &len, &has_s, &has_c);
  size_t got = exchange(req, len, 2);
  if (got && strncmp(answer, "HTTP/1.", 7))
    abort(); /* whatever came, what goes back is HTTP */
  /* Only the password (which no input holds) or the cookie opens a session. */
  if (strstr(answer, "{\"csrf_token\":\"") && !has_s)
    abort();
  if (!has_s && has_json_ok(answer, got))
    abort();
  char *conf = read_state(STATE_APPLIANCE_CONF), *admin = read_state(STATE_WEB_ADMIN);
  bool changed = strcmp(conf, conf_copy) || strcmp(admin, admin_copy);
  if (changed && !(has_s && has_c))
    abort(); /* a state change without the session and its CSRF token */
  /* Put back what an API changed, and a session a logout ended, for the inputs after this one. */
  if (changed) {
    restore_state(STATE_APPLIANCE_CONF, conf_copy);
    restore_state(STATE_WEB_ADMIN, admin_copy);
  }
  if (has_s && strstr(answer, "rpl_session=;") && !log_in())
    abort();
  free(conf);
  free(admin);
  free(req);
  return 0;
}
