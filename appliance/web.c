/* web.c - the configuration manager: HTTPS (libmicrohttpd, the appliance's certificate) serving the
 * static page and the JSON API under /api/: replies, form fields, sessions with CSRF token and the
 * login rate limit, routing, start and stop (the API's handlers are in web_api.c). */
#include "web_internal.h"

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
#include <strings.h>
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

/* ---- replies ------------------------------------------------------------------------------ */

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

enum MHD_Result web_send_buf(struct MHD_Connection *c, unsigned status, const char *type, const char *buf,
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

bool web_doc_open(struct doc *d)
{
  memset(d, 0, sizeof *d);
  d->f = open_memstream(&d->buf, &d->len);
  if (!d->f)
    return false;
  json_init(&d->j, d->f);
  return true;
}

enum MHD_Result web_doc_send(struct MHD_Connection *c, struct doc *d, unsigned status, const char *cookie)
{
  bool ok = json_finish(&d->j);
  fclose(d->f);
  enum MHD_Result ret;
  if (!ok || d->len > MAX_REPLY) {
    static const char msg[] = "{\"error\":\"the reply could not be built (too large or malformed); see the appliance log\"}\n";
    ret = web_send_buf(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "application/json", msg, sizeof msg - 1, NULL);
  } else {
    ret = web_send_buf(c, status, "application/json", d->buf, d->len, cookie);
  }
  free(d->buf);
  return ret;
}

enum MHD_Result web_reply_error(struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  struct doc d;
  if (!web_doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "error", msg);
  json_object_end(&d.j);
  return web_doc_send(c, &d, status, NULL);
}

enum MHD_Result web_reply_message(struct MHD_Connection *c, unsigned status, const char *message)
{
  struct doc d;
  if (!web_doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_bool(&d.j, "ok", true);
  json_string(&d.j, "message", message);
  json_object_end(&d.j);
  return web_doc_send(c, &d, status, NULL);
}

enum MHD_Result web_reply_ok(struct MHD_Connection *c, const char *message)
{
  return web_reply_message(c, MHD_HTTP_OK, message);
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

const char *web_field(const struct req *q, const char *name)
{
  for (size_t i = 0; i < q->nfields; i++)
    if (!strcmp(q->fields[i].name, name))
      return q->fields[i].value;
  return NULL;
}

/* The name of a field not in allowed (NULL-terminated), or NULL. */
const char *web_unknown_field(const struct req *q, const char *const *allowed)
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

bool web_printable(const char *s)
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
  if (!web_doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "csrf_token", s->csrf);
  json_bool(&d.j, "password_set", web_auth_has_password(w->state_dir));
  json_object_end(&d.j);
  return web_doc_send(c, &d, MHD_HTTP_OK, set_cookie);
}
static enum MHD_Result api_login(struct web_server *w, struct MHD_Connection *c, const struct req *q)
{
  char addr[64];
  client_addr(c, addr, sizeof addr);
  long wait = login_blocked(w, addr);
  if (wait > 0)
    return web_reply_error(c, 429, "too many failed logins from %s: try again in %ld s", addr, wait);
  static const char *const allowed[] = {"password", "token", NULL};
  const char *bad = web_unknown_field(q, allowed);
  const char *password = web_field(q, "password"), *token = web_field(q, "token");
  if (bad)
    return web_reply_error(c, MHD_HTTP_BAD_REQUEST, "unknown field '%s': send password (or the one-time token)", bad);
  if (!password == !token)
    return web_reply_error(c, MHD_HTTP_BAD_REQUEST, "send either password or token");
  bool ok = false;
  rpl_err err = password ? web_auth_check_password(w->state_dir, password, &ok) : web_auth_use_token(w->state_dir, token, &ok);
  if (err)
    return web_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "%s", rpl_strerror(err));
  login_result(w, addr, ok);
  if (!ok) {
    log_warn("web: failed login from %s", addr);
    return web_reply_error(c, MHD_HTTP_UNAUTHORIZED, "%s",
                       password ? "wrong password" : "this login link is not valid (used already, or replaced by a newer init)");
  }
  struct session s;
  if (!session_new(w, &s))
    return web_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "no randomness for a session");
  log_notice("web: admin logged in from %s", addr);
  char cookie[160];
  snprintf(cookie, sizeof cookie, COOKIE_NAME "=%s; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=%d", s.id,
           SESSION_MAX_S);
  enum MHD_Result r = send_session(w, c, &s, cookie);
  OPENSSL_cleanse(&s, sizeof s);
  return r;
}

