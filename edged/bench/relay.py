"""`edged bench relay`: the socket's figures against a real daemon process.

A journal of N records is built first, then `edged run --simulate` serves it
and this process plays the clients: a sync client replaying the whole
journal, a live subscriber timing append-ack -> record event, 32 appending
clients (beside the in-process journal rate from the same run), and append
latency with hostile clients attached.
"""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable

import msgpack

from ..client import Client
from ..journal.disk import RealDisk
from ..journal.service import Journal
from ..journal.store import Store
from ..relay import framing
from .common import RECORD, SLICE, Tally, build_journal, edged_run, journal_slice, p50_p99, scratch, timed_until


def wait_listening(proc: subprocess.Popen, sock: str) -> None:
    """Until the daemon accepts connections on sock: it has built its journal's index by then."""
    deadline = time.time() + 60
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock)
            return
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise SystemExit("edged bench relay: the daemon did not start") from None
            time.sleep(0.05)


def replay(sock_path: str, total: int) -> float:
    """Subscribe from seq 1 and read `total` records as a lean sync client would; records/s."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "bench-replay"}))
    s.sendall(framing.encode({"op": "subscribe", "id": 2, "consumer": "bench", "from": 1, "window": 50_000}))
    unpacker = msgpack.Unpacker(raw=False)
    count, pending_head, next_id = 0, b"", 3
    t0 = time.perf_counter()
    while count < total:
        data = s.recv(1 << 20)
        if not data:
            raise SystemExit("edged bench relay: the daemon closed the replay connection")
        data = pending_head + data
        pos = 0
        # Strip the 4-byte length prefixes: msgpack's streaming unpacker takes the bodies.
        bodies = []
        while pos + 4 <= len(data):
            (n,) = framing.HEADER.unpack_from(data, pos)
            if pos + 4 + n > len(data):
                break
            bodies.append(data[pos + 4:pos + 4 + n])
            pos += 4 + n
        pending_head = data[pos:]
        unpacker.feed(b"".join(bodies))
        for msg in unpacker:
            if msg.get("event") == "record":
                count += 1
                if count % 10_000 == 0:
                    s.sendall(framing.encode({"op": "ack", "id": next_id, "consumer": "bench", "seq": msg["seq"]}))
                    next_id += 1
    took = time.perf_counter() - t0
    s.close()
    return total / took


async def live_latency(sock_path: str, samples: int) -> tuple[list[float], list[float], list[float]]:
    """Per append at one client, seen by a live subscriber on another: (ack -> event, the
    append's own round trip, request sent -> event). An event before the ack counts as 0."""
    async with await Client.connect(sock_path, "bench-live-sub") as sub, \
            await Client.connect(sock_path, "bench-live-pos") as pos:
        start = (await pos.request("status"))["journal"]["last_seq"] + 1
        await sub.request("subscribe", consumer="bench-live", **{"from": start}, window=100_000)
        after_ack, round_trip, to_event = [], [], []
        for i in range(samples):
            arrived: list[float] = []

            async def wait_event(arrived: list[float] = arrived) -> None:  # this turn's list
                await sub.next_event(10)
                arrived.append(time.perf_counter())
            waiter = asyncio.create_task(wait_event())
            sent = time.perf_counter()
            await pos.request("append", records=[{"kind": "live", "body": i}])
            acked = time.perf_counter()
            await waiter
            after_ack.append(max(arrived[0] - acked, 0.0))
            round_trip.append(acked - sent)
            to_event.append(arrived[0] - sent)
        return after_ack, round_trip, to_event


async def appenders(sock_path: str, count: int, seconds: float) -> tuple[float, list[float]]:
    clients = [await Client.connect(sock_path, f"bench-pos{k}") for k in range(count)]
    latencies: list[float] = []
    stop = time.perf_counter() + seconds

    def appender(c: Client) -> Callable[[int], Awaitable[object]]:
        return lambda n: c.request("append", records=[{"kind": "sale", "body": RECORD}])
    t0 = time.perf_counter()
    total = sum(await asyncio.gather(*(timed_until(stop, appender(c), latencies) for c in clients)))
    rate = total / (time.perf_counter() - t0)
    for c in clients:
        await c.close()
    return rate, latencies


async def hostile(sock_path: str) -> list:
    """200 idle connections, a half-sent frame, a subscriber that never acks, one that never reads."""
    held = [await Client.connect(sock_path, f"idle{k}") for k in range(200)]
    staller = socket.socket(socket.AF_UNIX)
    staller.connect(sock_path)
    staller.sendall(framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "staller"}) + b"\0\0\1")
    never_acks = await Client.connect(sock_path, "never-acks")
    await never_acks.request("subscribe", consumer="never-acks", **{"from": 1}, window=1000)
    deaf = socket.socket(socket.AF_UNIX)
    deaf.connect(sock_path)
    deaf.sendall(framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "deaf"})
                 + framing.encode({"op": "subscribe", "id": 2, "consumer": "deaf", "from": 1, "window": 100_000}))
    return [*held, never_acks, staller, deaf]


