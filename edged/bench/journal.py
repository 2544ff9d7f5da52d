"""`edged bench journal`: the journal's figures beside baselines measured in the same run.

Baselines: raw write+fdatasync of one record, and SQLite in WAL mode with
synchronous=FULL, one row per transaction. These machines are noisy, so the
ratios matter more than the absolute numbers.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time

from ..journal import frame as fr
from ..journal.disk import RealDisk
from ..journal.service import Journal
from ..journal.store import Store
from ..journal.verify import verify
from .common import RECORD, SLICE, SlowDisk, Tally, build_journal, journal_slice, p50_p99, scratch


def _disk(root: str, delay: float) -> RealDisk:
    return SlowDisk(root, delay) if delay else RealDisk(root)


def frame_size() -> int:
    """Bytes one bench record takes in a segment, header included."""
    payload = fr.payload_of("sale", RECORD, "0-0", None, None)
    return len(fr.encode(1, 0, payload, 1, 1, fr.GENESIS)[0])


def raw_slice(fd: int, data: bytes, seconds: float, delay: float, tally: Tally) -> None:
    """The baseline: the same bytes per record as the journal writes, written and fdatasynced."""
    start = time.perf_counter()
    end = start + seconds
    while time.perf_counter() < end:
        os.write(fd, data)
        os.fdatasync(fd)
        if delay:
            time.sleep(delay)
        tally.count += 1
    tally.elapsed += time.perf_counter() - start


def sqlite_full(root: str, seconds: float) -> float:
    db = sqlite3.connect(os.path.join(root, "bench.sqlite"), isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE r (seq INTEGER PRIMARY KEY, body BLOB)")
    data = os.urandom(200)
    n, end = 0, time.perf_counter() + seconds
    start = time.perf_counter()
    while time.perf_counter() < end:
        db.execute("BEGIN")
        db.execute("INSERT INTO r (body) VALUES (?)", (data,))
        db.execute("COMMIT")
        n += 1
    db.close()
    return n / (time.perf_counter() - start)


async def measure(root: str, seconds: float, delay: float) -> tuple[Tally, dict[int, Tally]]:
    """Raw fdatasync and the journal with 1 and 16 appenders, taking turns slice by slice."""
    raw = Tally()
    tallies = {1: Tally(), 16: Tally()}
    journals = {n: Journal(Store(_disk(os.path.join(root, f"j{n}"), delay))) for n in tallies}
    for journal in journals.values():
        await journal.start()
    fd = os.open(os.path.join(root, "raw"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    data = os.urandom(frame_size())
    try:
        for _ in range(max(1, round(seconds / SLICE))):
            raw_slice(fd, data, SLICE, delay, raw)
            for n, journal in journals.items():
                await journal_slice(journal, n, SLICE, tallies[n])
    finally:
        os.close(fd)
        for journal in journals.values():
            await journal.stop()
    return raw, tallies


def run(seconds: float, flush_delay_ms: float, startup_mb: int, where: str | None) -> int:
    delay = flush_delay_ms / 1000
    with scratch(where) as base:
        print(f"edged bench journal: {seconds:g} s per figure in {base}; raw and journal take turns "
              f"in {SLICE:g} s slices"
              + (f", simulated flush delay {flush_delay_ms:g} ms" if delay else ""))
        raw, tallies = asyncio.run(measure(base, seconds, delay))
        print(f"  raw write+fdatasync of {frame_size()} B (baseline)  {raw.rate:>10,.0f} records/s")
        sql = None
        if not delay:
            sql = sqlite_full(base, seconds)
            print(f"  SQLite WAL synchronous=FULL, 1 row/tx   {sql:>10,.0f} records/s")
        for count, tally in tallies.items():
            print(f"  edged journal, {count:>2} appender(s)           {tally.rate:>10,.0f} records/s   "
                  f"ack {p50_p99(tally.latencies)}")
        one, sixteen = tallies[1].rate, tallies[16].rate
        print(f"  ratios: 1 appender / raw = {one / raw.rate:.2f} (target >= 0.7)" + (
              f";  16 appenders / SQLite = {sixteen / sql:.1f} (target >= 3)" if sql else "")
              + f";  16 / 1 appender = {sixteen / one:.1f}" + (" (target >= 10)" if delay else ""))
        if startup_mb:
            big = os.path.join(base, "big")
            t0 = time.perf_counter()
            records = build_journal(big, startup_mb)
            print(f"  built a {startup_mb} MB journal of {records:,} records in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            store = Store(RealDisk(big))
            store.open(load_index=False)  # as the daemon opens it
            opened = time.perf_counter() - t0
            t0 = time.perf_counter()
            store.load_tx_index()
            indexed = time.perf_counter() - t0
            store.close()
            print(f"  startup (open, recovery scan of the active segment): {opened:.3f} s (target <= 1 s)")
            print(f"  then, in the background, the tx-id index of {len(store.segments) - 1} sealed segments: "
                  f"{indexed:.3f} s (an append with a new tx_id waits for it only in that time)")
            t0 = time.perf_counter()
            report = verify(RealDisk(big))
            took = time.perf_counter() - t0
            print(f"  verify: {report.records:,} records in {took:.1f} s = {report.records / took:,.0f} records/s "
                  f"(target >= 300,000){'' if report.ok else '  PROBLEMS: ' + str(report.problems[:3])}")
        return 0

