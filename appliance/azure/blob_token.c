/* blob_token.c - managed-identity tokens: the IMDS-form request (GET ...?api-version=2018-02-01&
 * resource=https://storage.azure.com/, "Metadata: true"), retried with backoff, and a strict parser
 * for the flat JSON object it (and Entra ID's token endpoint) answers with, and for OAuth error
 * answers. */
#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "blob_internal.h"
#include "rpl_log.h"

#define TOKEN_RESOURCE "https%3A%2F%2Fstorage.azure.com%2F"

/* A cursor over the JSON text. */
struct json {
  const char *p, *end;
};

static void skip_ws(struct json *j)
{
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
    j->p++;
}

static int hex4(const char *p)
{
  int v = 0;
  for (int i = 0; i < 4; i++) {
    int c = p[i], d;
    if (c >= '0' && c <= '9')
      d = c - '0';
    else if (c >= 'a' && c <= 'f')
      d = c - 'a' + 10;
    else if (c >= 'A' && c <= 'F')
      d = c - 'A' + 10;
    else
      return -1;
    v = v * 16 + d;
  }
  return v;
}

/* Reads a JSON string into out (UTF-8, NUL-terminated); false on bad syntax or overflow. */
static bool json_string(struct json *j, char *out, size_t outsz)
{
  if (j->p >= j->end || *j->p != '"')
    return false;
  j->p++;
  size_t o = 0;
  while (j->p < j->end && *j->p != '"') {
    unsigned char ch = (unsigned char)*j->p++;
    unsigned long cp;
    if (ch < 0x20)
      return false;
    if (ch != '\\') {
      if (o + 1 >= outsz)
        return false;
      out[o++] = (char)ch;
      continue;
    }
    if (j->p >= j->end)
      return false;
    char esc = *j->p++;
    switch (esc) {
    case '"': cp = '"'; break;
    case '\\': cp = '\\'; break;
    case '/': cp = '/'; break;
    case 'b': cp = '\b'; break;
    case 'f': cp = '\f'; break;
    case 'n': cp = '\n'; break;
    case 'r': cp = '\r'; break;
    case 't': cp = '\t'; break;
    case 'u': {
      if (j->end - j->p < 4)
        return false;
      int hi = hex4(j->p);
      if (hi < 0)
        return false;
      j->p += 4;
      cp = (unsigned long)hi;
      if (hi >= 0xD800 && hi <= 0xDBFF) {
        if (j->end - j->p < 6 || j->p[0] != '\\' || j->p[1] != 'u')
          return false;
        int lo = hex4(j->p + 2);
        if (lo < 0xDC00 || lo > 0xDFFF)
          return false;
        j->p += 6;
        cp = 0x10000 + (((unsigned long)hi - 0xD800) << 10) + ((unsigned long)lo - 0xDC00);
      } else if (hi >= 0xDC00 && hi <= 0xDFFF) {
        return false;
      }
      break;
    }
    default:
      return false;
    }
    unsigned char utf8[4];
    size_t n;
    if (cp < 0x80) {
      utf8[0] = (unsigned char)cp, n = 1;
    } else if (cp < 0x800) {
      utf8[0] = (unsigned char)(0xC0 | (cp >> 6)), utf8[1] = (unsigned char)(0x80 | (cp & 0x3F)), n = 2;
    } else if (cp < 0x10000) {
      utf8[0] = (unsigned char)(0xE0 | (cp >> 12)), utf8[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
      utf8[2] = (unsigned char)(0x80 | (cp & 0x3F)), n = 3;
    } else {
      utf8[0] = (unsigned char)(0xF0 | (cp >> 18)), utf8[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
      utf8[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)), utf8[3] = (unsigned char)(0x80 | (cp & 0x3F)), n = 4;
    }
    if (cp == 0 || o + n >= outsz)
      return false;
    memcpy(out + o, utf8, n);
    o += n;
  }
  if (j->p >= j->end)
    return false;
  j->p++;
  out[o] = '\0';
  return true;
}

/* A JSON number, true, false or null, copied as text (numbers are validated by the grammar). */
static bool json_scalar(struct json *j, char *out, size_t outsz)
{
  const char *start = j->p;
  static const char *const words[] = {"true", "false", "null"};
  for (size_t w = 0; w < 3; w++) {
    size_t wl = strlen(words[w]);
    if ((size_t)(j->end - j->p) >= wl && memcmp(j->p, words[w], wl) == 0) {
      j->p += wl;
      goto copy;
    }
  }
  if (j->p < j->end && *j->p == '-')
    j->p++;
  if (j->p >= j->end || !isdigit((unsigned char)*j->p))
    return false;
  if (*j->p == '0')
    j->p++;
  else
    while (j->p < j->end && isdigit((unsigned char)*j->p))
      j->p++;
  if (j->p < j->end && *j->p == '.') {
    j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p))
      return false;
    while (j->p < j->end && isdigit((unsigned char)*j->p))
      j->p++;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    j->p++;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-'))
      j->p++;
    if (j->p >= j->end || !isdigit((unsigned char)*j->p))
      return false;
    while (j->p < j->end && isdigit((unsigned char)*j->p))
      j->p++;
  }
