"""The journal as a daemon part: group commit on one worker thread, cursors,
retention, and live delivery to subscribers.

Every Store call runs on the `journal` thread. Appends queue up while a flush
is in progress and the next flush takes them all (one fdatasync for many
clients); an idle journal flushes a lone append at once.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import logging
from typing import Any, Callable, Iterator

from . import frame as fr
from .store import Appended, Entry, JournalError, Store

log = logging.getLogger("edged.journal")
CACHE = 10_000  # recent records kept in memory for live subscribers
RETENTION_EVERY = 3600.0


class Journal:
    name = "journal"

    def __init__(self, store: Store, *, min_retention_days: float = 30.0,
                 on_event: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.store = store
        self.min_retention_us = int(min_retention_days * 86400e6)
        self.on_event = on_event or (lambda event: None)
        self.cursors: dict[str, int] = {}
        self.last_seq = 0
        self.first_seq = 1
        self._queue: list[tuple[list[Entry], asyncio.Future]] = []
        self._wake = asyncio.Event()
        self._new = asyncio.Event()
        self._cache: collections.deque[fr.Record] = collections.deque(maxlen=CACHE)
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._tasks: list[asyncio.Task] = []
        self._warned: set[str] = set()
        self.flushes = 0

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    async def start(self) -> None:
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="journal")
        await self._run(self.store.open)
        self.cursors = await self._run(self.store.load_cursors)
        self.last_seq, self.first_seq = self.store.last_seq, self.store.first_seq
        self._tasks = [asyncio.create_task(self._commit_loop(), name="journal-commit"),
                       asyncio.create_task(self._retention_loop(), name="journal-retention")]
        log.info("journal open: seq %d..%d in %d segments%s", self.first_seq, self.last_seq,
                 len(self.store.segments), f"; {self.store.read_only}" if self.store.read_only else "")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for _, fut in self._queue:
            if not fut.done():
                fut.set_exception(JournalError("journal_unavailable", "edged is stopping"))
        if self._worker:
            await self._run(self.store.close)
            self._worker.shutdown(wait=True)

    def healthy(self) -> bool:
        return bool(self._tasks) and not any(t.done() for t in self._tasks)

    def info(self) -> dict[str, Any]:
        state = "degraded" if self.store.problems else ("read_only" if self.store.read_only else "ok")
        info: dict[str, Any] = {"first_seq": self.first_seq, "last_seq": self.last_seq, "state": state,
                                "segments": len(self.store.segments)}
        if self.store.read_only:
            info["problem"] = self.store.read_only
        return info

    # ---------- appending ----------

    async def append(self, entries: list[Entry]) -> list[Appended]:
        """Durable when this returns: after the fdatasync of the batch holding it."""
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((entries, fut))
        self._wake.set()
        return await fut

    async def _commit_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._queue = self._queue, []
            if not batch:
                continue
            results = await self._run(self.store.append, [entries for entries, _ in batch])
            self.flushes += 1
            fresh = []
            for (_, fut), result in zip(batch, results):
                if isinstance(result, JournalError):
                    if not fut.done():
                        fut.set_exception(result)
                    continue
                fresh.extend(a.record for a in result if a.record is not None)
                if not fut.done():
                    fut.set_result(result)
            if fresh:
                self._cache.extend(fresh)
                self.last_seq = fresh[-1].seq
                new, self._new = self._new, asyncio.Event()
                new.set()
                self._check_ranges(fresh)

    def _check_ranges(self, records: list[fr.Record]) -> None:
        for rec in records:
            if rec.counter is None or rec.counter in self._warned:
                continue
            first, last = self.store.ranges[rec.counter]
            if rec.number - first + 1 >= 0.9 * (last - first + 1):
                self._warned.add(rec.counter)
                log.warning("number range %r is 90%% used (%d of %d..%d)", rec.counter, rec.number, first, last)
                self.on_event({"event": "journal.range_warning", "counter": rec.counter,
                               "number": rec.number, "first": first, "last": last})

    # ---------- reading ----------

    async def wait_beyond(self, seq: int) -> None:
        """Return once a record with a seq above `seq` is durable."""
        while self.last_seq <= seq:
            await self._new.wait()

    async def read(self, from_seq: int, limit: int, backlog: list) -> list[fr.Record]:
        """Up to `limit` durable records from from_seq; `backlog` holds a disk reader between calls."""
        if self._cache and self._cache[0].seq <= from_seq:
            start = from_seq - self._cache[0].seq
            return [self._cache[i] for i in range(start, min(start + limit, len(self._cache)))]
        if not backlog or backlog[0][0] != from_seq:
            backlog[:] = [(from_seq, self.store.records(from_seq))]
        _, it = backlog[0]
        records = await self._run(_take, it, limit)
        if records:
            backlog[0] = (records[-1].seq + 1, it)
        else:
            backlog.clear()
        return records

    # ---------- cursors and retention ----------

    async def register(self, consumer: str, from_seq: int) -> None:
        if consumer not in self.cursors:
            self.cursors[consumer] = max(from_seq - 1, 0)
            await self._run(self.store.save_cursors, dict(self.cursors))
            log.info("consumer %r registered at seq %d", consumer, from_seq)

    async def ack(self, consumer: str, seq: int) -> int:
        if seq > self.last_seq:
            raise JournalError("bad_request", f"seq {seq} is beyond the journal's last seq {self.last_seq}")
        if seq > self.cursors.get(consumer, -1):
            self.cursors[consumer] = seq
            await self._run(self.store.save_cursors, dict(self.cursors))
        return self.cursors[consumer]

    async def remove_consumer(self, consumer: str) -> None:
        if self.cursors.pop(consumer, None) is None:
            raise JournalError("not_found", f"no consumer {consumer!r}")
        await self._run(self.store.save_cursors, dict(self.cursors))
        log.warning("consumer %r removed; retention no longer waits for it", consumer)

    async def retain(self) -> list[str]:
        if not self.cursors:
            return []  # nobody relays the journal yet: keep everything
        gone = await self._run(self.store.retain, min(self.cursors.values()), self.min_retention_us)
        if gone:
            self.first_seq = self.store.first_seq
            log.info("retention removed %d segment(s); journal now starts at seq %d", len(gone), self.first_seq)
        return gone

    async def _retention_loop(self) -> None:
        while True:
            try:
                await self.retain()
            except OSError as e:
                log.error("retention failed: %s", e)
            await asyncio.sleep(RETENTION_EVERY)


def _take(it: Iterator[fr.Record], n: int) -> list[fr.Record]:
    out = []
    for rec in it:
        out.append(rec)
        if len(out) >= n:
            break
    return out


def lag(cursor: int, last_seq: int) -> int:
    return max(last_seq - cursor, 0)

