"""`edged bench fleet --tills N` for a chain: N lightweight tills (bench/simtill.py, a few hundred
to a process) through a real Mosquitto (passwords and the per-till ACL on the tills' listener,
head office's ingest on a listener of its own) into one `edged headoffice ingest` and a PostgreSQL
archive of the bench's own (fleet/localpg.py).

Figures, each from head office's archive (what head office knows, not what the tills believe):
  - connect: every till connected and said hello;
  - upstream: every till sending RECORDS sales at once, records/s until all are archived;
  - fan-out: one broadcast record from `outbox.put` until every till applied it, and one record
    for each till on its own channel;
  - reconnect storm: broker and ingest stopped (head office down) while the tills sell and head
    office queues a record for each till and one for all; both started again; until every till's
    watermark and positions are current;
  - memory: the broker's resident set and PostgreSQL's (proportional set over its processes),
    peak over the run, and the ingest's.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .. import identity
from ..day import archive, trust
from ..fleet import localpg, outbox
from ..fleet.localbroker import MOSQUITTO, LocalBroker, free_port, stop_process
from ..fleet.localpg import LocalPostgres
from ..fleet.localpki import Pki
from .common import edged_argv, scratch
from .procstat import Cpu, Memory, kib, postgres_pids

PER_PROCESS = 250  # simulated tills per process
PASSWORD = "bench"
TILL_ACL = """\
pattern write edged/v1/till/%u/up
pattern write edged/v1/till/%u/status
pattern write edged/v1/till/%u/hello
pattern write edged/v1/till/%u/down-ack
pattern read edged/v1/till/%u/ack
pattern read edged/v1/till/%u/down
pattern read edged/v1/broadcast/down
"""


class _Workers:
    def __init__(self, names: list[str], port: int, stack: contextlib.ExitStack, log: Path, pki: Path | None) -> None:
        self.procs = []
        auth = ["--tls", str(pki)] if pki else ["--password", PASSWORD]
        for i in range(0, len(names), PER_PROCESS):
            with open(log, "ab") as err:
                p = subprocess.Popen([sys.executable, "-m", "edged.bench.simtill", "--port", str(port), *auth,
                                      *names[i:i + PER_PROCESS]], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=err, text=True)
            stack.callback(stop_process, p, 5)
            self.procs.append(p)

    def ask(self, op: str, **kw: object) -> dict[str, int]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(json.dumps({"op": op, **kw}) + "\n")
            p.stdin.flush()
        total: dict[str, int] = {}
        for p in self.procs:
            assert p.stdout is not None
            for k, v in json.loads(p.stdout.readline()).items():
                total[k] = total.get(k, 0) + v
        return total


def _until(what, timeout: float, every: float = 0.1) -> float | None:
    t0 = time.perf_counter()
    while not what():
        if time.perf_counter() - t0 > timeout:
            return None
        time.sleep(every)
    return time.perf_counter() - t0


class _Counter:
    """Head office's archive, asked by the bench on one connection of its own."""

    def __init__(self, where: str) -> None:
        self.db = archive.open_archive(where)

    def __call__(self, sql: str, params: tuple = ()) -> int:
        return int(self.db.execute(sql, params).fetchone()[0])