copy:;
  size_t n = (size_t)(j->p - start);
  if (n >= outsz)
    return false;
  memcpy(out, start, n);
  out[n] = '\0';
  return true;
}

/* Epoch seconds or a duration: decimal digits only, as a string or a number. */
static bool parse_seconds(const char *text, long long *out)
{
  if (!*text || strlen(text) > 15)
    return false;
  for (const char *p = text; *p; p++)
    if (!isdigit((unsigned char)*p))
      return false;
  *out = strtoll(text, NULL, 10);
  return true;
}

rpl_err blob_token_parse(const char *json, size_t len, time_t now, struct blob_token *out)
{
  memset(out, 0, sizeof *out);
  if (len > BLOB_TOKEN_JSON_MAX) {
    return rpl_fail(RPL_E_BLOB_TOKEN, "token response is over %u bytes", BLOB_TOKEN_JSON_MAX);
  }
  struct json j = {json, json + len};
  char key[64];
  char *value = malloc(BLOB_TOKEN_JSON_MAX);
  if (!value)
    return RPL_E_NOMEM;
  bool have_token = false, have_on = false, have_in = false;
  long long expires_on = 0, expires_in = 0;
  rpl_err err = RPL_E_BLOB_TOKEN;
  skip_ws(&j);
  if (j.p >= j.end || *j.p != '{') {
    err = rpl_fail(RPL_E_BLOB_TOKEN, "token response is not a JSON object");
    goto out;
  }
  j.p++;
  skip_ws(&j);
  bool first = true;
  for (;;) {
    if (j.p < j.end && *j.p == '}' && first) {
      j.p++;
      break;
    }
    if (!json_string(&j, key, sizeof key)) {
      err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: expected a member name");
      goto out;
    }
    skip_ws(&j);
    if (j.p >= j.end || *j.p != ':') {
      err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: expected ':' after \"%s\"", key);
      goto out;
    }
    j.p++;
    skip_ws(&j);
    bool is_string = j.p < j.end && *j.p == '"';
    if (j.p < j.end && (*j.p == '{' || *j.p == '[')) {
      err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: member \"%s\" is nested (a flat object was expected)", key);
      goto out;
    }
    if (!(is_string ? json_string(&j, value, BLOB_TOKEN_JSON_MAX) : json_scalar(&j, value, BLOB_TOKEN_JSON_MAX))) {
      err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: bad value for \"%s\"", key);
      goto out;
    }
    if (strcmp(key, "access_token") == 0) {
      if (have_token || !is_string) {
        err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: access_token given twice or not a string");
        goto out;
      }
      size_t tl = strlen(value);
      for (size_t i = 0; i < tl; i++)
        if (!isgraph((unsigned char)value[i])) {
          err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: access_token has a character not allowed in a header");
          goto out;
        }
      if (tl == 0 || tl >= sizeof out->access_token) {
        err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: access_token is empty or longer than %zu bytes", sizeof out->access_token - 1);
        goto out;
      }
      memcpy(out->access_token, value, tl + 1);
      have_token = true;
    } else if (strcmp(key, "expires_on") == 0) {
      if (!parse_seconds(value, &expires_on)) {
        err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: expires_on is not epoch seconds");
        goto out;
      }
      have_on = true;
    } else if (strcmp(key, "expires_in") == 0) {
      if (!parse_seconds(value, &expires_in)) {
        err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: expires_in is not a number of seconds");
        goto out;
      }
      have_in = true;
    } else if (strcmp(key, "token_type") == 0) {
      if (strcasecmp(value, "Bearer") != 0) {
        err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: token_type is not Bearer");
        goto out;
      }
    }
    skip_ws(&j);
    first = false;
    if (j.p < j.end && *j.p == ',') {
      j.p++;
      skip_ws(&j);
      continue;
    }
    if (j.p < j.end && *j.p == '}') {
      j.p++;
      break;
    }
    err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: expected ',' or '}' after \"%s\"", key);
    goto out;
  }
  skip_ws(&j);
  if (j.p != j.end) {
    err = rpl_fail(RPL_E_BLOB_TOKEN, "token response has trailing bytes after the object");
    goto out;
  }
  if (!have_token) {
    err = rpl_fail(RPL_E_BLOB_TOKEN, "token response has no access_token");
    goto out;
  }
  if (!have_on && !have_in) {
    err = rpl_fail(RPL_E_BLOB_TOKEN, "token response has neither expires_on nor expires_in");
    goto out;
  }
  out->expires_on = have_on ? (time_t)expires_on : now + (time_t)expires_in;
  if (out->expires_on <= now) {
    err = rpl_fail(RPL_E_BLOB_TOKEN, "token response: the token has already expired (check this machine's clock)");
    goto out;
  }
  err = RPL_OK;
