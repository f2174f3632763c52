/* web_api.c - the configuration manager's API handlers: status, checks, proxy, registration and
 * agents, disk actions, recovery points, the last hour's series. */
#include "state_files.h"
#include "web_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <uuid/uuid.h>

#include "agent_readiness.h"
#include "check.h"
#include "duration.h"
#include "identity.h"
#include "json_out.h"
#include "points_doc.h"
#include "rpl_log.h"
#include "settings.h"

/* ---- API: status, checks, proxy ----------------------------------------------------------- */

enum MHD_Result web_api_status(struct web_server *w, struct MHD_Connection *c)
{
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return MHD_NO;
  w->cfg.ops.status_json(w->cfg.ops.ctx, f);
  fclose(f);
  enum MHD_Result r = len > MAX_REPLY ? web_reply_error(c, 500, "status too large")
                                      : web_send_buf(c, MHD_HTTP_OK, "application/json", buf, len, NULL);
  free(buf);
  return r;
}

/* Runs the checks now (one at a time) and caches the document. */
static void run_check(struct web_server *w)
{
  struct appliance_settings *s = malloc(sizeof *s);
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
  rpl_err err = settings_load(w->state_dir, s);
  pthread_mutex_unlock(&w->settings_lock);
  if (err) {
    struct json_out j;
    json_init(&j, f);
    json_object_begin(&j, NULL);
    json_string(&j, "error", rpl_detail(err));
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
enum MHD_Result web_api_check(struct web_server *w, struct MHD_Connection *c, bool rerun)
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
    return web_reply_error(c, 500, "the checks could not run (out of memory)");
  enum MHD_Result r = web_send_buf(c, MHD_HTTP_OK, "application/json", copy, strlen(copy), NULL);
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

enum MHD_Result web_api_proxy_get(struct web_server *w, struct MHD_Connection *c)
{
  struct appliance_settings *s = malloc(sizeof *s);
  if (!s)
    return MHD_NO;
  pthread_mutex_lock(&w->settings_lock);
  rpl_err err = settings_load(w->state_dir, s);
  pthread_mutex_unlock(&w->settings_lock);
  if (err) {
    free(s);
    return web_reply_error(c, 500, "%s", rpl_detail(err));
  }
  char addr[1100], user[1100];
  bool has_pw;
  proxy_parts(s->proxy, addr, sizeof addr, user, sizeof user, &has_pw);
  struct doc d;
  if (!web_doc_open(&d)) {
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
  return web_doc_send(c, &d, MHD_HTTP_OK, NULL);
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

/* The proxy form's fields; NULL = not sent (the stored value stays). */
struct proxy_form {
  const char *addr, *user, *pw, *clear, *bypass;
};

/* Replies 400 and returns true when the form is not acceptable; nothing is loaded or saved before. */
static bool proxy_form_rejected(struct MHD_Connection *c, const struct req *q, struct proxy_form *f, enum MHD_Result *res)
{
  static const char *const allowed[] = {"address", "user", "password", "clear_password", "bypass", NULL};
  const char *bad = web_unknown_field(q, allowed);
  *f = (struct proxy_form){web_field(q, "address"), web_field(q, "user"), web_field(q, "password"),
                           web_field(q, "clear_password"), web_field(q, "bypass")};
  const char *addr = f->addr, *user = f->user, *pw = f->pw, *clear = f->clear, *bypass = f->bypass;
  if (bad)
    *res = web_reply_error(c, 400, "unknown field '%s': the proxy form has address, user, password, clear_password and bypass", bad);
  else if (!addr)
    *res = web_reply_error(c, 400, "address is required: http://HOST:PORT, or empty for no proxy");
  else if (addr[0] && strchr(addr, '@'))
    *res = web_reply_error(c, 400, "the address must not hold credentials: put the user and password in their own fields");
  else if (addr[0] && !valid_proxy_address(addr))
    *res = web_reply_error(c, 400, "address '%.200s' is not http://HOST:PORT (an HTTP proxy; port 1-65535)", web_printable(addr) ? addr : "?");
  else if (user && (!web_printable(user) || strlen(user) > 128 || strchr(user, ':')))
    *res = web_reply_error(c, 400, "user must be at most 128 printable characters without ':'");
  else if (pw && (!web_printable(pw) || strlen(pw) > 256))
    *res = web_reply_error(c, 400, "password must be at most 256 printable characters");
  else if (clear && strcmp(clear, "0") && strcmp(clear, "1"))
    *res = web_reply_error(c, 400, "clear_password is 0 or 1");
  else if (bypass && (strlen(bypass) > 1000 || !valid_bypass(bypass)))
    *res = web_reply_error(c, 400, "bypass is a comma-separated list of host names, .domains, addresses or NET/BITS networks (letters, digits, . - _ * : [ ] /)");
  else if (pw && pw[0] && (!user || !user[0]))
    *res = web_reply_error(c, 400, "a password needs a user");
  else
    return false;
  return true;
}

/* The URL's USER[:PASSWORD] from the form and the stored proxy. The stored password stays unless a
 * new one is given or it is cleared (it is never sent to the page); a stored user is kept as stored
 * (already percent-encoded) unless the form changes it. */
static void compose_userinfo(const char *stored, const struct proxy_form *f, char *userinfo, size_t size)
{
  char old_addr[1100], old_user[1100], eu[400], ep[800];
  bool old_pw;
  proxy_parts(stored, old_addr, sizeof old_addr, old_user, sizeof old_user, &old_pw);
  const char *rest = strstr(stored, "://");
  const char *at = rest ? strrchr(rest, '@') : NULL;
  const char *old_colon = at ? memchr(rest + 3, ':', (size_t)(at - rest - 3)) : NULL;
  const char *new_user = f->user ? f->user : old_user;
  userinfo[0] = 0;
  if (!f->addr[0] || !new_user[0])
    return;
  pct_encode(new_user, eu, sizeof eu);
  if (f->user && strcmp(f->user, old_user))
    snprintf(userinfo, size, "%s", eu);
  else
    snprintf(userinfo, size, "%s", old_user[0] ? old_user : eu);
  if (f->pw && f->pw[0]) {
    pct_encode(f->pw, ep, sizeof ep);
    size_t n = strlen(userinfo);
    snprintf(userinfo + n, size - n, ":%s", ep);
    OPENSSL_cleanse(ep, sizeof ep);
  } else if (old_colon && !(f->clear && !strcmp(f->clear, "1"))) {
    size_t n = strlen(userinfo);
    snprintf(userinfo + n, size - n, ":%.*s", (int)(at - old_colon - 1), old_colon + 1);
  }
}

/* Applies the form to the loaded settings and saves them; every copy of the password is wiped. */
static rpl_err save_proxy_form(const char *state_dir, struct appliance_settings *s, const struct proxy_form *f)
{
  char userinfo[1200];
  compose_userinfo(s->proxy, f, userinfo, sizeof userinfo);
  char proxy[sizeof s->proxy + 1];
  int n = f->addr[0] ? snprintf(proxy, sizeof proxy, "http://%s%s%s", userinfo, userinfo[0] ? "@" : "", f->addr + 7)
                     : snprintf(proxy, sizeof proxy, "%s", "");
  OPENSSL_cleanse(userinfo, sizeof userinfo);
  rpl_err err;
  if (n < 0 || (size_t)n >= sizeof s->proxy) {
    err = rpl_fail(RPL_E_INVALID_ARGUMENT, "the proxy URL is too long");
  } else {
    size_t plen = strlen(proxy);
    if (plen && proxy[plen - 1] == '/')
      proxy[plen - 1] = 0;
    snprintf(s->proxy, sizeof s->proxy, "%s", proxy);
    if (f->bypass)
      snprintf(s->proxy_bypass, sizeof s->proxy_bypass, "%s", f->bypass);
    err = settings_save(state_dir, s);
  }
  OPENSSL_cleanse(proxy, sizeof proxy);
  return err;
}

enum MHD_Result web_api_proxy_post(struct web_server *w, struct MHD_Connection *c, const struct req *q)
{
  struct proxy_form f;
  enum MHD_Result res;
  if (proxy_form_rejected(c, q, &f, &res))
    return res;
  struct appliance_settings *s = malloc(sizeof *s);
  if (!s)
    return MHD_NO;
  /* Load, change and save under the lock: another form's change saved meanwhile is not lost. */
  pthread_mutex_lock(&w->settings_lock);
  rpl_err err = settings_load(w->state_dir, s);
  if (!err)
    err = save_proxy_form(w->state_dir, s, &f);
  pthread_mutex_unlock(&w->settings_lock);
  OPENSSL_cleanse(s, sizeof *s);
  free(s);
  if (err == RPL_E_INVALID_ARGUMENT)
    return web_reply_error(c, 400, "%s", rpl_detail(err));
  if (err)
    return web_reply_error(c, 500, "the proxy settings were not saved: %s", rpl_detail(err));
  log_notice("web: proxy settings changed (%s)", f.addr[0] ? "a proxy" : "no proxy");
  return web_api_check(w, c, true); /* re-checked with the new settings */
}

/* ---- API: registration and agents --------------------------------------------------------- */

/* The lifetime init recorded for registration keys (the default if unreadable). */
static int64_t key_ttl(struct web_server *w)
{
  struct appliance_settings *st = malloc(sizeof *st);
  int64_t ttl = REGKEY_TTL_DEFAULT_S;
  pthread_mutex_lock(&w->settings_lock);
  if (st && settings_load(w->state_dir, st) == RPL_OK &&
      !duration_parse(st->key_ttl, strlen(st->key_ttl), REGKEY_TTL_MAX_S, &ttl))
    ttl = REGKEY_TTL_DEFAULT_S;
  pthread_mutex_unlock(&w->settings_lock);
  if (st)
    OPENSSL_cleanse(st, sizeof *st);
  free(st);
  return ttl;
}

/* A key is shown once, in the answer to the POST that issued it; GET tells only the newest key's
 * state (the appliance keeps no key, only its hash). */
enum MHD_Result web_api_registration(struct web_server *w, struct MHD_Connection *c, bool regenerate)
{
  char fresh[CHAN_REGKEY_MAX] = "";
  int64_t expires = 0, now = (int64_t)time(NULL), ttl = key_ttl(w);
  if (regenerate) {
    rpl_err err = identity_issue_regkey(w->cfg.cat, w->ca, ttl, fresh, &expires);
    if (err)
      return web_reply_error(c, 500, "no new registration key: %s", rpl_strerror(err));
    log_notice("web: a new registration key was issued (the unused ones before it are revoked)");
  }
  struct catalog_regkey_info info;
  rpl_err err = catalog_regkey_newest(w->cfg.cat, &info);
  uint64_t usable = 0;
  if ((err && err != RPL_E_NOT_FOUND) || catalog_regkey_count_usable(w->cfg.cat, now, &usable)) {
    OPENSSL_cleanse(fresh, sizeof fresh);
    return web_reply_error(c, 500, "cannot read the registration keys: %s", rpl_strerror(err));
  }
  struct doc d;
  if (!web_doc_open(&d)) {
    OPENSSL_cleanse(fresh, sizeof fresh);
    return MHD_NO;
  }
  const char *state = err ? NULL
                      : info.used                                     ? "used"
                      : info.revoked                                  ? "revoked"
                      : info.expires_time && info.expires_time <= now ? "expired"
                                                                      : "unused";
  char ttl_text[32];
  duration_format(ttl, ttl_text, sizeof ttl_text);
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "key", fresh[0] ? fresh : NULL);
  json_bool(&d.j, "key_used", state && !strcmp(state, "used"));
  json_string(&d.j, "newest_key_state", state);
  json_u64(&d.j, "newest_key_created_unix", err ? 0 : (uint64_t)info.created_time);
  json_u64(&d.j, "newest_key_expires_unix", err ? 0 : (uint64_t)info.expires_time);
  json_u64(&d.j, "usable_keys", usable);
  json_string(&d.j, "key_ttl", ttl_text);
  json_string(&d.j, "register_command", "mobility-agent register --appliance APPLIANCE:9443 --key-file FILE");
  json_object_end(&d.j);
  OPENSSL_cleanse(fresh, sizeof fresh);
  return web_doc_send(c, &d, MHD_HTTP_OK, NULL);
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
  agent_readiness_json(j, ag->id);
  json_object_end(j);
  return 0;
}

enum MHD_Result web_api_agents(struct web_server *w, struct MHD_Connection *c)
{
  struct doc d;
  if (!web_doc_open(&d))
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
    return web_reply_error(c, 500, "%s", rpl_strerror(err));
  }
  return web_doc_send(c, &d, MHD_HTTP_OK, NULL);
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

enum MHD_Result web_api_revoke(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len)
{
  uint8_t id[PROTO_ID_SIZE];
  struct catalog_agent ag;
  if (!parse_id(idtext, len, id))
    return web_reply_error(c, 400, "the agent id must be a UUID (see /api/agents)");
  rpl_err err = catalog_agent_get(w->cfg.cat, id, &ag);
  if (err == RPL_E_NOT_FOUND)
    return web_reply_error(c, 404, "no such agent: see /api/agents");
  if (!err && !ag.revoked)
    err = catalog_agent_revoke(w->cfg.cat, id);
  if (err)
    return web_reply_error(c, 500, "%s", rpl_strerror(err));
  log_notice("web: agent %.36s (%s) revoked", idtext, ag.hostname);
  if (w->cfg.ops.agent_revoked)
    w->cfg.ops.agent_revoked(w->cfg.ops.ctx, id);
  return web_reply_ok(c, "revoked: its session ends within 5 s and reconnections are refused; register it again with a new key to restore it");
}

enum MHD_Result web_api_disk_action(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len,
                                    enum web_disk_action act)
{
  uint8_t id[PROTO_ID_SIZE];
  if (!parse_id(idtext, len, id))
    return web_reply_error(c, 400, "the disk id must be a UUID (see /api/status)");
  rpl_err err = w->cfg.ops.disk_request(w->cfg.ops.ctx, id, act); /* on this thread: its detail is ours */
  if (err == RPL_E_NOT_FOUND)
    return web_reply_error(c, 404, "no such disk: see /api/status");
  if (err)
    return web_reply_error(c, 409, "%s", rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
  return web_reply_ok(c, act == WEB_DISK_CHECKPOINT ? "checkpoint requested: the recovery point appears in the list once its cycle is uploaded"
                                                : "resync requested: the agent sends the whole disk again in a resync cycle");
}

/* Unprotect, from the page: the agent stops tracking the disk and its cycles end; the replica and
 * its points stay, unless delete_replica=1 comes with confirm=DISK_ID (the page has the user type
 * the id: deleting every recovery point cannot be undone). */
enum MHD_Result web_api_disk_unprotect(struct web_server *w, struct MHD_Connection *c, const char *idtext, size_t len,
                                       const struct req *q)
{
  static const char *const allowed[] = {"delete_replica", "confirm", NULL};
  uint8_t id[PROTO_ID_SIZE];
  if (!parse_id(idtext, len, id))
    return web_reply_error(c, 400, "the disk id must be a UUID (see /api/status)");
  const char *bad = web_unknown_field(q, allowed), *del = web_field(q, "delete_replica"),
             *confirm = web_field(q, "confirm");
  if (bad)
    return web_reply_error(c, 400, "unknown field '%s' (the fields are delete_replica and confirm)", bad);
  if (del && strcmp(del, "0") && strcmp(del, "1"))
    return web_reply_error(c, 400, "delete_replica is 1 (delete the replica and its points) or 0 (keep them)");
  bool delete = del && !strcmp(del, "1");
  if (delete && (!confirm || strlen(confirm) != len || strncasecmp(confirm, idtext, len)))
    return web_reply_error(c, 400, "delete_replica=1 deletes the replica and every recovery point of the disk: "
                           "confirm it with confirm=%.*s (the disk id); nothing was changed", (int)len, idtext);
  if (!w->cfg.ops.disk_unprotect)
    return web_reply_error(c, 501, "this appliance cannot unprotect disks from here");
  rpl_err err = w->cfg.ops.disk_unprotect(w->cfg.ops.ctx, id, delete); /* on this thread: its detail is ours */
  if (err == RPL_E_NOT_FOUND)
    return web_reply_error(c, 404, "no such disk: see /api/status");
  if (err)
    return web_reply_error(c, 409, "%s", rpl_detail(err)[0] ? rpl_detail(err) : rpl_strerror(err));
  return web_reply_message(c, MHD_HTTP_ACCEPTED,
                           delete ? "unprotect asked: the agent stops tracking the disk after its cycle under way; the "
                                    "appliance then deletes its replica, recovery points, cache and catalog rows"
                                  : "unprotect asked: the agent stops tracking the disk after its cycle under way; its "
                                    "replica and recovery points are kept (restorable); it shows as unprotected");
}

/* ---- API: recovery points ----------------------------------------------------------------- */

enum MHD_Result web_api_points(struct web_server *w, struct MHD_Connection *c)
{
  struct doc d;
  if (!web_doc_open(&d))
    return MHD_NO;
  rpl_err err = points_doc_write(w->cfg.cat, w->state_dir, NULL, &d.j, NULL);
  if (err) {
    fclose(d.f);
    free(d.buf);
    return web_reply_error(c, 500, "%s", rpl_strerror(err));
  }
  return web_doc_send(c, &d, MHD_HTTP_OK, NULL);
}

/* ---- API: the recovery-point schedule ----------------------------------------------------- */

/* GET: {"points": "crash=5m,app=1h"}; POST points=...: checked, saved in the settings, used at once. */
enum MHD_Result web_api_schedule(struct web_server *w, struct MHD_Connection *c, const struct req *q)
{
  if (q) {
    static const char *const allowed[] = {"points", NULL};
    const char *text = web_field(q, "points"), *unknown = web_unknown_field(q, allowed);
    if (unknown)
      return web_reply_error(c, 400, "unknown field '%s' (the field is points)", unknown);
    struct point_schedule sched;
    rpl_err err = text ? schedule_parse(text, &sched) : RPL_E_POINT_SCHEDULE;
    if (err)
      return web_reply_error(c, 400, "%s", text ? rpl_detail(err) : "points is required (e.g. crash=5m,app=1h)");
    struct appliance_settings *s = malloc(sizeof *s);
    if (!s)
      return MHD_NO;
    pthread_mutex_lock(&w->settings_lock);
    err = settings_load(w->state_dir, s);
    if (!err) {
      schedule_format(&sched, s->points, sizeof s->points);
      err = settings_save(w->state_dir, s);
    }
    pthread_mutex_unlock(&w->settings_lock);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
    if (err)
      return web_reply_error(c, 500, "the schedule was not saved: %s", rpl_strerror(err));
    w->cfg.ops.schedule_set(w->cfg.ops.ctx, &sched);
  }
  char text[SCHEDULE_TEXT_MAX];
  w->cfg.ops.schedule_get(w->cfg.ops.ctx, text, sizeof text);
  if (q)
    log_notice("web: recovery-point schedule set to %s", text);
  struct doc d;
  if (!web_doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_string(&d.j, "points", text);
  json_object_end(&d.j);
  return web_doc_send(c, &d, MHD_HTTP_OK, NULL);
}

/* ---- API: health thresholds and webhooks ---------------------------------------------------- */

/* GET: status's "alerts" member; POST thresholds=...: checked, saved in the settings, used at once. */
enum MHD_Result web_api_alerts(struct web_server *w, struct MHD_Connection *c, const struct req *q)
{
  if (q) {
    static const char *const allowed[] = {"thresholds", NULL};
    const char *text = web_field(q, "thresholds"), *unknown = web_unknown_field(q, allowed);
    if (unknown)
      return web_reply_error(c, 400, "unknown field '%s' (the field is thresholds)", unknown);
    struct thresholds t;
    rpl_err err = text ? thresholds_parse(text, &t) : RPL_E_ALERT_THRESHOLDS;
    if (err)
      return web_reply_error(c, 400, "%s", text ? rpl_detail(err) : "thresholds is required (e.g. " THRESHOLDS_DEFAULT ")");
    struct appliance_settings *s = malloc(sizeof *s);
    if (!s)
      return MHD_NO;
    char canonical[THRESHOLDS_TEXT_MAX];
    thresholds_format(&t, canonical, sizeof canonical);
    pthread_mutex_lock(&w->settings_lock);
    err = settings_load(w->state_dir, s);
    if (!err) {
      snprintf(s->alerts, sizeof s->alerts, "%s", canonical);
      err = settings_save(w->state_dir, s);
    }
    pthread_mutex_unlock(&w->settings_lock);
    OPENSSL_cleanse(s, sizeof *s);
    free(s);
    if (err)
      return web_reply_error(c, 500, "the thresholds were not saved: %s", rpl_strerror(err));
    w->cfg.ops.thresholds_set(w->cfg.ops.ctx, &t);
    log_notice("web: health thresholds set to %s", canonical);
  }
  char *buf = NULL;
  size_t len = 0;
  FILE *f = open_memstream(&buf, &len);
  if (!f)
    return MHD_NO;
  w->cfg.ops.alerts_json(w->cfg.ops.ctx, f);
  fclose(f);
  enum MHD_Result r = len > MAX_REPLY ? web_reply_error(c, 500, "alerts document too large")
                                      : web_send_buf(c, MHD_HTTP_OK, "application/json", buf, len, NULL);
  free(buf);
  return r;
}

/* POST (no fields): a test alert queued to every webhook; {"queued": N}. */
enum MHD_Result web_api_alerts_test(struct web_server *w, struct MHD_Connection *c, const struct req *q)
{
  static const char *const allowed[] = {NULL};
  const char *unknown = web_unknown_field(q, allowed);
  if (unknown)
    return web_reply_error(c, 400, "unknown field '%s' (this takes none)", unknown);
  unsigned queued = 0;
  rpl_err err = w->cfg.ops.alerts_test(w->cfg.ops.ctx, &queued);
  if (err == RPL_E_NOT_FOUND)
    return web_reply_error(c, 409, "%s", rpl_detail(err));
  if (err)
    return web_reply_error(c, 500, "%s", rpl_strerror(err));
  struct doc d;
  if (!web_doc_open(&d))
    return MHD_NO;
  json_object_begin(&d.j, NULL);
  json_u64(&d.j, "queued", queued);
  json_object_end(&d.j);
  return web_doc_send(c, &d, MHD_HTTP_OK, NULL);
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

void *web_sampler_main(void *arg)
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

enum MHD_Result web_api_series(struct web_server *w, struct MHD_Connection *c)
{
  struct doc d;
  if (!web_doc_open(&d))
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
  return web_doc_send(c, &d, MHD_HTTP_OK, NULL);
}
