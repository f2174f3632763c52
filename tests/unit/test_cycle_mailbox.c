/* test_cycle_mailbox.c - Description: the session thread hands ACK, NACK and NEED frames to the cycle
 * in flight they name (disk and cycle), never waits on a slow cycle (a full mailbox is a broken peer),
 * refuses frames of no cycle in flight, and a closed router still gives a cycle the ACK it read. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>
#include <pthread.h>

#include "cycle_mailbox.h"

static void disk(uint8_t id[PROTO_ID_SIZE], uint8_t n)
{
  memset(id, 0, PROTO_ID_SIZE);
  id[0] = n;
}

/* Encodes one frame into b and decodes it into *f (its payload in b). */
static void frame_of(struct proto_buf *b, struct proto_frame *f)
{
  struct proto_decoder d;
  proto_decoder_init(&d);
  assert_int_equal(proto_decoder_feed(&d, b->data, b->len), RPL_OK);
  struct proto_frame tmp;
  assert_int_equal(proto_decoder_next(&d, &tmp), RPL_OK);
  /* the payload outlives the decoder: copied into one of a few static buffers */
  static uint8_t keep[8][4096];
  static int next;
  uint8_t *p = keep[next++ % 8];
  memcpy(p, tmp.payload, tmp.length);
  *f = tmp;
  f->payload = p;
  proto_decoder_free(&d);
}

static void ack_frame(uint8_t n, uint64_t cycle, struct proto_frame *f)
{
  struct proto_buf b = {0};
  struct proto_ack m = {.cycle = cycle};
  disk(m.disk_id, n);
  assert_int_equal(proto_encode_ack(&b, &m), RPL_OK);
  frame_of(&b, f);
  proto_buf_free(&b);
}

static void nack_frame(uint8_t n, uint64_t cycle, struct proto_frame *f)
{
  struct proto_buf b = {0};
  struct proto_nack m = {.cycle = cycle, .reason = RPL_E_CACHE_WAIT, .message = {(const uint8_t *)"full", 4}};
  disk(m.disk_id, n);
  assert_int_equal(proto_encode_nack(&b, &m), RPL_OK);
  frame_of(&b, f);
  proto_buf_free(&b);
}

static void need_frame(uint8_t n, struct proto_frame *f)
{
  struct proto_buf b = {0};
  struct proto_need m = {.chunk_size = 1u << 20, .count = 0};
  disk(m.disk_id, n);
  assert_int_equal(proto_encode_need(&b, &m, NULL), RPL_OK);
  frame_of(&b, f);
  proto_buf_free(&b);
}

/* Frames of two cycles in flight, interleaved, each reach its own cycle, in the order they came. */
static void test_routes_by_disk_and_cycle(void **state)
{
  (void)state;
  struct cycle_router r;
  cycle_router_init(&r);
  uint8_t d1[PROTO_ID_SIZE], d2[PROTO_ID_SIZE];
  disk(d1, 1);
  disk(d2, 2);
  int b1, b2;
  assert_int_equal(cycle_router_open(&r, d1, 7, &b1), RPL_OK);
  assert_int_equal(cycle_router_open(&r, d2, 3, &b2), RPL_OK);
  assert_int_not_equal(b1, b2);
  struct proto_frame f;
  need_frame(2, &f);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_OK);
  ack_frame(1, 7, &f);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_OK);
  nack_frame(2, 3, &f);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_OK);
  struct cycle_frame cf;
  assert_int_equal(cycle_router_take(&r, b1, 0, &cf), RPL_OK);
  assert_int_equal(cf.f.type, PROTO_ACK);
  struct proto_ack a;
  assert_int_equal(proto_decode_ack(&cf.f, &a), RPL_OK);
  assert_int_equal(a.cycle, 7);
  cycle_frame_free(&cf);
  assert_int_equal(cycle_router_take(&r, b1, 0, &cf), RPL_E_TIMEOUT);
  assert_int_equal(cycle_router_take(&r, b2, 0, &cf), RPL_OK);
  assert_int_equal(cf.f.type, PROTO_NEED);
  cycle_frame_free(&cf);
  assert_int_equal(cycle_router_take(&r, b2, 0, &cf), RPL_OK);
  assert_int_equal(cf.f.type, PROTO_NACK);
  cycle_frame_free(&cf);
  cycle_router_release(&r, b1);
  cycle_router_release(&r, b2);
  cycle_router_destroy(&r);
}

/* An ACK of no cycle in flight (another cycle number, another disk) is refused, as is a second cycle
 * of one disk; frames of other types are not routed. */
