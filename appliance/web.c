/* web.c - the configuration manager: HTTPS (libmicrohttpd, the appliance's certificate) serving the
 * static page and the JSON API under /api/ (login with session cookie and CSRF token, status, checks,
 * proxy settings, registration, agents, disk actions, recovery points, the last hour's series). */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "channel.h"
#include "check.h"
#include "conn.h"
#include "identity.h"
#include "json_out.h"
#include "rpl_log.h"
#include "settings.h"
#include "web.h"

#define MAX_SESSIONS      16
#define SESSION_IDLE_S    (30 * 60)
#define SESSION_MAX_S     (12 * 60 * 60)
#define MAX_CLIENTS       64        /* login rate limiter entries */
#define LOGIN_FAILS       5         /* failures per client ... */
#define LOGIN_WINDOW_S    60        /* ... per window, then 429 */
#define MAX_BODY          (16u << 10)
#define MAX_FIELDS        8
#define MAX_FIELD         2048
#define MAX_REPLY         (4u << 20)
#define MAX_ASSET         (1u << 20)
#define MAX_SERIES_DISKS  64
#define MAX_SERIES_LEN    720
#define MAX_LIST_DISKS    1024
#define COOKIE_NAME       "rpl_session"

struct session {
  bool used;
  char id[65];
  char csrf[65];
  time_t created, seen;
};

struct client {
  char addr[64];
  time_t window_start;
  unsigned failures;
};

struct sample {
  int64_t t;
  uint64_t lag, backlog, churn; /* churn: bytes per second over the last interval */
};

struct series {
  uint8_t id[PROTO_ID_SIZE];
  bool used;
  uint64_t last_raw;
  bool have_raw;
  unsigned head, count;
  struct sample s[MAX_SERIES_LEN];
};

struct asset {
  const char *name, *type;
  char *data;
  size_t len;
};

struct web_server {
  struct web_config cfg;
  char state_dir[4096];
  char *cert, *key;
  struct MHD_Daemon *mhd;
  pthread_mutex_t lock;           /* sessions, clients, series */
  struct session sessions[MAX_SESSIONS];
  struct client clients[MAX_CLIENTS];
  struct series *series;          /* MAX_SERIES_DISKS */
  unsigned series_len;
  pthread_mutex_t check_lock;     /* one check at a time; the cached result */
  char *check_doc;
  int64_t check_time;
  pthread_mutex_t settings_lock;  /* appliance.conf read-modify-write */
  struct asset assets[3];
  pthread_t sampler;
  bool sampler_started;
  pthread_mutex_t stop_lock;
  pthread_cond_t stop_cond;
  bool stopping;
};

/* ---- replies ------------------------------------------------------------------------------ */

struct req {
  bool is_post, is_form;
  struct MHD_PostProcessor *pp;
  size_t body;
  bool too_large, bad_field;
  char bad_name[64];
  size_t nfields;
  struct {
    char name[32];
    char value[MAX_FIELD + 1];
    size_t len;
  } fields[MAX_FIELDS];
};

static void add_common_headers(struct MHD_Response *r)
{
  MHD_add_response_header(r, "Cache-Control", "no-store");
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "X-Frame-Options", "DENY");
  MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
  MHD_add_response_header(r, "Strict-Transport-Security", "max-age=31536000");
  MHD_add_response_header(r, "Content-Security-Policy",
                          "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                          "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'");
}

static enum MHD_Result send_buf(struct MHD_Connection *c, unsigned status, const char *type, const char *buf,
                                size_t len, const char *cookie)
{
  struct MHD_Response *r = MHD_create_response_from_buffer(len, (void *)buf, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO;
  add_common_headers(r);
  MHD_add_response_header(r, "Content-Type", type);
  if (cookie)
    MHD_add_response_header(r, "Set-Cookie", cookie);
  enum MHD_Result ret = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return ret;
}

/* A JSON document under construction (open_memstream; capped at MAX_REPLY when sent). */
struct doc {
  char *buf;
  size_t len;
  FILE *f;
  struct json_out j;
};

static bool doc_open(struct doc *d)
{
  memset(d, 0, sizeof *d);
  d->f = open_memstream(&d->buf, &d->len);
  if (!d->f)
    return false;
  json_init(&d->j, d->f);
  return true;
}

static enum MHD_Result doc_send(struct MHD_Connection *c, struct doc *d, unsigned status, const char *cookie)
{
  bool ok = json_finish(&d->j);
  fclose(d->f);
  enum MHD_Result ret;
  if (!ok || d->len > MAX_REPLY) {
    static const char msg[] = "{\"error\":\"the reply could not be built (too large or malformed); see the appliance log\"}\n";
    ret = send_buf(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json", msg, sizeof msg - 1, NULL);
  } else {
    ret = send_buf(c, status, "application/json", d->buf, d->len, cookie);
  }
  free(d->buf);
  return ret;
}

static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static enum MHD_Result reply_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct doc d;
  if (!doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "error", msg);
  json_object_end(&d.j);
  return doc_send(c, &d, status, NULL);
}

static enum MHD_Result reply_ok(struct MHD_Connection *c, const char *message)
{
  struct doc d;
  if (!doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_bool(&d.j, "ok", true);
  json_string(&d.j, "message", message);
  json_object_end(&d.j);
  return doc_send(c, &d, MHD_HTTP_OK, NULL);
}

/* ---- form fields (MHD's post processor; URL-encoded bodies) ------------------------------- */

static enum MHD_Result on_field(void *cls, enum MHD_ValueKind kind, const char *key, const char *filename,
                                const char *content_type, const char *transfer_encoding, const char *data,
                                uint64_t off, size_t size)
{
  struct req *q = cls;
  size_t i;
  for (i = 0; i < q->nfields; i++)
    if (!strcmp(q->fields[i].name, key))
      break;
  if (i == q->nfields) {
    if (q->nfields == MAX_FIELDS || strlen(key) >= sizeof q->fields[0].name) {
      q->bad_field = true;
      snprintf(q->bad_name, sizeof q->bad_name, "%.60s", key);
      return MHD_YES;
    }
    snprintf(q->fields[i].name, sizeof q->fields[i].name, "%s", key);
    q->nfields++;
  }
  if (off != q->fields[i].len || q->fields[i].len + size > MAX_FIELD) {
    q->bad_field = true;
    snprintf(q->bad_name, sizeof q->bad_name, "%.60s", key);
    return MHD_YES;
  }
  memcpy(q->fields[i].value + q->fields[i].len, data, size);
  q->fields[i].len += size;
  q->fields[i].value[q->fields[i].len] = 0;
  return MHD_YES;
}

static const char *field(const struct req *q, const char *name)
{
  for (size_t i = 0; i < q->nfields; i++)
    if (!strcmp(q->fields[i].name, name))
      return q->fields[i].value;
  return NULL;
}

/* The name of a field not in allowed (NULL-terminated), or NULL. */
static const char *unknown_field(const struct req *q, const char *const *allowed)
{
  for (size_t i = 0; i < q->nfields; i++) {
    bool ok = false;
    for (size_t k = 0; allowed[k] && !ok; k++)
      ok = !strcmp(allowed[k], q->fields[i].name);
    if (!ok)
      return q->fields[i].name;
  }
  return NULL;
}

static bool printable(const char *s)
{
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if (*p < 0x20 || *p == 0x7f)
      return false;
  return true;
}

/* ---- sessions, CSRF and the login rate limit ---------------------------------------------- */

static bool random_hex(char out[65])
{
  uint8_t b[32];
  if (RAND_bytes(b, sizeof b) != 1)
    return false;
  for (int i = 0; i < 32; i++)
    sprintf(out + 2 * i, "%02x", b[i]);
  OPENSSL_cleanse(b, sizeof b);
  return true;
}

static void client_addr(struct MHD_Connection *c, char *out, size_t outsz)
{
  const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  snprintf(out, outsz, "?");
  if (!ci || !ci->client_addr)
    return;
  const struct sockaddr *sa = ci->client_addr;
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, out, (socklen_t)outsz);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, out, (socklen_t)outsz);
}

