"""What the chain bench's processes cost: peak resident memory (the broker's resident set,
PostgreSQL's proportional set summed over its processes, so shared buffers count once) and CPU
seconds per phase, from /proc."""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


class Memory(threading.Thread):
    """Peak resident memory of the broker, PostgreSQL (PSS summed over its processes: shared
    buffers counted once) and the ingest, sampled twice a second."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: dict[str, list[int]] = {}
        self.peak: dict[str, int] = {}
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(0.5):
            for what, pids in list(self.pids.items()):
                total = sum(kib(pid, "Pss:" if what == "PostgreSQL" else "Rss:") for pid in pids)
                self.peak[what] = max(self.peak.get(what, 0), total)

    def line(self) -> str:
        return ", ".join(f"{k} {v / 1024:,.0f} MiB" for k, v in self.peak.items())


def kib(pid: int, field: str) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            return next((int(line.split()[1]) for line in f if line.startswith(field)), 0)
    except OSError:
        return 0


def postgres_pids(root: Path | None) -> list[int]:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        assert root is not None
        main = int((root / "data" / "postmaster.pid").read_text().split()[0])
        children = []
        for d in os.listdir("/proc"):
            if d.isdigit():
                with contextlib.suppress(OSError), open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == main:
                        children.append(int(d))
        return [main, *children]
    return []




def cpu(pids: list[int]) -> float:
    """CPU seconds (user and system) these processes used so far."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError, ValueError, IndexError), open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICK


class Cpu:
    """CPU seconds per component over a phase (PostgreSQL's processes looked up again at each end:
    a new connection is a new process)."""

    def __init__(self, memory: Memory, pg_root: Path | None) -> None:
        self.memory, self.pg_root = memory, pg_root
        self.start: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        pids = dict(self.memory.pids)
        pids["PostgreSQL"] = postgres_pids(self.pg_root)
        return {k: cpu(v) for k, v in pids.items()}

    def begin(self) -> None:
        self.start = self._now()

    def line(self) -> str:
        now = self._now()
        return ", ".join(f"{k} {now[k] - self.start.get(k, 0):.1f}" for k in sorted(now))