out:
  OPENSSL_cleanse(value, BLOB_TOKEN_JSON_MAX);
  free(value);
  if (err != RPL_OK)
    OPENSSL_cleanse(out, sizeof *out);
  return err;
}

/* Skips one value of any kind (nested up to 16 levels): error answers carry arrays. */
static bool json_skip(struct json *j, char *scratch, size_t scratchsz, int depth)
{
  skip_ws(j);
  if (j->p >= j->end || depth > 16)
    return false;
  if (*j->p == '"')
    return json_string(j, scratch, scratchsz);
  if (*j->p != '{' && *j->p != '[')
    return json_scalar(j, scratch, scratchsz);
  char close = *j->p == '{' ? '}' : ']';
  bool object = close == '}';
  j->p++;
  skip_ws(j);
  if (j->p < j->end && *j->p == close) {
    j->p++;
    return true;
  }
  for (;;) {
    if (object) {
      skip_ws(j);
      if (!json_string(j, scratch, scratchsz))
        return false;
      skip_ws(j);
      if (j->p >= j->end || *j->p != ':')
        return false;
      j->p++;
    }
    if (!json_skip(j, scratch, scratchsz, depth + 1))
      return false;
    skip_ws(j);
    if (j->p < j->end && *j->p == ',') {
      j->p++;
      continue;
    }
    if (j->p < j->end && *j->p == close) {
      j->p++;
      return true;
    }
    return false;
  }
}

rpl_err blob_token_parse_error(const char *json, size_t len, char *error, size_t errorsz, char *description,
                               size_t descsz)
{
  if (errorsz)
    error[0] = '\0';
  if (descsz)
    description[0] = '\0';
  if (len > BLOB_TOKEN_JSON_MAX)
    return rpl_fail(RPL_E_BLOB_TOKEN, "error response is over %u bytes", BLOB_TOKEN_JSON_MAX);
  struct json j = {json, json + len};
  char key[64];
  char *value = malloc(BLOB_TOKEN_JSON_MAX);
  if (!value)
    return RPL_E_NOMEM;
  rpl_err err = rpl_fail(RPL_E_BLOB_TOKEN, "the token endpoint's error answer is not a JSON object");
  skip_ws(&j);
  if (j.p >= j.end || *j.p != '{')
    goto out;
  j.p++;
  skip_ws(&j);
  if (j.p < j.end && *j.p == '}') {
    err = RPL_OK;
    goto out;
  }
  for (;;) {
    skip_ws(&j);
    if (!json_string(&j, key, sizeof key))
      goto out;
    skip_ws(&j);
    if (j.p >= j.end || *j.p != ':')
      goto out;
    j.p++;
    skip_ws(&j);
    bool is_string = j.p < j.end && *j.p == '"';
    if (!json_skip(&j, value, BLOB_TOKEN_JSON_MAX, 0))
      goto out;
    if (is_string && strcmp(key, "error") == 0)
      snprintf(error, errorsz, "%.*s", (int)strcspn(value, "\r\n"), value);
    else if (is_string && strcmp(key, "error_description") == 0)
      snprintf(description, descsz, "%.*s", (int)strcspn(value, "\r\n"), value);
    skip_ws(&j);
    if (j.p < j.end && *j.p == ',') {
      j.p++;
      continue;
    }
    if (j.p < j.end && *j.p == '}') {
      err = RPL_OK;
      break;
    }
    goto out;
  }
out:
  free(value);
  return err;
}