/* The session of the request's cookie (copied to *out), under no lock on return. */
static bool session_of(struct web_server *w, struct MHD_Connection *c, struct session *out)
{
  const char *id = MHD_lookup_connection_value(c, MHD_COOKIE_KIND, COOKIE_NAME);
  if (!id || strlen(id) != 64)
    return false;
  bool found = false;
  time_t now = time(NULL);
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < MAX_SESSIONS && !found; i++) {
    struct session *s = &w->sessions[i];
    if (!s->used || CRYPTO_memcmp(s->id, id, 64) != 0)
      continue;
    if (now - s->seen > SESSION_IDLE_S || now - s->created > SESSION_MAX_S) {
      s->used = false;
      break;
    }
    s->seen = now;
    *out = *s;
    found = true;
  }
  pthread_mutex_unlock(&w->lock);
  return found;
}

static bool session_new(struct web_server *w, struct session *out)
{
  struct session s = {.used = true};
  if (!random_hex(s.id) || !random_hex(s.csrf))
    return false;
  s.created = s.seen = time(NULL);
  pthread_mutex_lock(&w->lock);
  size_t pick = 0;
  for (size_t i = 0; i < MAX_SESSIONS; i++) {
    if (!w->sessions[i].used) {
      pick = i;
      break;
    }
    if (w->sessions[i].seen < w->sessions[pick].seen)
      pick = i; /* full: the least recently seen session ends */
  }
  w->sessions[pick] = s;
  pthread_mutex_unlock(&w->lock);
  *out = s;
  return true;
}

static void session_end(struct web_server *w, const char *id)
{
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < MAX_SESSIONS; i++)
    if (w->sessions[i].used && !strcmp(w->sessions[i].id, id))
      w->sessions[i].used = false;
  pthread_mutex_unlock(&w->lock);
}

/* Seconds the client must still wait before another login try, or 0. */
static long login_blocked(struct web_server *w, const char *addr)
{
  long wait = 0;
  time_t now = time(NULL);
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < MAX_CLIENTS; i++) {
    struct client *cl = &w->clients[i];
    if (strcmp(cl->addr, addr))
      continue;
    if (cl->failures >= LOGIN_FAILS && now - cl->window_start < LOGIN_WINDOW_S)
      wait = LOGIN_WINDOW_S - (long)(now - cl->window_start);
    break;
  }
  pthread_mutex_unlock(&w->lock);
  return wait;
}

static void login_result(struct web_server *w, const char *addr, bool ok)
{
  time_t now = time(NULL);
  pthread_mutex_lock(&w->lock);
  struct client *cl = NULL, *oldest = &w->clients[0];
  for (size_t i = 0; i < MAX_CLIENTS && !cl; i++) {
    if (!strcmp(w->clients[i].addr, addr))
      cl = &w->clients[i];
    else if (w->clients[i].window_start < oldest->window_start)
      oldest = &w->clients[i];
  }
  if (!cl && !ok) {
    cl = oldest;
    memset(cl, 0, sizeof *cl);
    snprintf(cl->addr, sizeof cl->addr, "%s", addr);
  }
  if (cl) {
    if (ok) {
      memset(cl, 0, sizeof *cl);
    } else {
      if (now - cl->window_start >= LOGIN_WINDOW_S) {
        cl->window_start = now;
        cl->failures = 0;
      }
      cl->failures++;
    }
  }
  pthread_mutex_unlock(&w->lock);
}


/* The session document of the login answer and of GET /api/session: what the page needs to send
 * state-changing requests (the CSRF token) and whether a password has been set. */