static void test_refuses_strays(void **state)
{
  (void)state;
  struct cycle_router r;
  cycle_router_init(&r);
  uint8_t d1[PROTO_ID_SIZE];
  disk(d1, 1);
  int b;
  assert_int_equal(cycle_router_open(&r, d1, 5, &b), RPL_OK);
  assert_int_equal(cycle_router_open(&r, d1, 6, &b), RPL_E_PROTO_UNEXPECTED);
  struct proto_frame f;
  ack_frame(1, 4, &f);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_E_PROTO_UNEXPECTED);
  ack_frame(9, 5, &f);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_E_PROTO_UNEXPECTED);
  assert_true(cycle_router_routes(PROTO_ACK) && cycle_router_routes(PROTO_NACK) && cycle_router_routes(PROTO_NEED));
  assert_false(cycle_router_routes(PROTO_HEARTBEAT) || cycle_router_routes(PROTO_CYCLE_START) ||
               cycle_router_routes(PROTO_STORED));
  cycle_router_release(&r, b);
  cycle_router_destroy(&r);
}

/* A cycle that does not take its frames never makes the reader wait: past CYCLE_MAILBOX_FRAMES the
 * frame is refused at once. CYCLE_MAILBOXES_MAX cycles at most. */
static void test_bounded_never_waits(void **state)
{
  (void)state;
  struct cycle_router r;
  cycle_router_init(&r);
  int boxes[CYCLE_MAILBOXES_MAX];
  for (int i = 0; i < CYCLE_MAILBOXES_MAX; i++) {
    uint8_t id[PROTO_ID_SIZE];
    disk(id, (uint8_t)(i + 1));
    assert_int_equal(cycle_router_open(&r, id, 1, &boxes[i]), RPL_OK);
  }
  uint8_t extra[PROTO_ID_SIZE];
  disk(extra, 200);
  int b;
  assert_int_equal(cycle_router_open(&r, extra, 1, &b), RPL_E_LIMIT);
  struct proto_frame f;
  need_frame(1, &f);
  for (int i = 0; i < CYCLE_MAILBOX_FRAMES; i++)
    assert_int_equal(cycle_router_deliver(&r, &f), RPL_OK);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_E_PROTO_UNEXPECTED);
  for (int i = 0; i < CYCLE_MAILBOXES_MAX; i++)
    cycle_router_release(&r, boxes[i]); /* the frames nobody took are freed */
  cycle_router_destroy(&r);
}

struct waiter {
  struct cycle_router *r;
  int box;
  rpl_err got;
  uint8_t type;
};

static void *wait_forever(void *arg)
{
  struct waiter *w = arg;
  struct cycle_frame cf;
  w->got = cycle_router_take(w->r, w->box, -1, &cf);
  if (!w->got) {
    w->type = cf.f.type;
    cycle_frame_free(&cf);
  }
  return NULL;
}

/* A cycle thread waiting for its frame wakes when it comes; closing the router (the session ends)
 * wakes a waiting one with the reason, but an ACK already read is still taken first. */
static void test_wakes_and_closes(void **state)
{
  (void)state;
  struct cycle_router r;
  cycle_router_init(&r);
  uint8_t d1[PROTO_ID_SIZE], d2[PROTO_ID_SIZE];
  disk(d1, 1);
  disk(d2, 2);
  struct waiter w1 = {.r = &r}, w2 = {.r = &r};
  assert_int_equal(cycle_router_open(&r, d1, 2, &w1.box), RPL_OK);
  assert_int_equal(cycle_router_open(&r, d2, 2, &w2.box), RPL_OK);
  pthread_t t1, t2;
  pthread_create(&t1, NULL, wait_forever, &w1);
  pthread_create(&t2, NULL, wait_forever, &w2);
  struct proto_frame f;
  ack_frame(1, 2, &f);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_OK);
  pthread_join(t1, NULL);
  assert_int_equal(w1.got, RPL_OK);
  assert_int_equal(w1.type, PROTO_ACK);
  ack_frame(1, 2, &f);
  assert_int_equal(cycle_router_deliver(&r, &f), RPL_OK); /* read before the close: still taken */
  cycle_router_close(&r, RPL_E_IO);
  pthread_join(t2, NULL);
  assert_int_equal(w2.got, RPL_E_IO);
  struct cycle_frame cf;
  assert_int_equal(cycle_router_take(&r, w1.box, -1, &cf), RPL_OK);
  cycle_frame_free(&cf);
  assert_int_equal(cycle_router_take(&r, w1.box, -1, &cf), RPL_E_IO);
  cycle_router_release(&r, w1.box);
  cycle_router_release(&r, w2.box);
  cycle_router_reopen(&r);
  assert_int_equal(cycle_router_open(&r, d1, 3, &w1.box), RPL_OK);
  assert_int_equal(cycle_router_take(&r, w1.box, 10, &cf), RPL_E_TIMEOUT);
  cycle_router_release(&r, w1.box);
  cycle_router_destroy(&r);
}

int main(void)
{
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_routes_by_disk_and_cycle),
      cmocka_unit_test(test_refuses_strays),
      cmocka_unit_test(test_bounded_never_waits),
      cmocka_unit_test(test_wakes_and_closes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
