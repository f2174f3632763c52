/* https_post.c - the webhooks' JSON POST over HTTPS with a pinned CA (https_post.h). */
#include "https_post.h"

#include <curl/curl.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

rpl_err https_url_check(const char *url)
{
  CURLU *u = curl_url();
  if (!u)
    return RPL_E_NOMEM;
  char *scheme = NULL, *host = NULL, *user = NULL, *password = NULL;
  rpl_err e = RPL_OK;
  if (!url || !*url || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK)
    e = rpl_fail(RPL_E_WEBHOOK_URL, "webhook '%.200s' is not a URL", url ? url : "");
  else if (curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK || strcmp(scheme, "https") != 0)
    e = rpl_fail(RPL_E_WEBHOOK_URL, "webhook '%.200s' is not https:// (alerts are sent only over HTTPS)", url);
  else if (curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK || !*host)
    e = rpl_fail(RPL_E_WEBHOOK_URL, "webhook '%.200s' names no host", url);
  else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK ||
           curl_url_get(u, CURLUPART_PASSWORD, &password, 0) == CURLUE_OK)
    e = rpl_fail(RPL_E_WEBHOOK_URL, "webhook URL has a user or password in it: put the receiver's token in its path "
                 "or query instead (the URL is shown in status)");
  curl_free(scheme), curl_free(host), curl_free(user), curl_free(password);
  curl_url_cleanup(u);
  return e;
}

struct answer {
  char buf[HTTPS_POST_ANSWER_MAX + 1];
  size_t len;
};

/* Keeps the answer's first bytes; the rest is read and dropped. */
static size_t on_answer(char *data, size_t size, size_t n, void *arg)
{
  struct answer *a = arg;
  size_t bytes = size * n, room = HTTPS_POST_ANSWER_MAX - a->len;
  size_t take = bytes < room ? bytes : room;
  memcpy(a->buf + a->len, data, take);
  a->len += take;
  a->buf[a->len] = '\0';
  return bytes;
}

rpl_err https_post_json(const char *url, const char *ca_file, const char *body, size_t len, unsigned timeout_s,
                        long *status)
{
  *status = 0;
  CURL *e = curl_easy_init();
  struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
  struct curl_slist *more = headers ? curl_slist_append(headers, "Expect:") : NULL; /* no 1 s wait for a 100 */
  headers = more ? more : headers;
  if (!e || !more) {
    curl_easy_cleanup(e);
    curl_slist_free_all(headers);
    return RPL_E_NOMEM;
  }
  struct answer ans = {.len = 0};
  char errbuf[CURL_ERROR_SIZE] = "";
  curl_easy_setopt(e, CURLOPT_URL, url);
  curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
  curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 1L);
  curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 2L);
  if (ca_file && *ca_file) { /* pinned: this file's CAs and no others */
    curl_easy_setopt(e, CURLOPT_CAINFO, ca_file);
    curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
  }
  curl_easy_setopt(e, CURLOPT_PROXY, ""); /* an http_proxy in the environment never reroutes alerts */
  curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
  curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
  curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
  curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_answer);
  curl_easy_setopt(e, CURLOPT_WRITEDATA, &ans);
  curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)(timeout_s < 10 ? timeout_s : 10));
  curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)timeout_s);
  curl_easy_setopt(e, CURLOPT_USERAGENT, "replication-appliance-alerts/1");
  curl_easy_setopt(e, CURLOPT_ERRORBUFFER, errbuf);
  CURLcode cc = curl_easy_perform(e);
  curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
  rpl_err err = RPL_OK;
  if (cc != CURLE_OK)
    err = rpl_fail(RPL_E_WEBHOOK_DELIVERY, "%s", errbuf[0] ? errbuf : curl_easy_strerror(cc));
  else if (*status < 200 || *status > 299)
    err = rpl_fail(RPL_E_WEBHOOK_DELIVERY, "HTTP %ld: %.200s", *status, ans.buf);
  curl_slist_free_all(headers);
  curl_easy_cleanup(e);
  return err;
}
