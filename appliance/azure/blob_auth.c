/* blob_auth.c - Shared Key signing for the Blob service: the string-to-sign with canonicalized
 * headers and resource exactly as the REST documentation defines them, HMAC-SHA256 by OpenSSL. */
#include <ctype.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "blob_internal.h"

#define MAX_SIGNED_HEADERS 32
#define MAX_QUERY_PARAMS 16

/* Appends text to out at *pos; false (and nothing more written) once it does not fit. */
static bool put(char *out, size_t outsz, size_t *pos, const char *text, size_t len)
{
  if (*pos + len + 1 > outsz)
    return false;
  memcpy(out + *pos, text, len);
  *pos += len;
  out[*pos] = '\0';
  return true;
}

static bool puts_(char *out, size_t outsz, size_t *pos, const char *text)
{
  return put(out, outsz, pos, text, strlen(text));
}

static const char *header_value(const struct blob_header *headers, size_t n, const char *name)
{
  for (size_t i = 0; i < n; i++)
    if (strcasecmp(headers[i].name, name) == 0)
      return headers[i].value;
  return NULL;
}

struct canon_header {
  char name[64];
  const char *value;
};

static int cmp_canon_header(const void *a, const void *b)
{
  return strcmp(((const struct canon_header *)a)->name, ((const struct canon_header *)b)->name);
}

struct query_param {
  char name[64];
  char value[512];
};

static int cmp_query_param(const void *a, const void *b)
{
  return strcmp(((const struct query_param *)a)->name, ((const struct query_param *)b)->name);
}

static int hexval(int ch)
{
  if (ch >= '0' && ch <= '9')
    return ch - '0';
  ch = tolower(ch);
  return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

/* Percent-decodes in[0..len) into out; false on a bad escape or overflow. */
static bool url_decode(const char *in, size_t len, char *out, size_t outsz)
{
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char ch = in[i];
    if (ch == '%') {
      if (i + 2 >= len)
        return false;
      int hi = hexval(in[i + 1]), lo = hexval(in[i + 2]);
      if (hi < 0 || lo < 0)
        return false;
      ch = (char)(hi * 16 + lo);
      i += 2;
    }
    if (o + 1 >= outsz)
      return false;
    out[o++] = ch;
  }
  out[o] = '\0';
  return true;
}