static enum MHD_Result send_session(struct web_server *w, struct MHD_Connection *c, const struct session *s,
                                    const char *set_cookie)
{
  struct doc d;
  if (!doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "csrf_token", s->csrf);
  json_bool(&d.j, "password_set", web_auth_has_password(w->state_dir));
  json_object_end(&d.j);
  return doc_send(c, &d, MHD_HTTP_OK, set_cookie);
}
static enum MHD_Result api_login(struct web_server *w, struct MHD_Connection *c, const struct req *q)
{
  char addr[64];
  client_addr(c, addr, sizeof addr);
  long wait = login_blocked(w, addr);
  if (wait > 0)
    return reply_error(c, 429, "too many failed logins from %s: try again in %ld s", addr, wait);
  static const char *const allowed[] = {"password", "token", NULL};
  const char *bad = unknown_field(q, allowed);
  const char *password = field(q, "password"), *token = field(q, "token");
  if (bad)
    return reply_error(c, MHD_HTTP_BAD_REQUEST, "unknown field '%s': send password (or the one-time token)", bad);
  if (!password == !token)
    return reply_error(c, MHD_HTTP_BAD_REQUEST, "send either password or token");
  bool ok = false;
  rpl_err err = password ? web_auth_check_password(w->state_dir, password, &ok) : web_auth_use_token(w->state_dir, token, &ok);
  if (err)
    return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", rpl_strerror(err));
  login_result(w, addr, ok);
  if (!ok) {
    log_warn("web: failed login from %s", addr);
    return reply_error(c, MHD_HTTP_UNAUTHORIZED, "%s",
                       password ? "wrong password" : "this login link is not valid (used already, or replaced by a newer init)");
  }
  struct session s;
  if (!session_new(w, &s))
    return reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "no randomness for a session");
  log_notice("web: admin logged in from %s", addr);
  char cookie[160];
  snprintf(cookie, sizeof cookie, COOKIE_NAME "=%s; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=%d", s.id,
           SESSION_MAX_S);
  enum MHD_Result r = send_session(w, c, &s, cookie);
  OPENSSL_cleanse(&s, sizeof s);
  return r;
}

/* ---- API: status, checks, proxy ----------------------------------------------------------- */

static enum MHD_Result api_status(struct web_server *w, struct MHD_Connection *c)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return MHD_NO;
  w->cfg.ops.status_json(w->cfg.ops.ctx, f);
  fclose(f);
  enum MHD_Result r = len > MAX_REPLY ? reply_error(c, 500, "status too large")
                                      : send_buf(c, MHD_HTTP_OK, "application/json", buf, len, NULL);
  free(buf);
  return r;
}

/* Runs the checks now (one at a time) and caches the document. */
static void run_check(struct web_server *w)
{
  struct appliance_settings *s = malloc(sizeof *s);
  char why[1024];
  char *buf = NULL;
  size_t len = 0, failed = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!s || !f) {
    if (f)
      fclose(f);
    free(buf);
    free(s);
    return;
  }
  pthread_mutex_lock(&w->settings_lock);
  rpl_err err = settings_load(w->state_dir, s, why, sizeof why);
  pthread_mutex_unlock(&w->settings_lock);
  if (err) {
    struct json_out j;
    json_init(&j, f);
    json_object_begin(&j, NULL);
    json_string(&j, "error", why);
    json_object_end(&j);
    rpl_err e = json_finish(&j) ? RPL_OK : RPL_E_IO;
    (void)e;
  } else {
    check_write_json(w->state_dir, s, f, &failed);
  }
  OPENSSL_cleanse(s, sizeof *s);
  free(s);
  fclose(f);
  free(w->check_doc);
  w->check_doc = buf;
  w->check_time = time(NULL);
}

/* The check document (run now when asked, or when none ran yet), wrapped with its time. */
static enum MHD_Result api_check(struct web_server *w, struct MHD_Connection *c, bool rerun)
{
  pthread_mutex_lock(&w->check_lock);
  if (rerun || !w->check_doc)
    run_check(w);
  char *copy = NULL;
  size_t len = 0;
  if (w->check_doc) {
    len = strlen(w->check_doc);
    while (len && w->check_doc[len - 1] == '\n')
      len--;
    if (asprintf(&copy, "{\"checked_unix\":%" PRId64 ",\"report\":%.*s}\n", w->check_time, (int)len, w->check_doc) < 0)
      copy = NULL;
  }
  pthread_mutex_unlock(&w->check_lock);
  if (!copy)
    return reply_error(c, 500, "the checks could not run (out of memory)");
  enum MHD_Result r = send_buf(c, MHD_HTTP_OK, "application/json", copy, strlen(copy), NULL);
  free(copy);
  return r;
}

/* Splits "http://[USER[:PASS]@]HOST:PORT" into its address (without credentials), user and
 * whether a password is set. */
static void proxy_parts(const char *proxy, char *addr, size_t addrsz, char *user, size_t usersz, bool *has_password)
{
  *has_password = false;
  addr[0] = user[0] = 0;
  if (!proxy[0])
    return;
  const char *rest = strstr(proxy, "://");
  rest = rest ? rest + 3 : proxy;
  const char *at = strrchr(rest, '@');
  if (at) {
    const char *colon = memchr(rest, ':', (size_t)(at - rest));
    size_t ulen = (size_t)((colon ? colon : at) - rest);
    snprintf(user, usersz, "%.*s", (int)ulen, rest);
    *has_password = colon && colon + 1 < at;
    rest = at + 1;
  }
  snprintf(addr, addrsz, "http://%s", rest);
}

static enum MHD_Result api_proxy_get(struct web_server *w, struct MHD_Connection *c)
{
  struct appliance_settings *s = malloc(sizeof *s);
  char why[1024];
  if (!s)
    return MHD_NO;
  pthread_mutex_lock(&w->settings_lock);
  rpl_err err = settings_load(w->state_dir, s, why, sizeof why);
  pthread_mutex_unlock(&w->settings_lock);
  if (err) {
    free(s);
    return reply_error(c, 500, "%s", why);
  }
  char addr[1100], user[1100];
  bool has_pw;
  proxy_parts(s->proxy, addr, sizeof addr, user, sizeof user, &has_pw);
  struct doc d;
  if (!doc_open(&d)) {
    free(s);
    return MHD_NO;
  }
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "address", addr);
  json_string(&d.j, "user", user);
  json_bool(&d.j, "password_set", has_pw);
  json_string(&d.j, "bypass", s->proxy_bypass);
  json_bool(&d.j, "applies_to_running_uploads", false);
  json_object_end(&d.j);
  OPENSSL_cleanse(s, sizeof *s);
  free(s);
  return doc_send(c, &d, MHD_HTTP_OK, NULL);
}