async def in_process_rate(root: str, count: int, seconds: float) -> float:
    journal = Journal(Store(RealDisk(root)))
    await journal.start()
    tally = Tally()
    for _ in range(max(1, round(seconds / SLICE))):
        await journal_slice(journal, count, SLICE, tally)
    await journal.stop()
    return tally.rate


def run(records: int, seconds: float, where: str | None) -> int:
    with scratch(where) as base:
        state, sock = os.path.join(base, "state"), os.path.join(base, "s.sock")
        print(f"edged bench relay: a journal of {records:,} records, a daemon process, clients here ({base})")
        t0 = time.perf_counter()
        built = build_journal(os.path.join(state, "journal"), 0, records)
        print(f"  built {built:,} records in {time.perf_counter() - t0:.1f} s")
        cfg = os.path.join(state, "bench.toml")
        with open(cfg, "w") as f:
            f.write("[daemon]\nmax_connections = 256\n")  # room for the 200 idle clients
        with edged_run(cfg, state, sock, simulate=True) as proc:
            wait_listening(proc, sock)
            return figures(proc, sock, built, os.path.join(base, "inproc"), seconds)


def figures(proc: subprocess.Popen, sock: str, built: int, inproc_dir: str, seconds: float) -> int:
    """Every figure but the build, printed as measured, against the daemon `proc` serving sock."""
    rate = replay(sock, built)
    print(f"  catch-up replay to one subscriber     {rate:>10,.0f} records/s (target >= 100,000)")
    after_ack, round_trip, to_event = asyncio.run(live_latency(sock, 1000))
    print(f"  live subscriber: append ack -> record event {p50_p99(after_ack)} "
          f"(target p99 <= 2 ms on top of the flush)")
    print(f"     (append round trip {p50_p99(round_trip, ' ')}; append sent -> event {p50_p99(to_event, ' ')})")
    rate32, lat32 = asyncio.run(appenders(sock, 32, seconds))
    inproc = asyncio.run(in_process_rate(inproc_dir, 32, seconds))
    print(f"  32 clients appending over the socket  {rate32:>10,.0f} records/s   ack {p50_p99(lat32)}")
    print(f"  32 appenders in-process (journal API) {inproc:>10,.0f} records/s   socket/in-process = "
          f"{rate32 / inproc:.2f}")

    async def quiet_and_hostile() -> tuple[list[float], list[float]]:
        _, quiet = await appenders(sock, 1, seconds)
        attached = await hostile(sock)
        _, loud = await appenders(sock, 1, seconds)
        for c in attached:
            if isinstance(c, Client):
                await c.close()
            else:
                c.close()
        return quiet, loud
    quiet, loud = asyncio.run(quiet_and_hostile())
    print(f"  1 appender, quiet: ack {p50_p99(quiet)};  with 200 idle clients, a stalled half frame, "
          f"a non-acking and a non-reading subscriber: {p50_p99(loud)}")
    if proc.poll() is not None:
        print("  the daemon died during the bench")
        return 1
    return 0
