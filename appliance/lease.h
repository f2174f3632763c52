/* lease.h - the lease an appliance holds on each page blob it writes (Lease Blob: acquire,
 * renew, release), so that a second appliance cannot write the same disk. Internal header: the
 * uploader (appliance/uploader.c), the daemon and tests only. */
#ifndef APPLIANCE_LEASE_H
#define APPLIANCE_LEASE_H

#include <stdbool.h>
#include <stdint.h>

#include "blob.h"
#include "rpl_error.h"

/*
 * What it promises
 *  - The lease is finite (15-60 s) and proposed with this appliance's own lease id (STATE/lease-id),
 *    so the same appliance restarted after a crash gets its lease back at once, while another
 *    appliance is refused (409 LeaseAlreadyPresent -> RPL_E_LEASE_HELD) until the lease expires.
 *  - Renewed when a third of the duration has passed; a renewal the service refuses, or none that
 *    succeeded within the duration, means the lease is lost (RPL_E_LEASE_LOST): writes stop.
 *  - Released on a clean stop.
 *  - Not thread-safe: the uploader calls it under its mutex, with its blob client.
 */

struct lease {
  char id[40];          /* proposed and, when held, the lease id (a UUID) */
  bool held;
  unsigned duration_s;
  uint64_t renewed_ms;  /* monotonic: the last acquire or renewal */
  rpl_err err;          /* why it is not held (RPL_E_LEASE_HELD, RPL_E_LEASE_LOST, ...) */
};

/* id "" = a random one; duration outside 15-60 = 60. */
void lease_init(struct lease *l, const char *id, unsigned duration_s);
/* Acquires the lease (RPL_E_LEASE_HELD when another holds it; l->err says so too). */
RPL_MUST_CHECK rpl_err lease_acquire(struct blob_client *c, const char *container, const char *blob,
                                     struct lease *l, struct blob_reply *reply);
/* Renews a held lease when a third of its duration has passed; RPL_E_LEASE_LOST when it is lost
 * (then not held any more). Transient failures are retried on the next call until the lease would
 * have expired. */
RPL_MUST_CHECK rpl_err lease_renew_if_due(struct blob_client *c, const char *container, const char *blob,
                                          struct lease *l);
/* Releases a held lease (best effort: an unreleased lease expires by itself). */
void lease_release(struct blob_client *c, const char *container, const char *blob, struct lease *l);
/* This appliance's lease id from STATE_DIR/lease-id, created (a random UUID, 0600) on first use. */
RPL_MUST_CHECK rpl_err lease_owner_id(const char *state_dir, char out[40]);

#endif