rpl_err blob_sharedkey_string_to_sign(const char *verb, const struct blob_header *headers,
                                      size_t nheaders, const char *account, const char *url_path,
                                      const char *query, char *out, size_t outsz)
{
  static const char *const standard[] = {
    "Content-Encoding", "Content-Language", "Content-Length", "Content-MD5", "Content-Type", "Date",
    "If-Modified-Since", "If-Match", "If-None-Match", "If-Unmodified-Since", "Range",
  };
  size_t pos = 0;
  if (outsz == 0)
    return RPL_E_LIMIT;
  out[0] = '\0';
  if (!puts_(out, outsz, &pos, verb) || !puts_(out, outsz, &pos, "\n"))
    return RPL_E_LIMIT;
  for (size_t i = 0; i < sizeof standard / sizeof standard[0]; i++) {
    const char *v = header_value(headers, nheaders, standard[i]);
    /* Content-Length is signed empty when zero (versions 2015-02-21 and later). */
    if (v && i == 2 && strcmp(v, "0") == 0)
      v = NULL;
    if ((v && !puts_(out, outsz, &pos, v)) || !puts_(out, outsz, &pos, "\n"))
      return RPL_E_LIMIT;
  }
  struct canon_header canon[MAX_SIGNED_HEADERS];
  size_t ncanon = 0;
  for (size_t i = 0; i < nheaders; i++) {
    if (strncasecmp(headers[i].name, "x-ms-", 5) != 0)
      continue;
    size_t nl = strlen(headers[i].name);
    if (ncanon == MAX_SIGNED_HEADERS || nl >= sizeof canon[0].name)
      return RPL_E_LIMIT;
    for (size_t k = 0; k <= nl; k++)
      canon[ncanon].name[k] = (char)tolower((unsigned char)headers[i].name[k]);
    canon[ncanon].value = headers[i].value;
    ncanon++;
  }
  qsort(canon, ncanon, sizeof canon[0], cmp_canon_header);
  for (size_t i = 0; i < ncanon; i++) {
    /* Values are trimmed; runs of white space inside collapse to one space. */
    if (!puts_(out, outsz, &pos, canon[i].name) || !puts_(out, outsz, &pos, ":"))
      return RPL_E_LIMIT;
    const char *v = canon[i].value;
    while (*v == ' ' || *v == '\t')
      v++;
    bool space = false;
    for (; *v; v++) {
      if (*v == ' ' || *v == '\t') {
        space = true;
        continue;
      }
      if (space && !put(out, outsz, &pos, " ", 1))
        return RPL_E_LIMIT;
      space = false;
      if (!put(out, outsz, &pos, v, 1))
        return RPL_E_LIMIT;
    }
    if (!puts_(out, outsz, &pos, "\n"))
      return RPL_E_LIMIT;
  }
  if (!puts_(out, outsz, &pos, "/") || !puts_(out, outsz, &pos, account) ||
      !puts_(out, outsz, &pos, url_path && *url_path ? url_path : "/"))
    return RPL_E_LIMIT;
  if (!query || !*query)
    return RPL_OK;
  struct query_param params[MAX_QUERY_PARAMS];
  size_t nparams = 0;
  for (const char *p = query; *p;) {
    size_t plen = strcspn(p, "&");
    if (plen > 0) {
      const char *eq = memchr(p, '=', plen);
      size_t nl = eq ? (size_t)(eq - p) : plen;
      if (nparams == MAX_QUERY_PARAMS)
        return RPL_E_LIMIT;
      struct query_param *qp = &params[nparams];
      if (!url_decode(p, nl, qp->name, sizeof qp->name))
        return RPL_E_INVALID_ARGUMENT;
      for (char *c = qp->name; *c; c++)
        *c = (char)tolower((unsigned char)*c);
      if (!url_decode(eq ? eq + 1 : "", eq ? plen - nl - 1 : 0, qp->value, sizeof qp->value))
        return RPL_E_INVALID_ARGUMENT;
      /* A repeated name signs once, its values joined by commas. */
      bool merged = false;
      for (size_t k = 0; k < nparams && !merged; k++) {
        if (strcmp(params[k].name, qp->name) != 0)
          continue;
        size_t have = strlen(params[k].value), add = strlen(qp->value);
        if (have + 1 + add >= sizeof params[k].value)
          return RPL_E_LIMIT;
        params[k].value[have] = ',';
        memcpy(params[k].value + have + 1, qp->value, add + 1);
        merged = true;
      }
      if (!merged)
        nparams++;
    }
    p += plen;
    if (*p == '&')
      p++;
  }
  qsort(params, nparams, sizeof params[0], cmp_query_param);
  for (size_t i = 0; i < nparams; i++)
    if (!puts_(out, outsz, &pos, "\n") || !puts_(out, outsz, &pos, params[i].name) ||
        !puts_(out, outsz, &pos, ":") || !puts_(out, outsz, &pos, params[i].value))
      return RPL_E_LIMIT;
  return RPL_OK;
}

rpl_err blob_sharedkey_sign(const unsigned char *key, size_t key_len, const char *string_to_sign,
                            char *sig, size_t sigsz)
{
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int maclen = 0;
  if (sigsz < 45)
    return RPL_E_LIMIT;
  if (!HMAC(EVP_sha256(), key, (int)key_len, (const unsigned char *)string_to_sign,
            strlen(string_to_sign), mac, &maclen))
    return RPL_E_INTERNAL;
  EVP_EncodeBlock((unsigned char *)sig, mac, (int)maclen);
  return RPL_OK;
}
