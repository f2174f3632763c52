/* sdnotify.h - systemd's readiness protocol (Type=notify) without libsystemd: a datagram to
 * $NOTIFY_SOCKET; nothing happens when the daemon was not started by systemd. */
#ifndef SDNOTIFY_H
#define SDNOTIFY_H

void sd_notify_ready(const char *status);
void sd_notify_stopping(void);
void sd_notify_status(const char *status);

#endif
