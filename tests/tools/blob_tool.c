/* blob_tool.c - a small driver of the page-blob client for integration tests and the benchmark:
 * upload an image (4 MiB Put Pages, N in flight, optionally skipping all-zero chunks), download a
 * blob, delete one, put a few pages into one, or open the client and probe the path. Configured
 * by environment: BLOB_TEST_CONNSTR (or AZURE_STORAGE_CONNECTION_STRING), BLOB_TEST_ZONE, BLOB_TEST_CA, BLOB_TEST_PROXY,
 * BLOB_TEST_PROXY_BYPASS, BLOB_TEST_ALLOW_PUBLIC=1, BLOB_TEST_IN_FLIGHT, BLOB_TEST_NO_MD5=1. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "blob.h"
#include "rpl_log.h"

#define CHUNK (4u * 1024u * 1024u)

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
         (double)ru.ru_stime.tv_usec / 1e6;
}

static int open_client(struct blob_client **client)
{
  struct blob_config cfg;
  blob_config_init(&cfg);
  const char *connstr = getenv("BLOB_TEST_CONNSTR");
  rpl_err err = connstr ? blob_connstr_parse(connstr, &cfg.account)
                        : blob_connstr_from_env(&cfg.account);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: %s\n", rpl_detail(err));
    return 1;
  }
  cfg.private_dns_zone = getenv("BLOB_TEST_ZONE");
  cfg.ca_file = getenv("BLOB_TEST_CA");
  cfg.proxy = getenv("BLOB_TEST_PROXY");
  cfg.proxy_bypass = getenv("BLOB_TEST_PROXY_BYPASS");
  cfg.require_private_endpoint = !getenv("BLOB_TEST_ALLOW_PUBLIC");
  cfg.upload_check = getenv("BLOB_TEST_NO_MD5") ? BLOB_CHECK_NONE : BLOB_CHECK_MD5;
  if (getenv("BLOB_TEST_IN_FLIGHT"))
    cfg.max_in_flight = (unsigned)atoi(getenv("BLOB_TEST_IN_FLIGHT"));
  err = blob_client_open(&cfg, client);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: %s: %s\n", rpl_errname(err), rpl_detail(err));
    return 1;
  }
  return 0;
}

struct upload_state {
  unsigned failed;
  rpl_err last;
};

static void upload_done(void *ctx, rpl_err err, const struct blob_reply *reply)
{
  struct upload_state *st = ctx;
  if (err != RPL_OK) {
    st->failed++;
    st->last = err;
    fprintf(stderr, "blob_tool: a write failed: %s (HTTP %ld %s, %u tries)\n", rpl_errname(err), reply->status,
            reply->error_code, reply->tries);
  }
}

static bool all_zero(const unsigned char *p, size_t len) { return p[0] == 0 && memcmp(p, p + 1, len - 1) == 0; }

static int cmd_upload(int argc, char **argv)
{
  if (argc < 4) {
    fprintf(stderr, "usage: blob_tool upload FILE CONTAINER BLOB [--skip-zero]\n");
    return 2;
  }
  bool skip_zero = argc > 4 && strcmp(argv[4], "--skip-zero") == 0;
  int fd = open(argv[1], O_RDONLY);
  struct stat stbuf;
  if (fd < 0 || fstat(fd, &stbuf) != 0 || stbuf.st_size == 0 || stbuf.st_size % 512) {
    fprintf(stderr, "blob_tool: %s: not a readable file of a multiple of 512 bytes\n", argv[1]);
    return 1;
  }
  size_t size = (size_t)stbuf.st_size;
  const unsigned char *img = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (img == MAP_FAILED) {
    perror("mmap");
    return 1;
  }
  struct blob_client *client;
  if (open_client(&client))
    return 1;
  struct blob_reply reply;
  rpl_err err = blob_container_create(client, argv[2], &reply);
  if (err != RPL_OK && err != RPL_E_BLOB_EXISTS) {
    fprintf(stderr, "blob_tool: create container: %s\n", rpl_strerror(err));
    return 1;
  }
  double t0 = now_s(), c0 = cpu_s();
  err = blob_create_page_blob(client, argv[2], argv[3], size, 0, false, &reply);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: create blob: %s\n", rpl_strerror(err));
    return 1;
  }
  struct upload_state st = {0};
  size_t sent = 0, chunks = 0;
  for (size_t off = 0; off < size && st.failed == 0; off += CHUNK) {
    size_t len = size - off < CHUNK ? size - off : CHUNK;
    if (skip_zero && all_zero(img + off, len))
      continue; /* a new page blob reads as zeros already */
    /* Keep the queue short: the client runs N in flight; a little more keeps them all busy. */
    while (blob_client_pending(client) >= 32 && st.failed == 0)
      if (blob_client_poll(client, 1000) != RPL_OK)
        return 1;
    err = blob_put_page_async(client, argv[2], argv[3], off, img + off, len, NULL, upload_done, &st);
    if (err != RPL_OK) {
      fprintf(stderr, "blob_tool: queue write: %s\n", rpl_strerror(err));
      return 1;
    }
    sent += len;
    chunks++;
  }
  if (blob_client_drain(client) != RPL_OK || st.failed) {
    fprintf(stderr, "blob_tool: upload failed: %s\n", rpl_strerror(st.last));
    return 1;
  }
  double secs = now_s() - t0, cpu = cpu_s() - c0;
  struct blob_stats s;
  blob_client_stats(client, &s);
  printf("uploaded image_bytes=%zu sent_bytes=%zu chunks=%zu seconds=%.3f cpu_seconds=%.3f requests=%llu retries=%llu connections=%llu\n",
         size, sent, chunks, secs, cpu, (unsigned long long)s.requests, (unsigned long long)s.retries,
         (unsigned long long)s.connections);
  blob_client_close(client);
  return 0;
}