/* "http://HOST:PORT" with HOST a name, an IPv4 address or [IPv6], PORT 1-65535, nothing else. */
static bool valid_proxy_address(const char *a)
{
  if (strncmp(a, "http://", 7))
    return false;
  const char *h = a + 7, *colon;
  if (*h == '[') {
    const char *end = strchr(h, ']');
    if (!end || end == h + 1 || end[1] != ':')
      return false;
    for (const char *p = h + 1; p < end; p++)
      if (!strchr("0123456789abcdefABCDEF:.", *p))
        return false;
    colon = end + 1;
  } else {
    colon = strchr(h, ':');
    if (!colon || colon == h)
      return false;
    for (const char *p = h; p < colon; p++)
      if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '.' || *p == '-'))
        return false;
  }
  char *end;
  errno = 0;
  long port = strtol(colon + 1, &end, 10);
  if (end == colon + 1 || errno || port < 1 || port > 65535)
    return false;
  return *end == 0 || (end[0] == '/' && end[1] == 0);
}

static bool valid_bypass(const char *b)
{
  for (const char *p = b; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr(".,*-_:[]/ ", *p)))
      return false;
  return true;
}

/* Percent-encodes everything but RFC 3986's unreserved characters (for the proxy URL's userinfo). */
static void pct_encode(const char *in, char *out, size_t outsz)
{
  size_t o = 0;
  for (const unsigned char *p = (const unsigned char *)in; *p && o + 4 < outsz; p++) {
    if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-._~", *p))
      out[o++] = (char)*p;
    else
      o += (size_t)snprintf(out + o, outsz - o, "%%%02X", *p);
  }
  out[o] = 0;
}

static enum MHD_Result api_proxy_post(struct web_server *w, struct MHD_Connection *c, const struct req *q)
{
  static const char *const allowed[] = {"address", "user", "password", "clear_password", "bypass", NULL};
  const char *bad = unknown_field(q, allowed);
  if (bad)
    return reply_error(c, 400, "unknown field '%s': the proxy form has address, user, password, clear_password and bypass", bad);
  const char *addr = field(q, "address"), *user = field(q, "user"), *pw = field(q, "password");
  const char *clear = field(q, "clear_password"), *bypass = field(q, "bypass");
  if (!addr)
    return reply_error(c, 400, "address is required: http://HOST:PORT, or empty for no proxy");
  if (addr[0] && strchr(addr, '@'))
    return reply_error(c, 400, "the address must not hold credentials: put the user and password in their own fields");
  if (addr[0] && !valid_proxy_address(addr))
    return reply_error(c, 400, "address '%.200s' is not http://HOST:PORT (an HTTP proxy; port 1-65535)", printable(addr) ? addr : "?");
  if (user && (!printable(user) || strlen(user) > 128 || strchr(user, ':')))
    return reply_error(c, 400, "user must be at most 128 printable characters without ':'");
  if (pw && (!printable(pw) || strlen(pw) > 256))
    return reply_error(c, 400, "password must be at most 256 printable characters");
  if (clear && strcmp(clear, "0") && strcmp(clear, "1"))
    return reply_error(c, 400, "clear_password is 0 or 1");
  if (bypass && (strlen(bypass) > 1000 || !valid_bypass(bypass)))
    return reply_error(c, 400, "bypass is a comma-separated list of host names, .domains, addresses or NET/BITS networks (letters, digits, . - _ * : [ ] /)");
  if (pw && pw[0] && (!user || !user[0]))
    return reply_error(c, 400, "a password needs a user");

  struct appliance_settings *s = malloc(sizeof *s);
  if (!s)
    return MHD_NO;
  char why[1024];
  pthread_mutex_lock(&w->settings_lock);
  rpl_err err = settings_load(w->state_dir, s, why, sizeof why);
  if (!err) {
    char old_addr[1100], old_user[1100];
    bool old_pw;
    proxy_parts(s->proxy, old_addr, sizeof old_addr, old_user, sizeof old_user, &old_pw);
    /* The stored password stays unless a new one is given or it is cleared (it is never sent to the page). */
    char userinfo[1200] = "", eu[400], ep[800];
    const char *rest = strstr(s->proxy, "://");
    const char *at = rest ? strrchr(rest, '@') : NULL;
    const char *old_colon = at ? memchr(rest + 3, ':', (size_t)(at - rest - 3)) : NULL;
    const char *new_user = user ? user : old_user;
    if (addr[0] && new_user[0]) {
      pct_encode(new_user, eu, sizeof eu);
      if (user && strcmp(user, old_user)) /* user given and changed: encoded now */
        snprintf(userinfo, sizeof userinfo, "%s", eu);
      else
        snprintf(userinfo, sizeof userinfo, "%s", old_user[0] ? old_user : eu); /* as stored */
      if (pw && pw[0]) {
        pct_encode(pw, ep, sizeof ep);
        size_t n = strlen(userinfo);
        snprintf(userinfo + n, sizeof userinfo - n, ":%s", ep);
        OPENSSL_cleanse(ep, sizeof ep);
      } else if (old_colon && !(clear && !strcmp(clear, "1"))) {
        size_t n = strlen(userinfo);
        snprintf(userinfo + n, sizeof userinfo - n, ":%.*s", (int)(at - old_colon - 1), old_colon + 1);
      }
    }
    char proxy[sizeof s->proxy + 1];
    int n = addr[0] ? snprintf(proxy, sizeof proxy, "http://%s%s%s", userinfo, userinfo[0] ? "@" : "", addr + 7)
                    : snprintf(proxy, sizeof proxy, "%s", "");
    OPENSSL_cleanse(userinfo, sizeof userinfo);
    if (n < 0 || (size_t)n >= sizeof s->proxy) {
      snprintf(why, sizeof why, "the proxy URL is too long");
      err = RPL_E_INVALID_ARGUMENT;
    } else {
      size_t plen = strlen(proxy);
      if (plen && proxy[plen - 1] == '/')
        proxy[plen - 1] = 0;
      snprintf(s->proxy, sizeof s->proxy, "%s", proxy);
      if (bypass)
        snprintf(s->proxy_bypass, sizeof s->proxy_bypass, "%s", bypass);
      err = settings_save(w->state_dir, s, why, sizeof why);
    }
    OPENSSL_cleanse(proxy, sizeof proxy);
  }
  pthread_mutex_unlock(&w->settings_lock);
  OPENSSL_cleanse(s, sizeof *s);
  free(s);
  if (err == RPL_E_INVALID_ARGUMENT)
    return reply_error(c, 400, "%s", why);
  if (err)
    return reply_error(c, 500, "the proxy settings were not saved: %s", why);
  log_notice("web: proxy settings changed (%s)", addr[0] ? "a proxy" : "no proxy");
  return api_check(w, c, true); /* re-checked with the new settings */
}