/* ---- routing ------------------------------------------------------------------------------ */

static enum MHD_Result serve_asset(struct web_server *w, struct MHD_Connection *c, const char *url)
{
  const char *name = !strcmp(url, "/") || !strcmp(url, "/index.html") ? "index.html" : url + 1;
  for (size_t i = 0; i < 3; i++)
    if (!strcmp(w->assets[i].name, name))
      return web_send_buf(c, MHD_HTTP_OK, w->assets[i].type, w->assets[i].data, w->assets[i].len, NULL);
  return web_reply_error(c, MHD_HTTP_NOT_FOUND, "no such page: %.100s", web_printable(url) ? url : "?");
}

/* A text built in memory that refuses to grow past MAX_METRICS (the stream then reports an error). */
struct capped {
  char *buf;
  size_t len, size;
};

static ssize_t capped_write(void *cookie, const char *data, size_t n)
{
  struct capped *cb = cookie;
  if (n > MAX_METRICS - cb->len)
    return 0;
  if (cb->len + n > cb->size) {
    size_t size = cb->size ? cb->size : 64u << 10;
    while (size < cb->len + n)
      size *= 2;
    if (size > MAX_METRICS)
      size = MAX_METRICS;
    char *b = realloc(cb->buf, size);
    if (!b)
      return 0;
    cb->buf = b;
    cb->size = size;
  }
  memcpy(cb->buf + cb->len, data, n);
  cb->len += n;
  return (ssize_t)n;
}

/* GET /metrics: the Prometheus text, for a request with the bearer token of STATE/metrics-token
 * (no session: a scraper logs in to nothing; the token opens only this read-only page). */