size_t blob_token_body_write(char *ptr, size_t size, size_t nmemb, void *ud)
{
  struct blob_token_body *b = ud;
  size_t n = size * nmemb;
  if (b->len + n > BLOB_TOKEN_JSON_MAX) {
    b->overflow = true;
    return 0;
  }
  memcpy(b->data + b->len, ptr, n);
  b->len += n;
  return n;
}

rpl_err blob_token_fetch(const char *endpoint, unsigned max_tries, struct blob_token *out)
{
  if (!endpoint || !*endpoint)
    endpoint = BLOB_DEFAULT_IDENTITY_ENDPOINT;
  if (max_tries == 0)
    max_tries = 5;
  char url[1024];
  int n = snprintf(url, sizeof url, "%s%sapi-version=2018-02-01&resource=%s", endpoint,
                   strchr(endpoint, '?') ? "&" : "?", TOKEN_RESOURCE);
  if (n < 0 || (size_t)n >= sizeof url) {
    return rpl_fail(RPL_E_CONFIG, "identity endpoint URL is too long");
  }
  struct blob_token_body body = {.data = malloc(BLOB_TOKEN_JSON_MAX)};
  if (!body.data)
    return RPL_E_NOMEM;
  CURL *easy = curl_easy_init();
  if (!easy) {
    free(body.data);
    return RPL_E_NOMEM;
  }
  struct curl_slist *headers = curl_slist_append(NULL, "Metadata: true");
  rpl_err err = RPL_E_BLOB_TOKEN;
  unsigned delay_ms = 500;
  for (unsigned attempt = 1; attempt <= max_tries; attempt++) {
    body.len = 0;
    body.overflow = false;
    curl_easy_reset(easy);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, blob_token_body_write);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_TIMEOUT, 30L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT, 5L);
    /* The identity endpoint is local to the machine: never through a proxy. */
    curl_easy_setopt(easy, CURLOPT_PROXY, "");
    curl_easy_setopt(easy, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    CURLcode cc = curl_easy_perform(easy);
    long status = 0;
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    bool retry;
    if (cc != CURLE_OK) {
      err = rpl_fail(RPL_E_BLOB_TOKEN, "identity endpoint %s: %s", endpoint, curl_easy_strerror(cc));
      retry = !body.overflow;
    } else if (status == 200) {
      err = blob_token_parse(body.data, body.len, time(NULL), out);
      break;
    } else {
      err = rpl_fail(RPL_E_BLOB_TOKEN, "identity endpoint %s answered HTTP %ld", endpoint, status);
      retry = status == 404 || status == 429 || status >= 500;
    }
    if (!retry || attempt == max_tries)
      break;
    log_warn("managed-identity token: try %u failed (%s); retrying in %u ms", attempt, rpl_detail(err), delay_ms);
    usleep(delay_ms * 1000u);
    delay_ms = delay_ms * 2 > 10000 ? 10000 : delay_ms * 2;
  }
  curl_slist_free_all(headers);
  curl_easy_cleanup(easy);
  OPENSSL_cleanse(body.data, BLOB_TOKEN_JSON_MAX);
  free(body.data);
  return err;
}