/* ---- API: registration and agents --------------------------------------------------------- */

static enum MHD_Result api_registration(struct web_server *w, struct MHD_Connection *c, bool regenerate)
{
  char path[4200], *key = NULL;
  snprintf(path, sizeof path, "%s/%s", w->state_dir, WEB_REGKEY_FILE);
  if (regenerate) {
    char fresh[CHAN_REGKEY_MAX];
    rpl_err err = identity_issue_regkey(w->cfg.cat, w->cert, fresh);
    if (!err)
      err = file_write_atomic(path, fresh, strlen(fresh), 0600);
    OPENSSL_cleanse(fresh, sizeof fresh);
    if (err)
      return reply_error(c, 500, "no new registration key: %s", rpl_strerror(err));
    log_notice("web: a new registration key was issued");
  }
  rpl_err err = file_read_all(path, CHAN_REGKEY_MAX, &key);
  if (err && err != RPL_E_NOT_FOUND)
    return reply_error(c, 500, "cannot read the registration key: %s", rpl_strerror(err));
  if (key)
    key[strcspn(key, "\r\n")] = 0;
  bool unused = false;
  if (key) {
    uint8_t secret[CHAN_SECRET_SIZE], fp[CHAN_FINGERPRINT_SIZE];
    if (chan_regkey_decode(key, secret, fp) == RPL_OK && catalog_regkey_is_unused(w->cfg.cat, secret, &unused) != RPL_OK)
      unused = false;
    OPENSSL_cleanse(secret, sizeof secret);
  }
  struct doc d;
  if (!doc_open(&d)) {
    free(key);
    return MHD_NO;
  }
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "key", key && unused ? key : NULL);
  json_bool(&d.j, "key_used", key && !unused);
  json_string(&d.j, "register_command", key && unused ? "mobility-agent register --appliance APPLIANCE:9443 --key KEY" : NULL);
  json_object_end(&d.j);
  if (key)
    OPENSSL_cleanse(key, strlen(key));
  free(key);
  return doc_send(c, &d, MHD_HTTP_OK, NULL);
}

static int agent_cb(const struct catalog_agent *ag, void *arg)
{
  struct json_out *j = arg;
  char id[37];
  uuid_unparse_lower(ag->id, id);
  json_object_begin(j, NULL);
  json_string(j, "agent_id", id);
  json_string(j, "hostname", ag->hostname);
  json_string(j, "cert_fingerprint", ag->cert_fingerprint);
  json_bool(j, "revoked", ag->revoked);
  json_u64(j, "registered_unix", (uint64_t)ag->registered_time);
  json_u64(j, "last_heartbeat_unix", (uint64_t)ag->last_heartbeat);
  json_object_end(j);
  return 0;
}