static int cmd_download(int argc, char **argv)
{
  if (argc < 4) {
    fprintf(stderr, "usage: blob_tool download CONTAINER BLOB FILE\n");
    return 2;
  }
  struct blob_client *client;
  if (open_client(&client))
    return 1;
  struct blob_reply reply;
  rpl_err err = blob_get_properties(client, argv[1], argv[2], NULL, &reply);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: properties: %s\n", rpl_strerror(err));
    return 1;
  }
  FILE *out = fopen(argv[3], "wb");
  unsigned char *buf = malloc(CHUNK);
  if (!out || !buf)
    return 1;
  for (int64_t off = 0; off < reply.content_length; off += CHUNK) {
    size_t len = (size_t)(reply.content_length - off < CHUNK ? reply.content_length - off : CHUNK);
    struct blob_reply r2;
    err = blob_read(client, argv[1], argv[2], NULL, (uint64_t)off, buf, len, &r2);
    if (err != RPL_OK || fwrite(buf, 1, len, out) != len) {
      fprintf(stderr, "blob_tool: read at %lld: %s\n", (long long)off, rpl_strerror(err));
      return 1;
    }
  }
  free(buf);
  blob_client_close(client);
  return fclose(out) == 0 ? 0 : 1;
}

static int cmd_delete(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: blob_tool delete CONTAINER BLOB\n");
    return 2;
  }
  struct blob_client *client;
  if (open_client(&client))
    return 1;
  struct blob_reply reply;
  rpl_err err = blob_delete(client, argv[1], argv[2], NULL, &reply);
  blob_client_close(client);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: delete: %s\n", rpl_strerror(err));
    return 1;
  }
  return 0;
}

