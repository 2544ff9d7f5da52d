"""What more than one benchmark uses: scratch directories, percentiles, the bench record, timed
loops, the journal filler, the slow disk and `edged` as a child process.

Kept here once so that every benchmark measures, reports and cleans up the same way.
"""
from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator

from ..journal.disk import RealDisk
from ..journal.service import Journal
from ..journal.store import Entry, Store

RECORD = {"total": 1250, "lines": [["Brot", 450], ["Käse", 800]], "pad": "x" * 120}  # ~200 bytes
SLICE = 0.25  # s: baseline and journal take turns this long, so drifts in the VM hit both alike


@contextlib.contextmanager
def scratch(where: str | None) -> Iterator[str]:
    """A temporary directory under `where` (default $TMPDIR), removed with all in it at the end."""
    base = tempfile.mkdtemp(prefix="edged-bench-", dir=where)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def pct(values: list[float], p: float) -> float:
    """The p-quantile of values in milliseconds."""
    return sorted(values)[min(len(values) - 1, int(len(values) * p))] * 1000 if values else float("nan")


def p50_p99(values: list[float], sep: str = "  ") -> str:
    """`p50 1.23 ms  p99 4.56 ms`, as every benchmark reports a latency."""
    return f"p50 {pct(values, 0.5):.2f} ms{sep}p99 {pct(values, 0.99):.2f} ms"


class Tally:
    def __init__(self) -> None:
        self.count, self.elapsed = 0, 0.0
        self.latencies: list[float] = []

    @property
    def rate(self) -> float:
        return self.count / self.elapsed if self.elapsed else 0.0


async def timed_until(stop: float, step: Callable[[int], Awaitable[object]], latencies: list[float]) -> int:
    """Await step(0), step(1), ... until perf_counter() passes stop, each one's time into latencies;
    how many ran."""
    n = 0
    while time.perf_counter() < stop:
        t0 = time.perf_counter()
        await step(n)
        latencies.append(time.perf_counter() - t0)
        n += 1
    return n


async def journal_slice(journal: Journal, count: int, seconds: float, tally: Tally) -> None:
    """`count` appenders on the journal API for `seconds`, one RECORD per append, into tally."""
    stop = time.perf_counter() + seconds

    def appender(k: int) -> Callable[[int], Awaitable[object]]:
        return lambda n: journal.append([Entry("sale", RECORD, tx_id=f"{k}-{tally.count}-{n}")])

    start = time.perf_counter()
    counts = await asyncio.gather(*(timed_until(stop, appender(k), tally.latencies) for k in range(count)))
    tally.count += sum(counts)
    tally.elapsed += time.perf_counter() - start


def build_journal(root: str, size_mb: int = 0, records: int = 0) -> int:
    """Fill a journal up to size_mb megabytes, or exactly `records` records; returns the count."""
    store = Store(RealDisk(root))
    store.open()
    count, target = 0, size_mb << 20
    while (count < records) if records else (sum(s.size for s in store.segments) < target):
        n = min(2000, records - count) if records else 2000
        store.append([[Entry("sale", RECORD, tx_id=f"b{count + i}") for i in range(n)]])
        count += n
    store.close()
    return count


class SlowDisk(RealDisk):
    """A RealDisk whose fdatasync takes at least `delay` more, as on a till's SD card."""

    def __init__(self, root: str, delay: float) -> None:
        super().__init__(root)
        self.delay = delay

    def fdatasync(self, handle: int) -> None:
        super().fdatasync(handle)
        time.sleep(self.delay)


def edged_argv(*args: str) -> list[str]:
    """`edged ARGS` run by this Python from this edged, as a child process."""
    return [sys.executable, "-m", "edged", *args]


@contextlib.contextmanager
def edged_run(config: str, state: str, sock: str, simulate: bool = False) -> Iterator[subprocess.Popen]:
    """A real daemon, `edged run`, as a child process (its output discarded), terminated at the end.
    Whether it has started is the caller's to wait for: it connects to `sock` as it needs to."""
    proc = subprocess.Popen(edged_argv("run", *(["--simulate"] if simulate else []), "--config", config,
                                       "--state-dir", state, "--socket", sock),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)
