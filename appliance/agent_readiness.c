/* agent_readiness.c - each agent's latest boot readiness report, in memory, for status. */
#include "agent_readiness.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

struct entry {
  struct entry *next;
  uint8_t agent[PROTO_ID_SIZE];
  uint64_t time_ns;
  uint8_t generation, checks, failed, warned;
  char problems[PROTO_MAX_STRING + 1];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *entries; /* lock; one per agent that reported, never removed (agents are few) */

static struct entry *find(const uint8_t agent[PROTO_ID_SIZE])
{
  for (struct entry *e = entries; e; e = e->next)
    if (!memcmp(e->agent, agent, PROTO_ID_SIZE))
      return e;
  return NULL;
}

rpl_err agent_readiness_on_frame(const uint8_t agent[PROTO_ID_SIZE], const struct proto_frame *f)
{
  struct proto_readiness m;
  rpl_err err = proto_decode_readiness(f, &m);
  if (err)
    return err;
  pthread_mutex_lock(&lock);
  struct entry *e = find(agent);
  if (!e && (e = calloc(1, sizeof *e))) {
    memcpy(e->agent, agent, PROTO_ID_SIZE);
    e->next = entries;
    entries = e;
  }
  if (e) {
    e->time_ns = m.time_ns;
    e->generation = m.generation;
    e->checks = m.checks;
    e->failed = m.failed;
    e->warned = m.warned;
    memcpy(e->problems, m.problems.ptr, m.problems.len);
    e->problems[m.problems.len] = 0;
  }
  pthread_mutex_unlock(&lock);
  return e ? RPL_OK : RPL_E_NOMEM;
}

bool agent_readiness_failed(const uint8_t agent[PROTO_ID_SIZE], unsigned *failed, char *first, size_t firstsz)
{
  pthread_mutex_lock(&lock);
  const struct entry *e = find(agent);
  bool yes = e && e->failed;
  if (yes) {
    *failed = e->failed;
    const char *p = strstr(e->problems, "FAIL");
    p = p ? p : e->problems;
    snprintf(first, firstsz, "%.*s", (int)strcspn(p, "\n"), p);
  }
  pthread_mutex_unlock(&lock);
  return yes;
}

void agent_readiness_json(struct json_out *j, const uint8_t agent[PROTO_ID_SIZE])
{
  pthread_mutex_lock(&lock);
  const struct entry *e = find(agent);
  if (!e) {
    json_string(j, "readiness", NULL);
  } else {
    json_object_begin(j, "readiness");
    json_u64(j, "checked_unix", e->time_ns / 1000000000ull);
    if (e->generation)
      json_u64(j, "generation", e->generation);
    else
      json_string(j, "generation", NULL);
    json_u64(j, "checks", e->checks);
    json_u64(j, "failed", e->failed);
    json_u64(j, "warned", e->warned);
    json_bool(j, "ok", e->failed == 0);
    json_array_begin(j, "problems");
    for (const char *p = e->problems; *p;) {
      size_t n = strcspn(p, "\n");
      char line[PROTO_MAX_STRING + 1];
      snprintf(line, sizeof line, "%.*s", (int)n, p);
      json_string(j, NULL, line);
      p += n + (p[n] == '\n');
    }
    json_array_end(j);
    json_object_end(j);
  }
  pthread_mutex_unlock(&lock);
}

void agent_readiness_text(FILE *f, const uint8_t agent[PROTO_ID_SIZE])
{
  pthread_mutex_lock(&lock);
  const struct entry *e = find(agent);
  if (e) {
    fprintf(f, "  boot readiness: %s, generation %s, %u failed, %u warnings of %u checks\n",
            e->failed ? "NOT READY" : "ready", e->generation == 1 ? "1" : e->generation == 2 ? "2" : "unknown",
            e->failed, e->warned, e->checks);
    for (const char *p = e->problems; *p;) {
      size_t n = strcspn(p, "\n");
      fprintf(f, "    %.*s\n", (int)n, p);
      p += n + (p[n] == '\n');
    }
  }
  pthread_mutex_unlock(&lock);
}