def run(tills: int, records: int, outage: float, where: str | None, tls: bool = False) -> int:
    if not os.path.exists(MOSQUITTO) or localpg.binaries() is None:
        print("edged bench fleet --tills N needs Mosquitto and a PostgreSQL server (Debian: mosquitto, postgresql)")
        return 1
    names = [f"sim-{n:05d}" for n in range(1, tills + 1)]
    with scratch(where) as tmp, contextlib.ExitStack() as stack:
        base = Path(tmp)
        memory = Memory()
        memory.start()
        stack.callback(memory.stopped.set)
        # Two listeners: the tills' (passwords, the per-till ACL) and head office's own.
        (base / "broker").mkdir()
        (base / "broker" / "acl").write_text(TILL_ACL)
        t0 = time.perf_counter()
        if tls:  # as in a chain: each till's certificate, its CN the till id (docs/FLEET.md, "The broker")
            pki = Pki(base / "pki")
            for n in names:
                pki.issue(n)
            cert, key = pki.issue("broker", server=True)
            auth = [f"cafile {pki.ca}", f"certfile {cert}", f"keyfile {key}", "require_certificate true",
                    "use_identity_as_username true", "use_username_as_clientid true"]
        else:
            pw = base / "broker" / "passwords"
            pw.write_text("".join(f"{n}:{PASSWORD}\n" for n in names))
            subprocess.run(["mosquitto_passwd", "-U", str(pw)], check=True)
            auth = [f"password_file {pw}"]
        made = time.perf_counter() - t0
        ho_port = free_port()
        broker = LocalBroker(base / "broker", ["per_listener_settings true", *auth,
                                               f"acl_file {base / 'broker' / 'acl'}", "allow_anonymous false",
                                               "max_queued_messages 100000", f"listener {ho_port} 127.0.0.1",
                                               "allow_anonymous true"], tls=tls)
        broker.start()
        stack.callback(broker.stop)
        pg = stack.enter_context(LocalPostgres(base / "postgres"))
        arch = pg.create_database("archive")
        memory.pids["PostgreSQL"] = postgres_pids(pg.root)
        t0 = time.perf_counter()
        db = archive.open_archive(arch)
        for n in names:
            raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            trust.enroll(db, n, identity.public_text(raw))
        db.close()
        print(f"edged bench fleet --tills {tills}: {tills} simulated tills ({-(-tills // PER_PROCESS)} processes) -> "
              f"Mosquitto ({'TLS, a client certificate per till' if tls else 'passwords'}, the per-till ACL) -> 1 "
              f"edged headoffice ingest -> PostgreSQL, under {base}; {'certificates' if tls else 'passwords'} made "
              f"in {made:.1f} s, tills enrolled in {time.perf_counter() - t0:.1f} s")

        def ingest() -> subprocess.Popen:
            with open(base / "ingest.log", "ab") as log:
                p = subprocess.Popen(edged_argv("headoffice", "ingest", "--archive", arch, "--broker",
                                                f"mqtt://127.0.0.1:{ho_port}", "--client-id", "bench-ingest"),
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            stack.callback(stop_process, p, 10)
            memory.pids["ingest"] = [p.pid]
            return p

        memory.pids["Mosquitto"] = [broker.proc.pid] if broker.proc else []
        ing = ingest()
        count = _Counter(arch)
        stack.callback(count.db.close)
        cpu = Cpu(memory, pg.root)
        cpu.begin()
        t0 = time.perf_counter()
        workers = _Workers(names, broker.port, stack, base / "tills.log", base / "pki" if tls else None)
        took = _until(lambda: count("SELECT count(*) FROM downstream WHERE channel='till'") >= tills, 300)
        if took is None:
            said = count("SELECT count(*) FROM downstream WHERE channel='till'")
            print(f"  not every till said hello within 300 s: {said} did; the tills: {workers.ask('stats')}")
            return 1
        print(f"  connect: all {tills} tills connected and said hello in {took:.1f} s (CPU s: {cpu.line()})")
        cpu.begin()

        # Upstream: every till selling at once.
        t0 = time.perf_counter()
        workers.ask("sell", n=records)
        through = "SELECT count(*) FROM online WHERE archived_through >= ?"
        took = _until(lambda: count(through, (records,)) >= tills, 600, 0.2)
        if took is None:
            print(f"  upstream: not all archived within 600 s ({count(through, (records,))} tills done)")
            return 1
        print(f"  upstream: {tills} tills sending {records} sales each at once: {tills * records / took:,.0f} "
              f"records/s archived ({tills * records:,} in {took:.1f} s; CPU s: {cpu.line()})")
        cpu.begin()

        # Fan-out: one record for every till, then one for each till on its own channel.
        db = archive.open_archive(arch)
        had = workers.ask("stats")["down_records"]
        t0 = time.perf_counter()
        pos = outbox.put(db, None, "prices.list", {"version": 1, "pad": "x" * 200}).pos
        applied = "SELECT count(*) FROM downstream WHERE channel=? AND acked >= ? AND till <> '*'"
        journaled = _until(lambda: workers.ask("stats")["down_records"] >= had + tills, 300, 0.05)
        took = _until(lambda: count(applied, ("broadcast", pos)) >= tills, 300, 0.05)
        took = None if took is None else time.perf_counter() - t0
        print(f"  fan-out: one broadcast record in all {tills} tills' journals "
              + (f"{journaled:.2f} s" if journaled is not None else "not within 300 s")
              + " after it was queued; head office had every till's ack after "
              + (f"{took:.2f} s" if took is not None else "more than 300 s"))
        t0 = time.perf_counter()
        for n in names:
            outbox.put(db, n, "order.web", {"order": f"W-{n}"})
        queued = time.perf_counter() - t0
        took = _until(lambda: count(applied, ("till", 1)) >= tills, 300, 0.05)
        print(f"  per till: one order for each of {tills} tills (queued in {queued:.1f} s) all applied "
              + (f"{queued + took:.1f} s after the first was queued" if took is not None else "after more than 300 s")
              + f" (CPU s of both: {cpu.line()})")

        # Head office down: broker and ingest stopped; the tills sell on; records queued for them.
        stop_process(ing, 10)
        broker.stop()
        time.sleep(1)
        workers.ask("sell", n=records // 4)
        for n in names:
            outbox.put(db, n, "order.web", {"order": f"W2-{n}"})
        pos = outbox.put(db, None, "prices.list", {"version": 2}).pos
        db.close()
        time.sleep(outage)
        t0 = time.perf_counter()
        broker.start()
        memory.pids["Mosquitto"] = [broker.proc.pid] if broker.proc else []
        ing = ingest()
        cpu.begin()
        total = records + records // 4

        def current() -> bool:
            return (count(through, (total,)) >= tills and count(applied, ("till", 2)) >= tills
                    and count(applied, ("broadcast", pos)) >= tills)

        connected = _until(lambda: workers.ask("stats")["connected"] >= tills, 600, 0.2)
        took = _until(current, 900, 0.2)
        if took is None:
            print("  reconnect storm: not current within 900 s")
            return 1
        took = time.perf_counter() - t0
        print(f"  reconnect storm after {outage:.0f} s down: all {tills} tills reconnected after {connected:.1f} s "
              f"(their back-off: 1-4 s doubling to 60 s), every watermark and position current after {took:.1f} s "
              f"({tills * records // 4:,} records archived and {tills + 1} records applied meanwhile; CPU s: "
              f"{cpu.line()})")
        print(f"  peak memory: {memory.line()}")
        print(f"  per simulated till (the bench's own processes): "
              f"{sum(kib(p.pid, 'Rss:') for p in workers.procs) / tills:,.0f} KiB")
    return 0
