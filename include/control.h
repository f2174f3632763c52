/* control.h - the daemons' control socket: the users' commands (status, protect, checkpoint, ...)
 * reach a running daemon through STATE_DIR/control.sock (owner-only permissions). */
#ifndef CONTROL_H
#define CONTROL_H

#include <stddef.h>

#include "rpl_error.h"
#include "state_files.h"

#define CONTROL_MAX_REQUEST  (64u << 10) /* the arguments of one command */
#define CONTROL_MAX_ARGS     64
#define CONTROL_MAX_REPLY    (4u << 20)  /* what a command prints */

/* ---- client ------------------------------------------------------------------------------- */

/* Sends argv[0..argc) to the daemon whose state directory is state_dir and waits for its answer.
 * *exit_status is the command's exit status and *reply (malloc'd, NUL-terminated, the caller frees)
 * what it prints: on stdout when the status is 0, else one line for stderr.
 * RPL_E_NO_DAEMON when no daemon listens there. */
RPL_MUST_CHECK rpl_err control_call(const char *state_dir, int argc, const char *const *argv, int *exit_status,
                                    char **reply);

/* ---- server ------------------------------------------------------------------------------- */

/* A reply under construction, capped at CONTROL_MAX_REPLY (past it, text is dropped and the reply
 * ends with a line saying so). */
struct control_reply {
  char *text;
  size_t len, alloc;
  int truncated;
};
void control_printf(struct control_reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs one command; returns its exit status. Called on a thread of its own per connection, so a
 * handler may block (checkpoint --wait); it must be thread-safe. */
typedef int (*control_handler_fn)(void *ctx, int argc, char **argv, struct control_reply *out);

/* Splits a request's body (len bytes of NUL-terminated arguments, as control_call sends them) into
 * argv, pointing into req; the argument count, or -1 when it is malformed (empty, over
 * CONTROL_MAX_REQUEST, not NUL-terminated, more than CONTROL_MAX_ARGS arguments). */
int control_request_parse(char *req, size_t len, char *argv[CONTROL_MAX_ARGS + 1]);

struct control_server;

/* Creates the socket (replacing a stale one; refusing if a live daemon answers on it) and serves
 * it on a thread of its own until control_server_stop(). */
RPL_MUST_CHECK rpl_err control_server_start(const char *state_dir, control_handler_fn handler, void *ctx,
                                            struct control_server **out);
/* Stops accepting, waits for commands in progress, removes the socket. NULL is allowed. */
void control_server_stop(struct control_server *s);

#endif
