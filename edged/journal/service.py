"""The journal as a daemon part: group commit on one worker thread, cursors,
retention, and live delivery to subscribers.

Store calls run on the `journal` thread, fed by one queue. Appends queue up
while a flush is in progress and the next flush takes them all (one fdatasync
for many clients); an idle journal flushes a lone append at once. Results go
back to the event loop in one call per flush.

One exception, for speed: while the disk has been fast (the last flushes each
took under FAST_FLUSH) and the thread has nothing in hand, appends are flushed
on the event loop itself, batched per loop iteration. Handing a flush to a
thread and back costs two cross-CPU wakeups (~85 us on a VM), as much as
a fast fdatasync; blocking the loop for under 2 ms costs less. One slow flush
sends the following ones back to the thread, so a slow SD card or a sick disk
never stalls the loop twice.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from typing import Any, Callable, Iterator

from . import frame as fr
from .disk import write_atomic
from .kinds import Skipped
from .store import Appended, Entry, JournalError, Store
from .txindex import EDGED, make_key

log = logging.getLogger("edged.journal")
CACHE = 10_000  # recent records kept in memory for live subscribers
RETENTION_EVERY = 3600.0
FAST_FLUSH = 0.002  # s: below this a flush may run on the event loop
FAST_STREAK = 8  # this many fast flushes in a row first


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
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # (kind, payload, future) for the thread
        self._new = asyncio.Event()
        self._cache: collections.deque[fr.Record] = collections.deque(maxlen=CACHE)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._warned: set[str] = set()
        self.flushes = 0
        self.inline_flushes = 0
        self._busy = 0  # jobs handed to the thread and not settled yet: the Store is the thread's
        self._pending: list[tuple[list[Entry], asyncio.Future]] = []  # for the next inline flush
        self._flush_times: collections.deque[float] = collections.deque(maxlen=FAST_STREAK)
        # Parts that follow the journal (sync state, deadlines): told of every durable record, and of
        # every cursor change as (consumer, old, new); old None: registered, new None: removed.
        self.on_records: list[Callable[[list[fr.Record]], None]] = []
        self.on_cursor: list[Callable[[str, int | None, int | None], None]] = []
        self.skipped = Skipped()  # edged's own records that readers found malformed (status `degraded`)

    def _put(self, kind: str, payload: Any, fut: asyncio.Future) -> None:
        self._busy += 1
        self._jobs.put((kind, payload, fut))

    async def _run(self, fn, *args):
        """Run fn(*args) on the journal thread, in queue order with the appends."""
        assert self._loop is not None
        fut = self._loop.create_future()
        self._put("call", (fn, args), fut)
        return await fut

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name="journal", daemon=True)
        self._thread.start()
        await self._run(self.store.open, False)
        self.cursors = await self._run(self.store.load_cursors)
        self.last_seq, self.first_seq = self.store.last_seq, self.store.first_seq
        # Lookups are right without it; the set only makes them fast on a large journal.
        threading.Thread(target=self.store.load_tx_index, name="journal-txindex", daemon=True).start()
        self._tasks = [asyncio.create_task(self._retention_loop(), name="journal-retention")]
        log.info("journal open: seq %d..%d in %d segments%s", self.first_seq, self.last_seq,
                 len(self.store.segments), f"; {self.store.read_only}" if self.store.read_only else "")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._thread:
            await self._run(self.store.close)
            self._jobs.put(("stop", None, None))  # not counted: nothing settles it
            await asyncio.to_thread(self._thread.join)

    def healthy(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not any(t.done() for t in self._tasks)

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
        assert self._loop is not None
        fut = self._loop.create_future()
        if self._pending or self._may_inline():
            self._pending.append((entries, fut))
            if len(self._pending) == 1:  # appends made in this loop iteration share the flush
                self._loop.call_soon(self._flush_pending)
        else:
            self._put("append", entries, fut)
        return await fut

    async def append_built(self, build: Callable[[Store], tuple[Entry, Callable[[Store], None] | None]],
                           ) -> list[Appended]:
        """Append the entry `build(store)` makes on the journal thread from the durable records,
        with no other append between its reading and its writing; then run the `after` it returns
        (e.g. rotate). For records that sum up what came before them: a day close."""
        assert self._loop is not None
        fut = self._loop.create_future()
        self._put("built", build, fut)
        return await fut

    def _may_inline(self) -> bool:
        return (self._busy == 0 and len(self._flush_times) == FAST_STREAK
                and max(self._flush_times) < FAST_FLUSH and self.store.txi.loaded.is_set())

    def _flush_pending(self) -> None:
        batch, self._pending = self._pending, []
        if not self._may_inline():  # the thread got work meanwhile: it owns the Store
            for entries, fut in batch:
                self._put("append", entries, fut)
            return
        t0 = time.perf_counter()
        results = self._store_append(batch)
        self._flush_times.append(time.perf_counter() - t0)
        self.inline_flushes += 1
        self._committed(batch, results)

    def _store_append(self, batch: list) -> list:
        try:
            return self.store.append([entries for entries, _ in batch])
        except Exception as e:  # a bug, not an I/O error (those come back as JournalError)
            log.exception("journal append failed")
            return [JournalError("internal", str(e))] * len(batch)

    # --- the journal thread ---

    def _thread_main(self) -> None:
        held = None
        while True:
            job = held or self._jobs.get()
            held = None
            kind, payload, fut = job
            if kind == "stop":
                return
            if kind == "built":  # an entry made from the durable state, appended with nothing between
                t0 = time.perf_counter()
                try:
                    entry, after = payload(self.store)
                except BaseException as e:
                    self._loop.call_soon_threadsafe(self._called, fut, None, e)
                    continue
                results = self._store_append([([entry], fut)])
                if not isinstance(results[0], JournalError) and after is not None:
                    after(self.store)
                self._loop.call_soon_threadsafe(self._flushed, [([entry], fut)], results, time.perf_counter() - t0)
                continue
            if kind == "call":
                fn, args = payload
                try:
                    result, error = fn(*args), None
                except BaseException as e:  # handed to the caller, who decides
                    result, error = None, e
                self._loop.call_soon_threadsafe(self._called, fut, result, error)
                continue
            batch = [(payload, fut)]
            while True:  # group commit: everything queued meanwhile goes into this flush
                try:
                    nxt = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if nxt[0] != "append":
                    held = nxt
                    break
                batch.append((nxt[1], nxt[2]))
            t0 = time.perf_counter()
            results = self._store_append(batch)
            self._loop.call_soon_threadsafe(self._flushed, batch, results, time.perf_counter() - t0)

    # --- back on the event loop ---

    def _called(self, fut: asyncio.Future, result: Any, error: BaseException | None) -> None:
        self._busy -= 1
        _settle(fut, result, error)

    def _flushed(self, batch: list, results: list, took: float) -> None:
        self._busy -= len(batch)
        self._flush_times.append(took)
        self._committed(batch, results)

    def _committed(self, batch: list, results: list) -> None:
        self.flushes += 1
        fresh = []
        for (_, fut), result in zip(batch, results):
            if isinstance(result, JournalError):
                _settle(fut, None, result)
                continue
            fresh.extend(a.record for a in result if a.record is not None)
            _settle(fut, result, None)
        if fresh:
            self._cache.extend(fresh)
            self.last_seq = fresh[-1].seq
            new, self._new = self._new, asyncio.Event()
            new.set()
            self._check_ranges(fresh)
            for listener in self.on_records:
                listener(fresh)

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

    async def read(self, from_seq: int, limit: int, backlog: list) -> list[fr.Record | fr.Wired]:
        """Up to `limit` durable records from from_seq, recent ones from memory, older ones
        framed straight from disk; `backlog` holds the disk reader between calls."""
        if self._cache and self._cache[0].seq <= from_seq:
            start = from_seq - self._cache[0].seq
            return [self._cache[i] for i in range(start, min(start + limit, len(self._cache)))]
        if not backlog or backlog[0][0] != from_seq:
            backlog[:] = [(from_seq, self.store.wired(from_seq))]
        _, it = backlog[0]
        records = await self._run(_take, it, limit)
        if records:
            backlog[0] = (records[-1].seq + 1, it)
        else:
            backlog.clear()
        return records

    async def scan(self, from_seq: int, kinds: tuple[str, ...], match: Callable[[Any], bool] | None = None,
                   to_seq: int | None = None) -> list[fr.Record]:
        """Durable records of these kinds from from_seq on (up to to_seq; whose body `match`es), read
        on the journal thread: for parts that rebuild their state at startup (print jobs)."""
        def collect() -> list[fr.Record]:
            start = max(from_seq, self.store.first_seq)
            return [r for r in self.store.records(start, to_seq)
                    if r.kind in kinds and (match is None or match(r.body))]
        return await self._run(collect)

    async def frames(self, from_seq: int, to_seq: int) -> bytes:
        """The durable records from_seq..to_seq as their exact frames on disk (for exports)."""
        return await self._run(lambda: b"".join(self.store.frames(from_seq, to_seq)))

    async def chain_before(self, seq: int) -> bytes:
        return await self._run(self.store.chain_before, seq)

    def cached_ts(self, seq: int) -> int | None:
        """The append time (unix us) of record `seq` if it is among the recent ones in memory."""
        if self._cache and self._cache[0].seq <= seq <= self._cache[-1].seq:
            return self._cache[seq - self._cache[0].seq].ts
        return None

    async def ts_at(self, seq: int) -> int | None:
        """The append time (unix us) of record `seq`, None when it is not retained or not durable.
        Off the cache it walks frame headers of one segment on the journal thread (~ms)."""
        cached = self.cached_ts(seq)
        if cached is not None or not self.first_seq <= seq <= self.last_seq:
            return cached
        return await self._run(self.store.ts_of, seq)

    async def find_tx(self, tx_id: str) -> int | None:
        """The seq of the retained record of edged's own with this tx_id (print:<job_id>), if any."""
        found = await self._run(self.store.txi.get, make_key(EDGED, tx_id), self.store._confirm)
        return None if found is None else found[0]

    async def load_state(self, name: str) -> bytes | None:
        """A part's small state file beside the journal (None when there is none yet)."""
        def read() -> bytes | None:
            try:
                return self.store.disk.read(name)
            except FileNotFoundError:
                return None
        return await self._run(read)

    async def save_state(self, name: str, data: bytes) -> None:
        await self._run(write_atomic, self.store.disk, name, data)

    # ---------- cursors and retention ----------

    async def register(self, consumer: str, from_seq: int) -> None:
        if consumer not in self.cursors:
            self.cursors[consumer] = max(from_seq - 1, 0)
            await self._run(self.store.save_cursors, dict(self.cursors))
            log.info("consumer %r registered at seq %d", consumer, from_seq)
            self._cursor_moved(consumer, None, self.cursors[consumer])

    async def ack(self, consumer: str, seq: int) -> int:
        if seq > self.last_seq:
            raise JournalError("bad_request", f"seq {seq} is beyond the journal's last seq {self.last_seq}")
        old = self.cursors.get(consumer)
        if seq > (-1 if old is None else old):
            self.cursors[consumer] = seq
            await self._run(self.store.save_cursors, dict(self.cursors))
            self._cursor_moved(consumer, old, seq)
        return self.cursors[consumer]

    def _cursor_moved(self, consumer: str, old: int | None, new: int | None) -> None:
        for listener in self.on_cursor:
            listener(consumer, old, new)

    def lags(self) -> dict[str, int]:
        """Per consumer: durable records it has not acked yet."""
        return {name: max(self.last_seq - seq, 0) for name, seq in self.cursors.items()}

    async def remove_consumer(self, consumer: str) -> None:
        old = self.cursors.pop(consumer, None)
        if old is None:
            raise JournalError("not_found", f"no consumer {consumer!r}")
        await self._run(self.store.save_cursors, dict(self.cursors))
        self._cursor_moved(consumer, old, None)
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


def _settle(fut: asyncio.Future, result: Any, error: BaseException | None) -> None:
    if fut.done():
        return  # the caller went away (connection closed); the work is done regardless
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def _take(it: Iterator[fr.Record], n: int) -> list[fr.Record]:
    out = []
    for rec in it:
        out.append(rec)
        if len(out) >= n:
            break
    return out


