/* adopt.h - takes a disk over from its storage's own state when this appliance acquires a replica
 * another appliance wrote (a page blob): the catalog and the journal rebased on the storage's last
 * cycle, the points rebuilt from its point images. Internal header: the daemon and tests. */
#ifndef APPLIANCE_ADOPT_H
#define APPLIANCE_ADOPT_H

#include <stdint.h>

#include "catalog.h"
#include "journal.h"
#include "rpl_error.h"
#include "store.h"

struct adopt_result {
  uint64_t base;            /* the blob's sequence number = the disk's last committed and applied cycle */
  unsigned points_added;    /* snapshots with our metadata that the catalog did not know */
  unsigned points_gone;     /* catalog points whose snapshot no longer exists (pruned elsewhere) */
  unsigned cycles_dropped;  /* cached cycles made obsolete by the other appliance's writes */
};

/* When sequence (the storage's last cycle, a blob's sequence number) is past the catalog's last
 * committed cycle (another appliance wrote it), rebases: cached cycles dropped (they predate what
 * the storage now holds), the journal and the catalog set to that cycle, the storage's point images
 * (store_ops.list_points) recorded as crash-consistent points, catalog points whose image is gone
 * marked pruned. *adopted false (nothing done) when the storage is not ahead. The caller must then
 * resync the disk against the storage: the other appliance may have ACKed cycles it never uploaded. */
RPL_MUST_CHECK rpl_err adopt_store_state(struct catalog *cat, struct journal *j, struct store *st,
                                         const uint8_t disk_id[PROTO_ID_SIZE], int64_t sequence, bool *adopted,
                                         struct adopt_result *out);

#endif
