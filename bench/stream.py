#!/usr/bin/env python3
"""Read-while-write: how soon requests coalesced on a cache miss get their first byte.

An origin on loopback answers GET /big with a Content-Length of SIZE, sends the head and the
first 64 KiB at once, then holds the rest for HOLD seconds. One client asks first; once its
first body byte has arrived, N-1 more ask for the same URL at once. Without read-while-write
they would wait for the whole object (HOLD seconds and more); with it they get the head and
the bytes so far from the leader's fill. Prints, for the waiters, the time from sending the
request to the first body byte (median, p90, max), and checks every client got SIZE bytes
and the origin saw one request.

    SLUICE_BIN=target/release/sluice python3 bench/stream.py      # N=100 SIZE=64MiB HOLD=1
"""

import asyncio
import os
import statistics
import time

from sluice_proc import free_port, sluice

N = int(os.environ.get("N", "100"))
SIZE = int(os.environ.get("SIZE", str(64 << 20)))
HOLD = float(os.environ.get("HOLD", "1"))
CHUNK = 64 << 10

origin_requests = 0



async def origin(reader, writer):
    global origin_requests
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if not head:
                return
            origin_requests += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\ncache-control: max-age=600\r\n"
                + f"content-length: {SIZE}\r\n\r\n".encode()
            )
            chunk = b"b" * CHUNK
            writer.write(chunk)
            await writer.drain()
            await asyncio.sleep(HOLD)
            for _ in range(SIZE // CHUNK - 1):
                writer.write(chunk)
                await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def client(port, first_byte):
    """Returns (seconds from request to first body byte, body bytes read)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    sent = time.monotonic()
    writer.write(b"GET /big HTTP/1.1\r\nHost: bench.test\r\nConnection: close\r\n\r\n")
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    got = len(await reader.readexactly(1))
    ttfb = time.monotonic() - sent
    if first_byte is not None:
        first_byte.set()
    while True:
        data = await reader.read(1 << 20)
        if not data:
            break
        got += len(data)
    writer.close()
    return ttfb, got, head


async def main():
    oport = free_port()
    server = await asyncio.start_server(origin, "127.0.0.1", oport)
    try:
        async with sluice(oport, '[cache]\ncapacity = "1GiB"\nmax_object_size = "64MiB"\n') as pport:
            first = asyncio.Event()
            leader = asyncio.create_task(client(pport, first))
            await asyncio.wait_for(first.wait(), 10)
            start = time.monotonic()
            waiters = [client(pport, None) for _ in range(N - 1)]
            results = await asyncio.wait_for(asyncio.gather(leader, *waiters), 120)
            total = time.monotonic() - start
    finally:
        server.close()
    lead, rest = results[0], results[1:]
    bad = [r[1] for r in results if r[1] != SIZE]
    assert not bad, f"short bodies: {bad[:5]}"
    assert origin_requests == 1, f"origin saw {origin_requests} requests"
    ttfb = sorted(r[0] * 1000 for r in rest)
    streamed = sum(b"collapsed" in r[2] for r in rest)
    print(
        f"N={N} size={SIZE >> 20} MiB hold={HOLD}s: leader first byte {lead[0] * 1000:.1f} ms; "
        f"{N - 1} waiters ({streamed} streamed) first byte median {statistics.median(ttfb):.1f} ms, "
        f"p90 {ttfb[int(len(ttfb) * 0.9) - 1]:.1f} ms, max {ttfb[-1]:.1f} ms; "
        f"all {N} bodies complete {total:.2f} s after the waiters asked; origin requests {origin_requests}"
    )


if __name__ == "__main__":
    asyncio.run(main())
