#!/usr/bin/env python3
"""HTTP/2 floods against a release sluice, and what a probe client sees meanwhile.

For each attack, ATTACKERS connections (h2c, prior knowledge) send one kind of abusive frame
as fast as they can and reconnect whenever sluice cuts them; a probe client on its own
HTTP/1.1 keep-alive connection makes requests one after another the whole time. Prints, per
attack, the connections cut, the frames sent, and the probe's latency (median, p99, max)
against the same probe with no attack.

    SLUICE_BIN=target/release/sluice python3 bench/h2flood.py     # ATTACK_S=5 ATTACKERS=4
"""

import asyncio
import os
import statistics
import struct
import time

from sluice_proc import free_port, sluice

ATTACK_S = float(os.environ.get("ATTACK_S", "5"))
ATTACKERS = int(os.environ.get("ATTACKERS", "4"))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


SETTINGS = frame(4, 0, 0)
# :method GET, :scheme http, :path /, :authority bench.test (HPACK: three indexed fields and
# one literal without indexing).
HEADERS_BLOCK = b"\x82\x86\x84\x01\x0abench.test"


def ping_flood(_):
    return frame(6, 0, 0, b"\0" * 8) * 500


def settings_flood(_):
    return SETTINGS * 500


def window_update_flood(_):
    return frame(8, 0, 0, struct.pack(">I", 1)) * 500


def rapid_reset(state):
    out = []
    for _ in range(200):
        sid = state["next"]
        state["next"] += 2
        out.append(frame(1, 0x5, sid, HEADERS_BLOCK) + frame(3, 0, sid, struct.pack(">I", 8)))
    return b"".join(out)


def empty_data(state):
    if not state.get("open"):
        state["open"] = True
        return frame(1, 0x4, 1, HEADERS_BLOCK) + frame(0, 0, 1) * 500
    return frame(0, 0, 1) * 500


def continuation_flood(state):
    if not state.get("open"):
        state["open"] = True
        return frame(1, 0x1, 1, HEADERS_BLOCK) + frame(9, 0, 1, b"\x40\x01x\x01y") * 200
    return frame(9, 0, 1, b"\x40\x01x\x01y") * 200


ATTACKS = [
    ("PING flood", ping_flood),
    ("SETTINGS flood", settings_flood),
    ("WINDOW_UPDATE flood", window_update_flood),
    ("rapid reset", rapid_reset),
    ("empty DATA flood", empty_data),
    ("CONTINUATION flood", continuation_flood),
]



async def origin(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"s" * 100)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def attacker(port, make, until, stats):
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            continue
        state = {"next": 1}
        writer.write(PREFACE + SETTINGS)
        drain_reads = asyncio.create_task(reader.read(-1))
        try:
            while time.monotonic() < until and not drain_reads.done():
                batch = make(state)
                writer.write(batch)
                await writer.drain()
                stats["bytes"] += len(batch)
        except (ConnectionError, OSError):
            pass
        if time.monotonic() < until:
            stats["cut"] += 1
        drain_reads.cancel()
        writer.close()


async def probe(port, until):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    latencies = []
    while time.monotonic() < until:
        start = time.monotonic()
        writer.write(b"GET /p HTTP/1.1\r\nHost: bench.test\r\n\r\n")
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        await reader.readexactly(100)
        latencies.append((time.monotonic() - start) * 1000)
    writer.close()
    return latencies


def summary(lat):
    lat = sorted(lat)
    return f"{len(lat)} | {statistics.median(lat):.2f} | {lat[int(len(lat) * 0.99) - 1]:.2f} | {lat[-1]:.2f}"


async def main():
    oport = free_port()
    server = await asyncio.start_server(origin, "127.0.0.1", oport)
    try:
        async with sluice(oport) as pport:
            print("| attack | connections cut | MB sent | probe requests | median ms | p99 ms | max ms |")
            print("|---|---|---|---|---|---|---|")
            base = await probe(pport, time.monotonic() + ATTACK_S)
            print(f"| none | - | - | {summary(base)} |")
            for name, make in ATTACKS:
                until = time.monotonic() + ATTACK_S
                stats = {"cut": 0, "bytes": 0}
                tasks = [attacker(pport, make, until, stats) for _ in range(ATTACKERS)]
                lat, *_ = await asyncio.gather(probe(pport, until), *tasks)
                print(f"| {name} | {stats['cut']} | {stats['bytes'] / 1e6:.0f} | {summary(lat)} |")
    finally:
        server.close()

if __name__ == "__main__":
    asyncio.run(main())
