/* sdnotify.c - READY=1 / STOPPING=1 / STATUS= to systemd over $NOTIFY_SOCKET (abstract or path). */
#include "sdnotify.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void notify(const char *msg)
{
  const char *path = getenv("NOTIFY_SOCKET");
  if (!path || (path[0] != '/' && path[0] != '@') || strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
    return;
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t len = strlen(path);
  memcpy(sa.sun_path, path, len);
  if (sa.sun_path[0] == '@')
    sa.sun_path[0] = '\0'; /* abstract namespace */
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0)
    return;
  ssize_t n = sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
                     (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len));
  (void)n;
  close(fd);
}

void sd_notify_ready(const char *status)
{
  char msg[512];
  snprintf(msg, sizeof msg, "READY=1\nSTATUS=%s", status);
  notify(msg);
}

void sd_notify_stopping(void) { notify("STOPPING=1"); }

void sd_notify_status(const char *status)
{
  char msg[512];
  snprintf(msg, sizeof msg, "STATUS=%s", status);
  notify(msg);
}
