/* conn.h - a framed TLS connection between agent and appliance: connect/accept with timeouts,
 * whole frames out (EXTENT payloads without copying), whole frames in through the streaming decoder. */
#ifndef CONN_H
#define CONN_H

#include <openssl/ssl.h>

#include "proto.h"
#include "rpl_error.h"

#define CONN_DEFAULT_PORT 9443
#define CONN_IO_TIMEOUT_MS 60000 /* a peer silent this long on a read or write is gone */

struct conn;

/* Connects to "HOST:PORT" ("[v6]:PORT" too) and completes the TLS handshake with ctx (not owned;
 * must outlive the connection). The caller owns *out (conn_close). */
RPL_MUST_CHECK rpl_err conn_connect(SSL_CTX *ctx, const char *hostport, int timeout_ms, struct conn **out);
/* Completes the server side of the handshake on an accepted socket; takes fd over in all cases.
 * timeout_ms bounds the whole handshake (a peer trickling it a byte at a time is cut off then:
 * RPL_E_TIMEOUT), not each read. */
RPL_MUST_CHECK rpl_err conn_accept(SSL_CTX *ctx, int fd, int timeout_ms, struct conn **out);
/* The largest frame payload the connection accepts from now on (0: PROTO_MAX_PAYLOAD). */
void conn_set_recv_limit(struct conn *c, uint32_t max_payload);
void conn_close(struct conn *c);
/* Makes every send and receive on c, in progress in another thread or to come, fail at once (the
 * session ends while its cycle threads are sending); conn_close still follows. Any thread. */
void conn_abort(struct conn *c);

SSL *conn_ssl(struct conn *c);
int conn_fd(const struct conn *c);
/* "ADDRESS:PORT" of the peer, for logs. */
const char *conn_peer(const struct conn *c);

/* Any number of threads may send at once, and one thread receive meanwhile: each call's frames go
 * out whole, never interleaved with another call's bytes, and a sender waiting for the peer to take
 * bytes never stops the receiver (the socket is non-blocking; see conn.c). */
/* Writes whole encoded frames. */
RPL_MUST_CHECK rpl_err conn_send(struct conn *c, const struct proto_buf *frames);
/* Writes one EXTENT frame: header and fields, then the payload straight from m->payload. */
RPL_MUST_CHECK rpl_err conn_send_extent(struct conn *c, const struct proto_extent *m);

/* Nanoseconds the calling thread has waited in its conn_send and conn_send_extent calls, on any
 * connection, since it started: for the socket to take bytes (the link or the peer is slower than
 * we are) or for another thread's frame on the same connection. A sender's own CPU (TLS, copies)
 * is not in it. Differences of two readings on one thread are what a caller wants. */
uint64_t conn_send_wait_ns(void);

/* Where the bytes of a large raw EXTENT go, read there straight from TLS instead of through the
 * decoder and a copy: once a frame's header and fields are in and it is an EXTENT of codec NONE with
 * at least min_length bytes, conn_recv calls sink on its own thread with the fields (m->payload.len
 * bytes to come; m->payload.ptr NULL). The sink returns a buffer of that many bytes, its own, or
 * NULL to receive the frame whole. The frame conn_recv then returns has its bytes there
 * (proto_frame.extent_data; proto_decode_extent knows). A frame that does not complete (the stream
 * broke) leaves the buffer unfilled, and it stays the sink owner's to take back. NULL sink: off. */
typedef uint8_t *(*conn_extent_sink)(void *arg, const struct proto_extent *m);
void conn_set_extent_sink(struct conn *c, conn_extent_sink sink, void *arg, uint32_t min_length);

/* The calling thread is the one that receives (conn_recv): its sends keep reading while they wait,
 * so that a peer blocked sending to us is never waited on in turn. Before other threads send. */
void conn_set_reader(struct conn *c);
/* Next frame (one thread at a time), waiting at most timeout_ms (-1: CONN_IO_TIMEOUT_MS). RPL_E_TIMEOUT when none came,
 * RPL_E_IO when the peer closed or the stream broke (a frame error is
 * returned as its own code). The frame stays valid until the next conn_recv. */
RPL_MUST_CHECK rpl_err conn_recv(struct conn *c, struct proto_frame *f, int timeout_ms);
/* conn_recv, but a wait for the socket also ends when wake_fd (an eventfd the caller owns) becomes
 * readable: it is drained and RPL_E_TIMEOUT returned at once (a frame half received stays buffered
 * for the next call). For an idle loop that others want to prompt. wake_fd -1: conn_recv. */
RPL_MUST_CHECK rpl_err conn_recv_wakeable(struct conn *c, struct proto_frame *f, int timeout_ms, int wake_fd);
/* True when a frame (or bytes of one) is already buffered, in the decoder or in what OpenSSL read
 * ahead, so poll() on the fd would not see it. */
int conn_pending(struct conn *c);

/* Splits "HOST:PORT" / "[HOST]:PORT"; port defaults to default_port when absent. */
RPL_MUST_CHECK rpl_err conn_split_hostport(const char *hostport, char *host, size_t hostsz, char *port,
                                           size_t portsz, int default_port);

#endif
