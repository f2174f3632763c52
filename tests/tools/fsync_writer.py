#!/usr/bin/env python3
"""fsync_writer.py - a steady writer for point tests: rewrites N files of SIZE bytes in place (one
pwrite each, then fsync) at about RATE bytes/s, and logs every version as a JSON line
{"file", "version", "sha256", "start_ms", "synced_ms"} (wall clock ms) to LOG, flushed per line.

usage: fsync_writer.py DIR LOG [--files N] [--size BYTES] [--rate BYTES_PER_S]
"""
import argparse, hashlib, json, os, time

ap = argparse.ArgumentParser()
ap.add_argument("dir")
ap.add_argument("log")
ap.add_argument("--files", type=int, default=32)
ap.add_argument("--size", type=int, default=1 << 20)
ap.add_argument("--rate", type=int, default=12 << 20)
a = ap.parse_args()

log = open(a.log, "a", buffering=1)
fds = []
for i in range(a.files):
    path = os.path.join(a.dir, "f%02d" % i)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    data = os.urandom(a.size)
    os.pwrite(fd, data, 0)
    os.fsync(fd)
    fds.append(fd)
    now = int(time.time() * 1000)
    log.write(json.dumps({"file": "f%02d" % i, "version": 0, "sha256": hashlib.sha256(data).hexdigest(),
                          "start_ms": now, "synced_ms": now}) + "\n")
version = 0
t0 = time.monotonic()
written = 0
while True:
    version += 1
    for i, fd in enumerate(fds):
        data = os.urandom(a.size)
        start = int(time.time() * 1000)
        os.pwrite(fd, data, 0)  # one system call: a freeze sees the old or the new content, whole
        os.fsync(fd)
        synced = int(time.time() * 1000)
        log.write(json.dumps({"file": "f%02d" % i, "version": version, "sha256": hashlib.sha256(data).hexdigest(),
                              "start_ms": start, "synced_ms": synced}) + "\n")
        written += a.size
        ahead = written / a.rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
