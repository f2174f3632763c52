#!/usr/bin/env python3
"""flood.py - hostile load for the appliance's listener: TRICKLE plain TCP connections that send a
TLS handshake record one byte every 2 s, and HEADERS TLS connections (no client certificate) that
send a REGISTER frame header announcing a 16 MiB payload and then hold. Every connection that is
closed is opened again, from source addresses 127.0.0.2..127.0.0.9, until DURATION seconds pass.
Prints one JSON line: connections opened, closed by the peer, refused at connect.

usage: flood.py HOST PORT --trickle N --headers N --duration S
"""
import argparse, asyncio, json, ssl, struct, zlib

ap = argparse.ArgumentParser()
ap.add_argument("host")
ap.add_argument("port", type=int)
ap.add_argument("--trickle", type=int, default=2000)
ap.add_argument("--headers", type=int, default=500)
ap.add_argument("--duration", type=float, default=30)
a = ap.parse_args()
stats = {"opened": 0, "closed_by_peer": 0, "connect_failed": 0}
# A TLS 1.2 ClientHello record header and the start of its body: the server waits for the rest.
HELLO = bytes.fromhex("160301020001" "0001fc0303") + bytes(64)
# REGISTER (type 2) announcing 16 MiB; the CRC field is not checked before the length is.
HEADER = struct.pack("<4sBBHII", b"ARPL", 1, 2, 0, 16 << 20, 0)


async def trickle(i, stop):
    src = "127.0.0.%d" % (2 + i % 8)
    while not stop.is_set():
        try:
            r, w = await asyncio.open_connection(a.host, a.port, local_addr=(src, 0))
        except OSError:
            stats["connect_failed"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["opened"] += 1
        try:
            for b in HELLO:
                w.write(bytes([b]))
                await w.drain()
                try:
                    if await asyncio.wait_for(r.read(1), 2.0) == b"":
                        break
                except asyncio.TimeoutError:
                    pass
                if stop.is_set():
                    break
            stats["closed_by_peer"] += 1
        except (OSError, ConnectionError):
            stats["closed_by_peer"] += 1
        w.close()


async def header(i, stop):
    src = "127.0.0.%d" % (2 + i % 8)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    while not stop.is_set():
        try:
            r, w = await asyncio.wait_for(asyncio.open_connection(a.host, a.port, ssl=ctx, local_addr=(src, 0)), 15)
        except (OSError, asyncio.TimeoutError, ssl.SSLError):
            stats["connect_failed"] += 1
            await asyncio.sleep(0.5)
            continue
        stats["opened"] += 1
        try:
            w.write(HEADER + bytes(4096))
            await w.drain()
            while not stop.is_set():
                if await asyncio.wait_for(r.read(1), 60) == b"":
                    break
            stats["closed_by_peer"] += 1
        except (OSError, ConnectionError, asyncio.TimeoutError, ssl.SSLError):
            stats["closed_by_peer"] += 1
        w.close()


async def main():
    stop = asyncio.Event()
    tasks = [asyncio.create_task(trickle(i, stop)) for i in range(a.trickle)]
    tasks += [asyncio.create_task(header(i, stop)) for i in range(a.headers)]
    await asyncio.sleep(a.duration)
    stop.set()
    await asyncio.wait(tasks, timeout=5)
    print(json.dumps(stats), flush=True)

asyncio.run(main())
