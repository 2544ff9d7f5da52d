"""`edged bench fleet`: simulated tills online to head office through a real Mosquitto, beside the
archive's own insert rate measured in the same run.

Each till is a real `edged run --simulate` with its own `edged relay`, all publishing to one
Mosquitto on loopback; one `edged headoffice ingest` writes the archive: PostgreSQL (a server of
the bench's own, fleet/localpg.py) or SQLite. The figures: append -> committed at head office (the
time from the POS app's append until head office's ack for it is seen on the broker), records/s
archived with every till appending at once beside the same rows written straight into the same
kind of archive by one process (the baseline: PostgreSQL's COPY, or SQLite's inserts in
transactions of 5,000), and the catch-up of a till that comes back with a long outage's records in
its journal.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from ..client import Client
from ..day import archive, trust
from ..fleet import localpg, wire
from ..fleet.localbroker import MOSQUITTO, LocalBroker, stop_process
from ..fleet.localpg import LocalPostgres
from .common import RECORD, build_journal, edged_argv, edged_run, p50_p99, scratch


class _Acks:
    """Head office's acks as the broker carries them: the highest seq archived per till, and when."""

    def __init__(self, url: str) -> None:
        self.through: dict[str, int] = {}
        self.changed = threading.Condition()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-acks",
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.on_message = self._message
        host, port = url.removeprefix("mqtt://").split(":")
        self.client.on_connect = lambda c, u, f, r, p: c.subscribe(f"{wire.PREFIX}/+/ack", 1)
        self.client.connect(host, int(port))
        self.client.loop_start()

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        ack = wire.decode_ack(bytes(msg.payload))
        with self.changed:
            self.through[ack.till] = max(self.through.get(ack.till, 0), ack.archived_through)
            self.changed.notify_all()

    def wait(self, till: str, seq: int, timeout: float) -> float | None:
        """When head office's ack reached seq for till (perf_counter), or None after timeout."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while self.through.get(till, 0) < seq:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.changed.wait(left)
        return time.perf_counter()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class _Till:
    def __init__(self, base: Path, n: int, sockets: Path) -> None:
        self.name = f"bench-till-{n}"
        self.root = base / self.name
        self.root.mkdir()
        # Sockets in a short directory of their own: a unix socket path holds at most 107 bytes.
        self.state, self.sock, self.cfg = self.root / "state", str(sockets / f"{n}.sock"), self.root / "edged.toml"
        self.cfg.write_text(f'till_id = "{self.name}"\n')

    def public_key(self, timeout: float = 60) -> str:
        path = self.state / "identity" / "identity.json"
        deadline = time.monotonic() + timeout
        while not (path.exists() and os.path.exists(self.sock)):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: edged did not start within {timeout:g} s")
            time.sleep(0.05)
        return str(json.loads(path.read_text())["public_key"])


def _spawn(stack: contextlib.ExitStack, args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "ab") as out:
        proc = subprocess.Popen(edged_argv(*args), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    stack.callback(stop_process, proc, 15)
    return proc


async def _append(sock: str, n: int, per_request: int = 100) -> int:
    async with await Client.connect(sock, "bench-pos") as pos:
        last = 0
        for i in range(0, n, per_request):
            r = await pos.request("append", records=[{"kind": "sale", "body": RECORD}
                                                     for _ in range(min(per_request, n - i))])
            last = r["records"][-1]["seq"]
        return last


def _baseline(where: str, rows: int) -> float:
    """Rows/s of the same records written straight into a new archive by one process, in
    transactions of 5,000 (PostgreSQL: by COPY): what the archive itself can take."""
    db = archive.open_archive(where)
    frame = b"\0" * 260  # a bench sale's frame is about this long
    chain = bytes(32)
    t0 = time.perf_counter()
    for first in range(1, rows + 1, 5000):
        db.begin("baseline")
        db.insert("records", [("baseline", s, chain, 0, "sale", "", frame)
                              for s in range(first, min(first + 5000, rows + 1))])
        db.commit()
    rate = rows / (time.perf_counter() - t0)
    db.close()
    return rate


def run(tills: int, records: int, samples: int, catch_up: int, where: str | None, backend: str,
        ingests: int = 1) -> int:
    if not os.path.exists(MOSQUITTO):
        print(f"edged bench fleet needs Mosquitto ({MOSQUITTO}: the Debian package mosquitto)")
        return 1
    if backend == "postgresql" and localpg.binaries() is None:
        print(f"edged bench fleet --backend postgresql needs a PostgreSQL server ({localpg.BINARIES}: the Debian "
              "package postgresql), or use --backend sqlite")
        return 1
    with scratch(where) as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        broker = stack.enter_context(LocalBroker(base / "broker"))
        if backend == "postgresql":
            pg = stack.enter_context(LocalPostgres(base / "postgres"))
            arch, baseline = pg.create_database("archive"), pg.create_database("baseline")
        else:
            arch, baseline = str(base / "archive"), str(base / "baseline")
        print(f"edged bench fleet: {tills} tills (edged + edged relay each) -> Mosquitto {broker.url} -> "
              f"{ingests} edged headoffice ingest{'s' if ingests > 1 else ''} -> "
              f"{'PostgreSQL' if backend == 'postgresql' else 'SQLite'} archive, under {base}")
        sockets = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ebf-")))
        shop = [_Till(base, n, sockets) for n in range(1, tills + 1)]
        for t in shop:
            stack.enter_context(edged_run(str(t.cfg), str(t.state), t.sock, simulate=True))
        db = archive.open_archive(arch)
        for t in shop:
            trust.enroll(db, t.name, t.public_key())
        db.close()
        for n in range(1, ingests + 1):  # one shared subscription: each batch goes to one of them
            ingest_log = base / f"ingest-{n}.log"
            _spawn(stack, ["headoffice", "ingest", "--archive", arch, "--broker", broker.url,
                           "--client-id", f"bench-ingest-{n}"], ingest_log)
            deadline = time.monotonic() + 30
            while "mqtt: subscribed" not in (ingest_log.read_text() if ingest_log.exists() else ""):
                if time.monotonic() > deadline:
                    print(f"  ingest {n} did not subscribe within 30 s")
                    return 1
                time.sleep(0.05)
        acks = _Acks(broker.url)
        stack.callback(acks.close)
        for t in shop:
            _spawn(stack, ["relay", "--config", str(t.cfg), "--broker", broker.url, "--socket", t.sock,
                           "--state", str(t.root / "relay-state")],
                   t.root / "relay.log")

        # Online: one sale at a time, append -> head office's ack for it.
        latencies = []
        for i in range(samples):
            t = shop[i % tills]
            t0 = time.perf_counter()
            seq = asyncio.run(_append(t.sock, 1, 1))
            done = acks.wait(t.name, seq, 30)
            if done is None:
                print(f"  {t.name}: seq {seq} not acknowledged by head office within 30 s")
                return 1
            latencies.append(done - t0)
        print(f"  online, one sale at a time: append -> committed at head office {p50_p99(latencies)} "
              f"({samples} sales; target p99 <= 50 ms)")

        # Every till appending at once.
        t0 = time.perf_counter()

        def burst(t: _Till) -> int:
            return asyncio.run(_append(t.sock, records))
        lasts: dict[str, int] = {}
        threads = [threading.Thread(target=lambda t=t: lasts.__setitem__(t.name, burst(t))) for t in shop]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        appended = time.perf_counter() - t0  # the tills' own pace: a ceiling for what can be archived
        for t in shop:
            if acks.wait(t.name, lasts[t.name], 300) is None:
                print(f"  {t.name}: not all archived within 300 s")
                return 1
        elapsed = time.perf_counter() - t0
        rate = tills * records / elapsed
        base_rate = _baseline(baseline, tills * records)
        how = "by COPY" if backend == "postgresql" else "inserted 5,000 to a transaction"
        print(f"  {tills} tills appending {records:,} sales each at once: {rate:,.0f} records/s archived "
              f"(append to head office's ack); the same rows {how} by one process: {base_rate:,.0f} rows/s: "
              f"{rate / base_rate:.2f}x (target >= 0.5x)")
        print(f"    the tills' appends (fdatasync each) ended after {appended:.1f} s of {elapsed:.1f} s "
              f"({tills * records / appended:,.0f} records/s appended, relays and head office running beside)")

        # A till back after a long outage.
        if catch_up:
            late = _Till(base, tills + 1, sockets)
            t0 = time.perf_counter()
            build_journal(str(late.state / "journal"), 0, catch_up)
            print(f"  a till back after an outage: {catch_up:,} records in its journal (built in "
                  f"{time.perf_counter() - t0:.1f} s)")
            stack.enter_context(edged_run(str(late.cfg), str(late.state), late.sock, simulate=True))
            db = archive.open_archive(arch)
            trust.enroll(db, late.name, late.public_key(300))
            db.close()
            t0 = time.perf_counter()
            _spawn(stack, ["relay", "--config", str(late.cfg), "--broker", broker.url, "--socket", late.sock,
                           "--state", str(late.root / "relay-state")],
                   late.root / "relay.log")
            if acks.wait(late.name, catch_up, 1800) is None:
                print("  the catch-up did not finish within 30 minutes")
                return 1
            took = time.perf_counter() - t0
            print(f"    caught up in {took:.1f} s: {catch_up / took:,.0f} records/s from relay start to head "
                  f"office's last ack (target: 1,000,000 in <= 120 s)")
        db = archive.open_archive(arch)
        (n,) = db.execute("SELECT count(*) FROM records").fetchone()
        db.close()
        print(f"  the archive holds {n:,} records")
    return 0