static enum MHD_Result api_agents(struct web_server *w, struct MHD_Connection *c)
{
  struct doc d;
  if (!doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_array_begin(&d.j, "agents");
  rpl_err err = catalog_agent_foreach(w->cfg.cat, agent_cb, &d.j);
  json_array_end(&d.j);
  json_object_end(&d.j);
  if (err) {
    (void)json_finish(&d.j);
    fclose(d.f);
    free(d.buf);
    return reply_error(c, 500, "%s", rpl_strerror(err));
  }
  return doc_send(c, &d, MHD_HTTP_OK, NULL);
}

static bool parse_id(const char *text, size_t len, uint8_t id[PROTO_ID_SIZE])
{
  char buf[37];
  if (len != 36)
    return false;
  memcpy(buf, text, 36);
  buf[36] = 0;
  return uuid_parse(buf, id) == 0;
}

static enum MHD_Result api_revoke(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len)
{
  uint8_t id[PROTO_ID_SIZE];
  struct catalog_agent ag;
  if (!parse_id(idtext, len, id))
    return reply_error(c, 400, "the agent id must be a UUID (see /api/agents)");
  rpl_err err = catalog_agent_get(w->cfg.cat, id, &ag);
  if (err == RPL_E_NOT_FOUND)
    return reply_error(c, 404, "no such agent: see /api/agents");
  if (!err && !ag.revoked)
    err = catalog_agent_revoke(w->cfg.cat, id);
  if (err)
    return reply_error(c, 500, "%s", rpl_strerror(err));
  log_notice("web: agent %.36s (%s) revoked", idtext, ag.hostname);
  return reply_ok(c, "revoked: its session ends within 5 s and reconnections are refused; register it again with a new key to restore it");
}

static enum MHD_Result api_disk_action(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len,
                                       enum web_disk_action act)
{
  uint8_t id[PROTO_ID_SIZE];
  if (!parse_id(idtext, len, id))
    return reply_error(c, 400, "the disk id must be a UUID (see /api/status)");
  char why[512] = "";
  rpl_err err = w->cfg.ops.disk_request(w->cfg.ops.ctx, id, act, why, sizeof why);
  if (err == RPL_E_NOT_FOUND)
    return reply_error(c, 404, "no such disk: see /api/status");
  if (err)
    return reply_error(c, 409, "%s", why[0] ? why : rpl_strerror(err));
  return reply_ok(c, act == WEB_DISK_CHECKPOINT ? "checkpoint requested: the recovery point appears in the list once its cycle is uploaded"
                                                : "resync requested: the agent sends the whole disk again in a resync cycle");
}

/* ---- API: recovery points ----------------------------------------------------------------- */

struct disk_list {
  struct catalog_disk *d;
  size_t n;
};

static int disk_cb(const struct catalog_disk *cd, void *arg)
{
  struct disk_list *l = arg;
  if (l->n < MAX_LIST_DISKS)
    l->d[l->n++] = *cd;
  return 0;
}

struct point_ctx {
  struct json_out *j;
  const char *state_dir, *disk_id;
};

static int point_cb(const struct catalog_point *p, void *arg)
{
  struct point_ctx *pc = arg;
  char rp[40], cmd[4600];
  snprintf(rp, sizeof rp, "rp-%" PRId64, p->id);
  snprintf(cmd, sizeof cmd, "replication-appliance restore --state '%s' --disk %s --point %s --out ./%s-%s.img", pc->state_dir,
           pc->disk_id, rp, pc->disk_id, rp);
  json_object_begin(pc->j, NULL);
  json_string(pc->j, "point", rp);
  json_u64(pc->j, "cycle", p->cycle);
  json_u64(pc->j, "time_unix", (uint64_t)p->time);
  json_string(pc->j, "kind", catalog_point_kind_name(p->kind));
  json_bool(pc->j, "has_image", p->has_snapshot);
  json_string(pc->j, "restore_command", cmd);
  json_object_end(pc->j);
  return 0;
}

static enum MHD_Result api_points(struct web_server *w, struct MHD_Connection *c)
{
  struct disk_list l = {.d = calloc(MAX_LIST_DISKS, sizeof *l.d)};
  if (!l.d)
    return MHD_NO;
  rpl_err err = catalog_disk_foreach(w->cfg.cat, NULL, disk_cb, &l); /* collected: the walk holds the catalog */
  struct doc d;
  if (err || !doc_open(&d)) {
    free(l.d);
    return err ? reply_error(c, 500, "%s", rpl_strerror(err)) : MHD_NO;
  }
  json_object_begin(&d.j, NULL);
  json_array_begin(&d.j, "disks");
  for (size_t i = 0; i < l.n && !err; i++) {
    char id[37];
    uuid_unparse_lower(l.d[i].id, id);
    json_object_begin(&d.j, NULL);
    json_string(&d.j, "disk_id", id);
    json_string(&d.j, "name", l.d[i].name);
    json_array_begin(&d.j, "points");
    struct point_ctx pc = {.j = &d.j, .state_dir = w->state_dir, .disk_id = id};
    err = catalog_point_foreach(w->cfg.cat, l.d[i].id, point_cb, &pc);
    json_array_end(&d.j);
    json_object_end(&d.j);
  }
  json_array_end(&d.j);
  json_object_end(&d.j);
  free(l.d);
  if (err) {
    fclose(d.f);
    free(d.buf);
    return reply_error(c, 500, "%s", rpl_strerror(err));
  }
  return doc_send(c, &d, MHD_HTTP_OK, NULL);
}

/* ---- series: the last hour per disk, sampled every cfg.sample_s ---------------------------- */

struct sample_ctx {
  struct web_server *w;
  int64_t now;
};

static void take_sample(void *arg, const struct web_disk_sample *ds)
{
  struct sample_ctx *sc = arg;
  struct web_server *w = sc->w;
  struct series *se = NULL, *free_slot = NULL;
  for (size_t i = 0; i < MAX_SERIES_DISKS && !se; i++) {
    if (w->series[i].used && !memcmp(w->series[i].id, ds->disk_id, PROTO_ID_SIZE))
      se = &w->series[i];
    else if (!w->series[i].used && !free_slot)
      free_slot = &w->series[i];
  }
  if (!se) {
    if (!free_slot)
      return; /* more disks than series slots: the rest get none */
    se = free_slot;
    memset(se, 0, sizeof *se);
    se->used = true;
    memcpy(se->id, ds->disk_id, PROTO_ID_SIZE);
  }
  struct sample s = {.t = sc->now, .lag = ds->rpo_lag_s, .backlog = ds->backlog_bytes};
  if (se->have_raw && ds->committed_raw_bytes >= se->last_raw)
    s.churn = (ds->committed_raw_bytes - se->last_raw) / w->cfg.sample_s;
  se->last_raw = ds->committed_raw_bytes;
  se->have_raw = true;
  se->s[(se->head + se->count) % w->series_len] = s;
  if (se->count < w->series_len)
    se->count++;
  else
    se->head = (se->head + 1) % w->series_len;
}

static void *sampler_main(void *arg)
{
  struct web_server *w = arg;
  pthread_mutex_lock(&w->stop_lock);
  while (!w->stopping) {
    pthread_mutex_unlock(&w->stop_lock);
    struct sample_ctx sc = {.w = w, .now = time(NULL)};
    pthread_mutex_lock(&w->lock);
    w->cfg.ops.sample(w->cfg.ops.ctx, take_sample, &sc);
    pthread_mutex_unlock(&w->lock);
    pthread_mutex_lock(&w->stop_lock);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += w->cfg.sample_s;
    while (!w->stopping && pthread_cond_timedwait(&w->stop_cond, &w->stop_lock, &ts) != ETIMEDOUT)
      ;
  }
  pthread_mutex_unlock(&w->stop_lock);
  return NULL;
}

static enum MHD_Result api_series(struct web_server *w, struct MHD_Connection *c)
{
  struct doc d;
  if (!doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_u64(&d.j, "interval_seconds", w->cfg.sample_s);
  json_array_begin(&d.j, "disks");
  pthread_mutex_lock(&w->lock);
  for (size_t i = 0; i < MAX_SERIES_DISKS; i++) {
    const struct series *se = &w->series[i];
    if (!se->used)
      continue;
    char id[37];
    uuid_unparse_lower(se->id, id);
    json_object_begin(&d.j, NULL);
    json_string(&d.j, "disk_id", id);
    json_array_begin(&d.j, "samples"); /* [time_unix, rpo_lag_s, backlog_bytes, churn_bytes_per_s] */
    for (unsigned k = 0; k < se->count; k++) {
      const struct sample *s = &se->s[(se->head + k) % w->series_len];
      json_array_begin(&d.j, NULL);
      json_u64(&d.j, NULL, (uint64_t)s->t);
      json_u64(&d.j, NULL, s->lag);
      json_u64(&d.j, NULL, s->backlog);
      json_u64(&d.j, NULL, s->churn);
      json_array_end(&d.j);
    }
    json_array_end(&d.j);
    json_object_end(&d.j);
  }
  pthread_mutex_unlock(&w->lock);
  json_array_end(&d.j);
  json_object_end(&d.j);
  return doc_send(c, &d, MHD_HTTP_OK, NULL);
}

/* ---- routing ------------------------------------------------------------------------------ */

static enum MHD_Result serve_asset(struct web_server *w, struct MHD_Connection *c, const char *url)
{
  const char *name = !strcmp(url, "/") || !strcmp(url, "/index.html") ? "index.html" : url + 1;
  for (size_t i = 0; i < 3; i++)
    if (!strcmp(w->assets[i].name, name))
      return send_buf(c, MHD_HTTP_OK, w->assets[i].type, w->assets[i].data, w->assets[i].len, NULL);
  return reply_error(c, MHD_HTTP_NOT_FOUND, "no such page: %.100s", printable(url) ? url : "?");
}

/* url = "/api/PREFIX/ID/ACTION": the ID's text and length. */
static bool id_route(const char *url, const char *prefix, const char *action, const char **id, size_t *len)
{
  size_t pl = strlen(prefix), al = strlen(action), ul = strlen(url);
  if (strncmp(url, prefix, pl) || ul <= pl + al + 1 || strcmp(url + ul - al, action) || url[ul - al - 1] != '/')
    return false;
  *id = url + pl;
  *len = ul - pl - al - 1;
  return true;
}

static enum MHD_Result route(struct web_server *w, struct MHD_Connection *c, const char *url, bool post, struct req *q)
{
  if (strncmp(url, "/api/", 5))
    return post ? reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "pages are read with GET") : serve_asset(w, c, url);
  if (post && (q->too_large || q->bad_field))
    return q->too_large ? reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the form is larger than %u bytes", MAX_BODY)
                        : reply_error(c, 400, "form field '%s' is too long, repeated or one too many", q->bad_name);
  if (post && !q->is_form && MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH) &&
      strcmp(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH), "0"))
    return reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "send forms as application/x-www-form-urlencoded");
  if (!strcmp(url, "/api/login"))
    return post ? api_login(w, c, q) : reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "log in with POST");

  struct session s;
  if (!session_of(w, c, &s))
    return reply_error(c, MHD_HTTP_UNAUTHORIZED, "not logged in (or the session expired): log in first");
  if (post) {
    const char *token = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
    if (!token || strlen(token) != 64 || CRYPTO_memcmp(token, s.csrf, 64) != 0)
      return reply_error(c, MHD_HTTP_FORBIDDEN, "missing or wrong CSRF token: send the X-CSRF-Token header the login gave");
  }
  const char *id;
  size_t idlen;
  enum MHD_Result r;
  if (!strcmp(url, "/api/session") && !post) {
    r = send_session(w, c, &s, NULL);
  } else if (!strcmp(url, "/api/logout") && post) {
    session_end(w, s.id);
    r = send_buf(c, MHD_HTTP_OK, "application/json", "{\"ok\":true}\n", 12,
                 COOKIE_NAME "=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
  } else if (!strcmp(url, "/api/password") && post) {
    static const char *const allowed[] = {"password", NULL};
    const char *bad = unknown_field(q, allowed), *pw = field(q, "password");
    rpl_err err = bad || !pw ? RPL_E_WEB_PASSWORD : web_auth_set_password(w->state_dir, pw);
    r = err == RPL_E_WEB_PASSWORD ? reply_error(c, 400, "the password must be %d to %d printable characters (field 'password')",
                                                WEB_PASSWORD_MIN, WEB_PASSWORD_MAX)
        : err                     ? reply_error(c, 500, "%s", rpl_strerror(err))
                                  : reply_ok(c, "admin password set");
  } else if (!strcmp(url, "/api/status") && !post) {
    r = api_status(w, c);
  } else if (!strcmp(url, "/api/check")) {
    r = api_check(w, c, post);
  } else if (!strcmp(url, "/api/proxy")) {
    r = post ? api_proxy_post(w, c, q) : api_proxy_get(w, c);
  } else if (!strcmp(url, "/api/registration") && !post) {
    r = api_registration(w, c, false);
  } else if (!strcmp(url, "/api/registration/regenerate") && post) {
    r = api_registration(w, c, true);
  } else if (!strcmp(url, "/api/agents") && !post) {
    r = api_agents(w, c);
  } else if (post && id_route(url, "/api/agents/", "revoke", &id, &idlen)) {
    r = api_revoke(w, c, id, idlen);
  } else if (post && id_route(url, "/api/disks/", "checkpoint", &id, &idlen)) {
    r = api_disk_action(w, c, id, idlen, WEB_DISK_CHECKPOINT);
  } else if (post && id_route(url, "/api/disks/", "resync", &id, &idlen)) {
    r = api_disk_action(w, c, id, idlen, WEB_DISK_RESYNC);
  } else if (!strcmp(url, "/api/points") && !post) {
    r = api_points(w, c);
  } else if (!strcmp(url, "/api/series") && !post) {
    r = api_series(w, c);
  } else {
    r = reply_error(c, MHD_HTTP_NOT_FOUND, "no such API (or not with %s): see the README's configuration manager section",
                    post ? "POST" : "GET");
  }
  OPENSSL_cleanse(&s, sizeof s);
  return r;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                                  const char *version, const char *upload_data, size_t *upload_data_size, void **req_cls)
{
  struct web_server *w = cls;
  struct req *q = *req_cls;
  if (!q) {
    bool post = !strcmp(method, MHD_HTTP_METHOD_POST);
    if (!post && strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
      return reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and POST are served");
    q = calloc(1, sizeof *q);
    if (!q)
      return MHD_NO;
    q->is_post = post;
    if (post)
      q->pp = MHD_create_post_processor(c, 4096, on_field, q); /* NULL: not a form */
    q->is_form = q->pp != NULL;
    *req_cls = q;
    return MHD_YES;
  }
  if (q->is_post && *upload_data_size) {
    q->body += *upload_data_size;
    if (q->body > MAX_BODY)
      q->too_large = true;
    else if (q->pp && MHD_post_process(q->pp, upload_data, *upload_data_size) != MHD_YES)
      q->bad_field = true, snprintf(q->bad_name, sizeof q->bad_name, "(malformed form)");
    *upload_data_size = 0;
    return MHD_YES;
  }
  if (q->pp) { /* the last URL-encoded field is only complete when the processor ends */
    if (MHD_destroy_post_processor(q->pp) != MHD_YES && !q->bad_field)
      q->bad_field = true, snprintf(q->bad_name, sizeof q->bad_name, "(malformed form)");
    q->pp = NULL;
  }
  return route(w, c, url, q->is_post, q);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **req_cls, enum MHD_RequestTerminationCode toe)
{
  struct req *q = *req_cls;
  if (!q)
    return;
  if (q->pp)
    MHD_destroy_post_processor(q->pp);
  OPENSSL_cleanse(q, sizeof *q); /* form fields may hold passwords */
  free(q);
  *req_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
  char msg[512];
  vsnprintf(msg, sizeof msg, fmt, ap);
  msg[strcspn(msg, "\n")] = 0;
  log_warn("web: %s", msg);
}

/* ---- start and stop ----------------------------------------------------------------------- */

static bool has_index(const char *dir)
{
  char p[4200];
  snprintf(p, sizeof p, "%s/index.html", dir);
  return dir[0] && access(p, R_OK) == 0;
}

static rpl_err load_assets(struct web_server *w, char *why, size_t whysz)
{
  const char *candidates[] = {w->cfg.root, getenv("RPL_WEB_ROOT"), RPL_WEB_INSTALLED_DIR, RPL_WEB_SOURCE_DIR};
  const char *root = NULL;
  for (size_t i = 0; i < 4 && !root; i++)
    if (candidates[i] && has_index(candidates[i]))
      root = candidates[i];
  if (!root) {
    snprintf(why, whysz, "no index.html in --web-root, $RPL_WEB_ROOT, %s or %s", RPL_WEB_INSTALLED_DIR, RPL_WEB_SOURCE_DIR);
    return RPL_E_WEB_ROOT;
  }
  static const struct { const char *name, *type; } files[3] = {
    {"index.html", "text/html; charset=utf-8"}, {"app.js", "text/javascript; charset=utf-8"}, {"style.css", "text/css; charset=utf-8"}};
  for (size_t i = 0; i < 3; i++) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", root, files[i].name);
    w->assets[i].name = files[i].name;
    w->assets[i].type = files[i].type;
    rpl_err err = file_read_all(p, MAX_ASSET, &w->assets[i].data);
    if (err) {
      snprintf(why, whysz, "%s: %s", p, rpl_strerror(err));
      return RPL_E_WEB_ROOT;
    }
    w->assets[i].len = strlen(w->assets[i].data);
  }
  log_info("web: page files from %s", root);
  return RPL_OK;
}

