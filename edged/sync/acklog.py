"""The sync log: who acked what, and when (`edged sync log`).

One JSON object per line in STATE_DIR/sync.log, so a technician can also read
it with `less`. Acks are coalesced: a sync client may ack every record, and
the log should say "head-office acked 4100..4711 between 18:02 and 18:03",
not hold a line per record. An open entry per consumer collects acks and is
written once it is FLUSH_EVERY old, when the consumer goes offline, and when
edged stops. Other entries (registered, removed, online, offline) are written
at the next tick.

The log is a diagnostic record, not the truth: the cursor file is. A power cut
can lose the last minute of it (never a cursor). A torn last line is skipped
when read, and the next write starts on a line of its own. The file is
rotated to sync.log.1 at MAX_BYTES; both are read.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

from ..journal.shapes import NUM, STR, Map

FLUSH_EVERY = 60.0  # seconds an open ack entry collects acks before it is written
MAX_BYTES = 4 << 20  # ~2 months at one entry per minute per consumer
_SHAPE = Map({"at": NUM, "consumer": STR, "event": STR})


class AckLog:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.open: dict[str, dict[str, Any]] = {}  # consumer -> the ack entry collecting acks
        self._queued: list[dict[str, Any]] = []  # complete entries not yet written

    def acked(self, consumer: str, old: int, new: int, at: float | None = None) -> None:
        at = time.time() if at is None else at
        entry = self.open.get(consumer)
        if entry is None:
            self.open[consumer] = {"at": at, "consumer": consumer, "event": "ack", "from": old + 1, "to": new,
                                   "acks": 1, "first_at": at}
        else:
            entry.update(at=at, to=new, acks=entry["acks"] + 1)

    def note(self, consumer: str, event: str, **fields: Any) -> None:
        """A line of its own (registered, removed, online, offline); the consumer's open acks go first."""
        self.close_entry(consumer)
        self._queued.append({"at": time.time(), "consumer": consumer, "event": event, **fields})

    def close_entry(self, consumer: str) -> None:
        entry = self.open.pop(consumer, None)
        if entry is not None:
            self._queued.append(entry)

    def take(self, everything: bool = False, now: float | None = None) -> list[dict[str, Any]]:
        """The lines to write now (on the event loop): queued ones and ack entries FLUSH_EVERY old
        (every open one with `everything`, when edged stops)."""
        now = time.time() if now is None else now
        for consumer, entry in list(self.open.items()):
            if everything or now - entry["first_at"] >= FLUSH_EVERY:
                self.close_entry(consumer)
        lines, self._queued = self._queued, []
        return lines

    def write(self, lines: list[dict[str, Any]]) -> None:
        """Append lines to the file (blocking: call it from a worker thread)."""
        if not lines:
            return
        data = "".join(json.dumps(e, sort_keys=True) + "\n" for e in lines).encode()
        try:
            if self.path.stat().st_size + len(data) > MAX_BYTES:
                os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        except FileNotFoundError:
            pass
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        try:
            if os.fstat(fd).st_size and not _ends_with_newline(self.path):
                data = b"\n" + data  # a line torn by a power cut stays one bad line, not two
            os.write(fd, data)
        finally:
            os.close(fd)

    def read_written(self) -> list[dict[str, Any]]:
        """The entries in the files, oldest first (blocking: a worker thread)."""
        out = []
        for path in (self.path.with_name(self.path.name + ".1"), self.path):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue  # torn by a power cut
                if _SHAPE.problem(entry, "entry") is None:  # a line of another shape is skipped like a torn one
                    out.append(entry)
        return out

    def unwritten(self) -> list[dict[str, Any]]:
        """What is not in the file yet (on the event loop)."""
        return self._queued + sorted((dict(e) for e in self.open.values()), key=lambda e: e["at"])


def select(entries: list[dict[str, Any]], consumer: str | None = None,
           since: float | None = None) -> list[dict[str, Any]]:
    return [e for e in entries if (consumer is None or e["consumer"] == consumer)
            and (since is None or e["at"] >= since)]


def last_acks(entries: list[dict[str, Any]]) -> dict[str, float]:
    """Per consumer, the time of its last ack on record (its `last_ack` after a restart)."""
    return {e["consumer"]: e["at"] for e in entries if e["event"] == "ack"}


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"
