/* lease.c - acquires, renews and releases the lease on a disk's page blob (lease.h). */
#include "lease.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <uuid/uuid.h>

#include "file_io.h"
#include "rpl_clock.h"
#include "rpl_log.h"
#include "state_files.h"

void lease_init(struct lease *l, const char *id, unsigned duration_s)
{
  memset(l, 0, sizeof *l);
  if (id && *id && strlen(id) < sizeof l->id) {
    snprintf(l->id, sizeof l->id, "%s", id);
  } else {
    uuid_t u;
    uuid_generate_random(u);
    uuid_unparse_lower(u, l->id);
  }
  l->duration_s = duration_s >= 15 && duration_s <= 60 ? duration_s : 60;
  l->err = RPL_E_LEASE_HELD;
}

rpl_err lease_acquire(struct blob_client *c, const char *container, const char *blob, struct lease *l,
                      struct blob_reply *reply)
{
  uint64_t t = rpl_mono_ms();
  rpl_err e = blob_lease(c, container, blob, BLOB_LEASE_ACQUIRE, (int)l->duration_s, l->id, reply);
  if (e == RPL_E_LEASE_HELD || e == RPL_E_LEASE_LOST) { /* refused: leased by another */
    if (l->err != RPL_E_LEASE_HELD || l->renewed_ms == 0)
      log_warn("page blob %s/%s: refused (HTTP %ld %s): %s", container, blob, reply->status, reply->error_code,
               rpl_strerror(RPL_E_LEASE_HELD));
    l->renewed_ms = t; /* only so that the refusal is logged once */
    l->held = false;
    l->err = RPL_E_LEASE_HELD;
    return l->err;
  }
  if (e) {
    l->held = false;
    l->err = e;
    return e;
  }
  if (reply->lease_id[0] && strcmp(reply->lease_id, l->id)) {
    log_err("page blob %s/%s: the service granted lease %s, not the proposed %s", container, blob, reply->lease_id,
            l->id);
    snprintf(l->id, sizeof l->id, "%.39s", reply->lease_id);
  }
  l->held = true;
  l->err = RPL_OK;
  l->renewed_ms = t;
  log_notice("page blob %s/%s: lease acquired (%u s, renewed every %u s)", container, blob, l->duration_s,
             l->duration_s / 3);
  return RPL_OK;
}

rpl_err lease_renew_if_due(struct blob_client *c, const char *container, const char *blob, struct lease *l)
{
  if (!l->held)
    return l->err ? l->err : RPL_E_LEASE_HELD;
  uint64_t t = rpl_mono_ms();
  if (t - l->renewed_ms < (uint64_t)l->duration_s * 1000 / 3)
    return RPL_OK;
  struct blob_reply r;
  rpl_err e = blob_lease(c, container, blob, BLOB_LEASE_RENEW, 0, l->id, &r);
  if (!e) {
    l->renewed_ms = t;
    return RPL_OK;
  }
  /* Refused by the service (another lease, or none), or not renewed before it would expire. */
  if (e == RPL_E_LEASE_HELD || e == RPL_E_LEASE_LOST || e == RPL_E_BLOB_NOT_FOUND || t - l->renewed_ms >= (uint64_t)l->duration_s * 1000) {
    l->held = false;
    l->err = RPL_E_LEASE_LOST;
    log_err("page blob %s/%s: %s (renewal: %s, HTTP %ld %s)", container, blob, rpl_strerror(l->err), rpl_strerror(e),
            r.status, r.error_code);
    return l->err;
  }
  log_warn("page blob %s/%s: lease renewal failed (%s), tried again", container, blob, rpl_strerror(e));
  return RPL_OK;
}

void lease_release(struct blob_client *c, const char *container, const char *blob, struct lease *l)
{
  if (!l->held)
    return;
  struct blob_reply r;
  rpl_err e = blob_lease(c, container, blob, BLOB_LEASE_RELEASE, 0, l->id, &r);
  l->held = false;
  l->err = RPL_E_LEASE_HELD;
  if (e)
    log_warn("page blob %s/%s: lease not released (%s): it expires in %u s", container, blob, rpl_strerror(e),
             l->duration_s);
  else
    log_info("page blob %s/%s: lease released", container, blob);
}

rpl_err lease_owner_id(const char *state_dir, char out[40])
{
  char path[4200];
  snprintf(path, sizeof path, "%s/" STATE_LEASE_ID, state_dir);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[64] = "";
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    uuid_t u;
    if (n >= 36) {
      buf[36] = 0;
      if (!uuid_parse(buf, u)) {
        memcpy(out, buf, 37);
        return RPL_OK;
      }
    }
    log_warn("%s is damaged: a new lease id is made", path);
  } else if (errno != ENOENT) {
    return RPL_E_IO;
  }
  uuid_t u;
  uuid_generate_random(u);
  uuid_unparse_lower(u, out);
  char line[40];
  int len = snprintf(line, sizeof line, "%s\n", out);
  return file_write_atomic(path, line, (size_t)len, 0600);
}