static enum MHD_Result serve_metrics(struct web_server *w, struct MHD_Connection *c)
{
  const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
  bool ok = false;
  rpl_err err = RPL_OK;
  if (auth && !strncasecmp(auth, "Bearer ", 7))
    err = web_auth_metrics_check(w->state_dir, auth + 7, &ok);
  if (err)
    return web_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot read the metrics token: %s", rpl_strerror(err));
  if (!ok) {
    static const char msg[] = "{\"error\":\"/metrics wants 'Authorization: Bearer TOKEN' with the token of the "
                              "state directory's metrics-token file\"}\n";
    struct MHD_Response *r = MHD_create_response_from_buffer(sizeof msg - 1, (void *)msg, MHD_RESPMEM_PERSISTENT);
    if (!r)
      return MHD_NO;
    add_common_headers(r);
    MHD_add_response_header(r, "Content-Type", "application/json");
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"metrics\"");
    enum MHD_Result ret = MHD_queue_response(c, MHD_HTTP_UNAUTHORIZED, r);
    MHD_destroy_response(r);
    return ret;
  }
  if (!w->cfg.ops.metrics)
    return web_reply_error(c, MHD_HTTP_NOT_FOUND, "no metrics are served here");
  struct capped cb = {0};
  FILE *f = fopencookie(&cb, "w", (cookie_io_functions_t){.write = capped_write});
  if (!f)
    return web_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "out of memory");
  w->cfg.ops.metrics(w->cfg.ops.ctx, f);
  bool failed = fflush(f) != 0 || ferror(f);
  failed = fclose(f) != 0 || failed;
  enum MHD_Result ret = failed ? web_reply_error(c, MHD_HTTP_INTERNAL_SERVER_ERROR,
                                                 "the metrics text is larger than %u bytes or memory ran out", MAX_METRICS)
                               : web_send_buf(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                                              cb.buf ? cb.buf : "", cb.len, NULL);
  free(cb.buf);
  return ret;
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
  if (!strcmp(url, "/metrics"))
    return post ? web_reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "metrics are read with GET") : serve_metrics(w, c);
  if (strncmp(url, "/api/", 5))
    return post ? web_reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "pages are read with GET") : serve_asset(w, c, url);
  if (post && (q->too_large || q->bad_field))
    return q->too_large ? web_reply_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "the form is larger than %u bytes", MAX_BODY)
                        : web_reply_error(c, 400, "form field '%s' is too long, repeated or one too many", q->bad_name);
  if (post && !q->is_form && MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH) &&
      strcmp(MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH), "0"))
    return web_reply_error(c, MHD_HTTP_UNSUPPORTED_MEDIA_TYPE, "send forms as application/x-www-form-urlencoded");
  if (!strcmp(url, "/api/login"))
    return post ? api_login(w, c, q) : web_reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "log in with POST");

  struct session s;
  if (!session_of(w, c, &s))
    return web_reply_error(c, MHD_HTTP_UNAUTHORIZED, "not logged in (or the session expired): log in first");
  if (post) {
    const char *token = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-CSRF-Token");
    if (!token || strlen(token) != 64 || CRYPTO_memcmp(token, s.csrf, 64) != 0)
      return web_reply_error(c, MHD_HTTP_FORBIDDEN, "missing or wrong CSRF token: send the X-CSRF-Token header the login gave");
  }
  const char *id;
  size_t idlen;
  enum MHD_Result r;
  if (!strcmp(url, "/api/session") && !post) {
    r = send_session(w, c, &s, NULL);
  } else if (!strcmp(url, "/api/logout") && post) {
    session_end(w, s.id);
    r = web_send_buf(c, MHD_HTTP_OK, "application/json", "{\"ok\":true}\n", 12,
                 COOKIE_NAME "=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0");
  } else if (!strcmp(url, "/api/password") && post) {
    static const char *const allowed[] = {"password", NULL};
    const char *bad = web_unknown_field(q, allowed), *pw = web_field(q, "password");
    rpl_err err = bad || !pw ? RPL_E_WEB_PASSWORD : web_auth_set_password(w->state_dir, pw);
    r = err == RPL_E_WEB_PASSWORD ? web_reply_error(c, 400, "the password must be %d to %d printable characters (field 'password')",
                                                WEB_PASSWORD_MIN, WEB_PASSWORD_MAX)
        : err                     ? web_reply_error(c, 500, "%s", rpl_strerror(err))
                                  : web_reply_ok(c, "admin password set");
  } else if (!strcmp(url, "/api/status") && !post) {
    r = web_api_status(w, c);
  } else if (!strcmp(url, "/api/check")) {
    r = web_api_check(w, c, post);
  } else if (!strcmp(url, "/api/proxy")) {
    r = post ? web_api_proxy_post(w, c, q) : web_api_proxy_get(w, c);
  } else if (!strcmp(url, "/api/registration") && !post) {
    r = web_api_registration(w, c, false);
  } else if (!strcmp(url, "/api/registration/regenerate") && post) {
    r = web_api_registration(w, c, true);
  } else if (!strcmp(url, "/api/agents") && !post) {
    r = web_api_agents(w, c);
  } else if (post && id_route(url, "/api/agents/", "revoke", &id, &idlen)) {
    r = web_api_revoke(w, c, id, idlen);
  } else if (post && id_route(url, "/api/disks/", "checkpoint", &id, &idlen)) {
    r = web_api_disk_action(w, c, id, idlen, WEB_DISK_CHECKPOINT);
  } else if (post && id_route(url, "/api/disks/", "resync", &id, &idlen)) {
    r = web_api_disk_action(w, c, id, idlen, WEB_DISK_RESYNC);
  } else if (post && id_route(url, "/api/disks/", "unprotect", &id, &idlen)) {
    r = web_api_disk_unprotect(w, c, id, idlen, q);
  } else if (!strcmp(url, "/api/schedule")) {
    r = web_api_schedule(w, c, post ? q : NULL);
  } else if (!strcmp(url, "/api/alerts")) {
    r = web_api_alerts(w, c, post ? q : NULL);
  } else if (!strcmp(url, "/api/alerts/test") && post) {
    r = web_api_alerts_test(w, c, q);
  } else if (!strcmp(url, "/api/points") && !post) {
    r = web_api_points(w, c);
  } else if (!strcmp(url, "/api/series") && !post) {
    r = web_api_series(w, c);
  } else {
    r = web_reply_error(c, MHD_HTTP_NOT_FOUND, "no such API (or not with %s): see the README's configuration manager section",
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
      return web_reply_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "only GET and POST are served");
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

static rpl_err load_assets(struct web_server *w)
{
  const char *candidates[] = {w->cfg.root, getenv("RPL_WEB_ROOT"), RPL_WEB_INSTALLED_DIR, RPL_WEB_SOURCE_DIR};
  const char *root = NULL;
  for (size_t i = 0; i < 4 && !root; i++)
    if (candidates[i] && has_index(candidates[i]))
      root = candidates[i];
  if (!root) {
    return rpl_fail(RPL_E_WEB_ROOT, "no index.html in --web-root, $RPL_WEB_ROOT, %s or %s", RPL_WEB_INSTALLED_DIR,
                    RPL_WEB_SOURCE_DIR);
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
      return rpl_fail(RPL_E_WEB_ROOT, "%s: %s", p, rpl_strerror(err));
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
  free(w->ca);
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

rpl_err web_start(const struct web_config *cfg, struct web_server **out)
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
  /* The chain a browser is sent: the certificate, then the authority that issued it. */
  if (asprintf(&w->cert, "%s%s", cfg->cert_pem, cfg->ca_pem) < 0)
    w->cert = NULL;
  w->ca = strdup(cfg->ca_pem);
  w->key = strdup(cfg->key_pem);
  w->series = calloc(MAX_SERIES_DISKS, sizeof *w->series);
  rpl_err err = !w->cert || !w->ca || !w->key || !w->series ? RPL_E_NOMEM : load_assets(w);
  bool token_made = false;
  if (!err && cfg->ops.metrics && (err = web_auth_metrics_token_ensure(w->state_dir, &token_made)))
    err = rpl_fail(RPL_E_WEB_START, "cannot write the metrics token %s/%s: %s", w->state_dir, STATE_METRICS_TOKEN,
                   rpl_strerror(err));
  if (token_made)
    log_notice("web: made the /metrics bearer token %s/%s (give it to the scraper)", w->state_dir, STATE_METRICS_TOKEN);
  if (err) {
    web_stop(w);
    return err;
  }
  char host[256], port[16];
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV}, *ai = NULL;
  if (conn_split_hostport(cfg->addr, host, sizeof host, port, sizeof port, 44368) ||
      getaddrinfo(strcmp(host, "*") ? host : NULL, port, &hints, &ai)) {
    web_stop(w);
    return rpl_fail(RPL_E_INVALID_ARGUMENT,
                    "--web takes a numeric ADDR:PORT (127.0.0.1:44368, [::1]:44368, *:44368) or off, not '%s'", cfg->addr);
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
    web_stop(w);
    return rpl_fail(RPL_E_WEB_START,
                    "cannot serve HTTPS on %s (in use, or the certificate was refused; see the log line before)", cfg->addr);
  }
  if (pthread_create(&w->sampler, NULL, web_sampler_main, w) == 0)
    w->sampler_started = true;
  log_info("web: configuration manager on https://%s/", cfg->addr);
  *out = w;
  return RPL_OK;
}