/* One line per snapshot of BLOB ("SNAPSHOT-ID METADATA;..."), then "blob SEQ LEASE-STATE METADATA;...". */
static int cmd_snapshots(int argc, char **argv)
{
  if (argc < 3) {
    fprintf(stderr, "usage: blob_tool snapshots CONTAINER BLOB\n");
    return 2;
  }
  struct blob_client *client;
  if (open_client(&client))
    return 1;
  struct blob_reply reply;
  struct blob_list l = {0};
  rpl_err err = blob_list_snapshots(client, argv[1], argv[2], &l, &reply);
  blob_client_close(client);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: list: %s\n", rpl_strerror(err));
    return 1;
  }
  for (size_t i = 0; i < l.count; i++) {
    for (char *p = l.items[i].metadata; *p; p++)
      if (*p == '\n')
        *p = ';';
    if (l.items[i].snapshot[0])
      printf("%s %s\n", l.items[i].snapshot, l.items[i].metadata[0] ? l.items[i].metadata : "-");
    else
      printf("blob %lld %s %s\n", (long long)l.items[i].sequence_number, l.items[i].lease_state,
             l.items[i].metadata[0] ? l.items[i].metadata : "-");
  }
  blob_list_free(&l);
  return 0;
}

/* Lease Blob: acquire SECONDS | break, for tests of the appliance's lease. */
static int cmd_lease(int argc, char **argv)
{
  if (argc < 4) {
    fprintf(stderr, "usage: blob_tool lease CONTAINER BLOB acquire SECONDS|break\n");
    return 2;
  }
  struct blob_client *client;
  if (open_client(&client))
    return 1;
  struct blob_reply reply;
  bool brk = strcmp(argv[3], "break") == 0;
  rpl_err err = blob_lease(client, argv[1], argv[2], brk ? BLOB_LEASE_BREAK : BLOB_LEASE_ACQUIRE,
                           brk ? 0 : (argc > 4 ? atoi(argv[4]) : 15), NULL, &reply);
  blob_client_close(client);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: lease: %s (HTTP %ld %s)\n", rpl_errname(err), reply.status, reply.error_code);
    return 1;
  }
  printf("%s\n", reply.lease_id[0] ? reply.lease_id : "ok");
  return 0;
}

static int cmd_probe(void)
{
  struct blob_client *client;
  if (open_client(&client))
    return 1;
  rpl_err err = blob_client_probe(client);
  blob_client_close(client);
  if (err != RPL_OK) {
    fprintf(stderr, "blob_tool: probe: %s: %s\n", rpl_errname(err), rpl_detail(err));
    return 1;
  }
  printf("probe: ok\n");
  return 0;
}

/* Put Page of FILE (at most 4 MiB, whole pages) at OFFSET of an existing blob, without a lease. */
static int cmd_put(int argc, char **argv)
{
  if (argc < 5) {
    fprintf(stderr, "usage: blob_tool put CONTAINER BLOB OFFSET FILE\n");
    return 2;
  }
  static unsigned char buf[CHUNK];
  FILE *in = fopen(argv[4], "rb");
  size_t len = in ? fread(buf, 1, sizeof buf, in) : 0;
  if (in)
    fclose(in);
  if (len == 0 || len % 512) {
    fprintf(stderr, "blob_tool: %s: not a readable file of whole 512-byte pages (at most 4 MiB)\n", argv[4]);
    return 1;
  }
  struct blob_client *client;
  if (open_client(&client))
    return 1;
  struct upload_state st = {0};
  rpl_err err = blob_put_page_async(client, argv[1], argv[2], strtoull(argv[3], NULL, 10), buf, len, NULL, upload_done, &st);
  if (err == RPL_OK)
    err = blob_client_drain(client);
  blob_client_close(client);
  if (err != RPL_OK || st.failed) {
    fprintf(stderr, "blob_tool: put: %s\n", rpl_strerror(err ? err : st.last));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv)
{
  log_init("blob_tool", LOG_LVL_WARN);
  if (argc >= 2 && strcmp(argv[1], "upload") == 0)
    return cmd_upload(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "download") == 0)
    return cmd_download(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "delete") == 0)
    return cmd_delete(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "probe") == 0)
    return cmd_probe();
  if (argc >= 2 && strcmp(argv[1], "snapshots") == 0)
    return cmd_snapshots(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "lease") == 0)
    return cmd_lease(argc - 1, argv + 1);
  if (argc >= 2 && strcmp(argv[1], "put") == 0)
    return cmd_put(argc - 1, argv + 1);
  fprintf(stderr, "usage: blob_tool upload|download|delete|probe|snapshots|lease|put ...\n");
  return 2;
}
