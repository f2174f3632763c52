/* events.c - the ring of cycle and point events and its JSON lines (events.h). */
#include "events.h"

#include <pthread.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>

#include "catalog.h"
#include "json_out.h"
#include "rpl_clock.h"

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t arrived = PTHREAD_COND_INITIALIZER;
static struct event ring[EVENTS_RING];
static uint64_t last_seq;
static bool waking;

void event_set_upload(struct event *e, const struct store_stats *before, const struct store_stats *after,
                      uint64_t started_ms)
{
  if (!after->transfers)
    return;
  e->upload_bytes = after->bytes_written - before->bytes_written;
  e->upload_ms = rpl_mono_ms() - started_ms;
  e->limit_wait_ms = after->limit_wait_ms - before->limit_wait_ms;
}

void events_emit(struct event *e)
{
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  pthread_mutex_lock(&lock);
  e->seq = ++last_seq;
  e->unix_ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  ring[e->seq % EVENTS_RING] = *e;
  pthread_cond_broadcast(&arrived);
  pthread_mutex_unlock(&lock);
}

void events_wake_all(void)
{
  pthread_mutex_lock(&lock);
  waking = true;
  pthread_cond_broadcast(&arrived);
  pthread_mutex_unlock(&lock);
}

static const char *type_name(enum event_type t)
{
  switch (t) {
  case EVENT_COMMITTED: return "committed";
  case EVENT_APPLIED: return "applied";
  case EVENT_POINT: return "point";
  case EVENT_GROUP_FAILED: return "group_failed";
  case EVENT_STARTED: return "started";
  }
  return "unknown";
}

static const char *kind_name(uint8_t kind)
{
  switch (kind) {
  case PROTO_CYCLE_PLAIN: return "plain";
  case PROTO_CYCLE_RESYNC: return "resync";
  case PROTO_CYCLE_RECOVERY_POINT: return "recovery_point";
  }
  return "unknown";
}

static void write_event(const struct event *e, FILE *out)
{
  struct json_out j;
  char id[37];
  uuid_unparse_lower(e->disk_id, id);
  json_init(&j, out);
  json_object_begin(&j, NULL);
  json_u64(&j, "seq", e->seq);
  json_u64(&j, "unix_ms", e->unix_ms);
  json_string(&j, "type", type_name(e->type));
  if (e->type == EVENT_GROUP_FAILED) { /* a group point not made: no disk, no cycle */
    json_string(&j, "group", e->group);
    json_string(&j, "reason", e->reason);
    json_object_end(&j);
    json_finish(&j);
    return;
  }
  json_string(&j, "disk_id", id);
  json_u64(&j, "cycle", e->cycle);
  json_string(&j, "kind", kind_name(e->kind));
  if (e->type == EVENT_STARTED) { /* CYCLE_START sent: nothing moved yet */
    json_u64(&j, "open", e->open);
    json_object_end(&j);
    json_finish(&j);
    return;
  }
  if (e->type == EVENT_COMMITTED) {
    json_bool(&j, "direct", e->direct);
    json_u64(&j, "extents", e->extents);
    json_u64(&j, "raw_bytes", e->raw_bytes);
    json_u64(&j, "payload_bytes", e->payload_bytes);
  }
  if (e->type == EVENT_APPLIED) {
    json_u64(&j, "worker", e->worker);
    json_u64(&j, "apply_ms", e->apply_ms);
    json_u64(&j, "raw_bytes", e->raw_bytes);
  }
  if (e->type != EVENT_POINT) {
    json_u64(&j, "upload_bytes", e->upload_bytes);
    json_u64(&j, "upload_ms", e->upload_ms);
    json_u64(&j, "limit_wait_ms", e->limit_wait_ms);
  }
  if (e->type == EVENT_POINT) {
    json_string(&j, "point_id", e->point_id);
    json_string(&j, "consistency", catalog_point_kind_name((enum catalog_point_kind)e->point_kind));
    json_string(&j, "trigger", catalog_point_made_by_name((enum catalog_point_made_by)e->made_by));
    json_u64(&j, "freeze_ms", e->freeze_ms);
    json_string(&j, "group", e->group[0] ? e->group : NULL);
    json_string(&j, "group_point", e->group[0] ? e->group_point : NULL);
    json_u64(&j, "group_window_ms", e->group_window_ms);
  }
  json_object_end(&j);
  json_finish(&j);
}

unsigned events_write_since(uint64_t since, unsigned wait_ms, FILE *out)
{
  if (wait_ms > EVENTS_MAX_WAIT_MS)
    wait_ms = EVENTS_MAX_WAIT_MS;
  struct timespec deadline = rpl_realtime_in_ms(wait_ms);
  pthread_mutex_lock(&lock);
  while (last_seq <= since && wait_ms && !waking)
    if (pthread_cond_timedwait(&arrived, &lock, &deadline))
      break;
  uint64_t first = since + 1;
  if (last_seq >= EVENTS_RING && first <= last_seq - EVENTS_RING)
    first = last_seq - EVENTS_RING + 1; /* older ones were overwritten */
  unsigned n = 0;
  for (uint64_t s = first; s <= last_seq; s++, n++) {
    struct event e = ring[s % EVENTS_RING];
    write_event(&e, out);
  }
  pthread_mutex_unlock(&lock);
  return n;
}