void web_stop(struct web_server *w)
{
  if (!w)
    return;
  if (w->mhd)
    MHD_stop_daemon(w->mhd);
  if (w->sampler_started) {
    pthread_mutex_lock(&w->stop_lock);
    w->stopping = true;
    pthread_cond_broadcast(&w->stop_cond);
    pthread_mutex_unlock(&w->stop_lock);
    pthread_join(w->sampler, NULL);
  }
  for (size_t i = 0; i < 3; i++)
    free(w->assets[i].data);
  free(w->check_doc);
  free(w->series);
  free(w->cert);
  if (w->key) {
    OPENSSL_cleanse(w->key, strlen(w->key));
    free(w->key);
  }
  pthread_mutex_destroy(&w->lock);
  pthread_mutex_destroy(&w->check_lock);
  pthread_mutex_destroy(&w->settings_lock);
  pthread_mutex_destroy(&w->stop_lock);
  pthread_cond_destroy(&w->stop_cond);
  OPENSSL_cleanse(w->sessions, sizeof w->sessions);
  free(w);
}

rpl_err web_start(const struct web_config *cfg, struct web_server **out, char *why, size_t whysz)
{
  *out = NULL;
  struct web_server *w = calloc(1, sizeof *w);
  if (!w)
    return RPL_E_NOMEM;
  w->cfg = *cfg;
  if (!w->cfg.sample_s)
    w->cfg.sample_s = 10;
  w->series_len = 3600 / w->cfg.sample_s;
  if (w->series_len > MAX_SERIES_LEN)
    w->series_len = MAX_SERIES_LEN;
  if (w->series_len < 2)
    w->series_len = 2;
  snprintf(w->state_dir, sizeof w->state_dir, "%s", cfg->state_dir);
  pthread_mutex_init(&w->lock, NULL);
  pthread_mutex_init(&w->check_lock, NULL);
  pthread_mutex_init(&w->settings_lock, NULL);
  pthread_mutex_init(&w->stop_lock, NULL);
  pthread_cond_init(&w->stop_cond, NULL);
  w->cert = strdup(cfg->cert_pem);
  w->key = strdup(cfg->key_pem);
  w->series = calloc(MAX_SERIES_DISKS, sizeof *w->series);
  rpl_err err = !w->cert || !w->key || !w->series ? RPL_E_NOMEM : load_assets(w, why, whysz);
  if (err) {
    web_stop(w);
    return err;
  }
  char host[256], port[16];
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV}, *ai = NULL;
  if (conn_split_hostport(cfg->addr, host, sizeof host, port, sizeof port, 44368) ||
      getaddrinfo(strcmp(host, "*") ? host : NULL, port, &hints, &ai)) {
    snprintf(why, whysz, "--web takes a numeric ADDR:PORT (127.0.0.1:44368, [::1]:44368, *:44368) or off, not '%s'", cfg->addr);
    web_stop(w);
    return RPL_E_INVALID_ARGUMENT;
  }
  unsigned flags = MHD_USE_TLS | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
  if (ai->ai_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  w->mhd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, w, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log, w,
                            MHD_OPTION_SOCK_ADDR, ai->ai_addr,
                            MHD_OPTION_HTTPS_MEM_CERT, w->cert, MHD_OPTION_HTTPS_MEM_KEY, w->key,
                            MHD_OPTION_HTTPS_PRIORITIES, "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2",
                            MHD_OPTION_CONNECTION_LIMIT, (unsigned)32, MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)16,
                            MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)60, MHD_OPTION_NOTIFY_COMPLETED, on_completed, w,
                            MHD_OPTION_END);
  freeaddrinfo(ai);
  if (!w->mhd) {
    snprintf(why, whysz, "cannot serve HTTPS on %s (in use, or the certificate was refused; see the log line before)", cfg->addr);
    web_stop(w);
    return RPL_E_WEB_START;
  }
  if (pthread_create(&w->sampler, NULL, sampler_main, w) == 0)
    w->sampler_started = true;
  log_info("web: configuration manager on https://%s/", cfg->addr);
  *out = w;
  return RPL_OK;
}
