"""The journal as a daemon part: group commit on one worker thread, cursors,
retention, and live delivery to subscribers.

Store calls run on the `journal` thread, fed by one queue. Appends queue up
while a flush is in progress and the next flush takes them all (one fdatasync
for many clients); an idle journal flushes a lone append at once. Results go
back to the event loop in one call per flush.

Disk I/O never runs on the event loop: a disk that hangs in fdatasync (a dying
SD card, a stuck USB bridge) must leave the loop free to answer the waiting
appends `journal_unavailable` and to stop feeding systemd's watchdog. A flush
that has not returned after `flush_timeout` makes the journal unhealthy and
read-only until restart (see docs/JOURNAL.md, "A flush that hangs").
"""
from __future__ import annotations

import asyncio
import collections
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgpack

from ..relay import framing
from ..relay.protocol import Publish
from . import frame as fr
from .disk import write_atomic
from .kinds import Skipped
from .store import Appended, Entry, JournalError, Store
from .txindex import EDGED, make_key

log = logging.getLogger("edged.journal")
JournalState = Literal["ok", "degraded", "read_only"]  # status journal.state
CACHE = 10_000  # recent records kept in memory for live subscribers, at most this many
CACHE_BYTES = 16 << 20  # and at most this many bytes of encoded events (docs/PROTOCOL.md, "Limits")
_ENTRY_COST = 120  # bytes a cached record costs beside its encoded event (the Wired object, the deque)
RETENTION_EVERY = 3600.0
DEFAULT_FLUSH_TIMEOUT = 10.0
# The loop thread's own packer (a Packer is not thread-safe; reusing one beats packb).
_PACK = msgpack.Packer(use_bin_type=True).pack
_HEAD = framing.HEADER.pack


class Journal:
    name = "journal"

    def __init__(self, store: Store, *, min_retention_days: float = 30.0,
                 on_event: Publish | None = None,
                 flush_timeout: float = DEFAULT_FLUSH_TIMEOUT) -> None:
        self.store = store
        self.min_retention_us = int(min_retention_days * 86400e6)
        self.on_event: Publish = on_event or (lambda event: 0)
        self.flush_timeout = flush_timeout
        self.hung: str | None = None  # set once a flush outlived flush_timeout: read-only until restart
        self.cursors: dict[str, int] = {}
        self.last_seq = 0
        self.first_seq = 1
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()  # (kind, payload, future) for the thread
        self._outstanding: set[asyncio.Future] = set()  # handed to the thread, not settled yet
        self._new = asyncio.Event()
        # Recent records as encoded `record` events, not decoded bodies: a body of a million
        # empty arrays is 1 MiB on the wire and ~70 MiB decoded.
        self._cache: collections.deque[fr.Wired] = collections.deque()
        self._cache_bytes = 0
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: list[asyncio.Task] = []
        self._warned: set[str] = set()
        self.flushes = 0
        # Parts that follow the journal (sync state, deadlines): told of every durable record, and of
        # every cursor change as (consumer, old, new); old None: registered, new None: removed.
        self.on_records: list[Callable[[list[fr.Record]], None]] = []
        self.on_cursor: list[Callable[[str, int | None, int | None], None]] = []
        self.skipped = Skipped()  # edged's own records that readers found malformed (status `degraded`)

    def _submit(self, kind: str, payload: Any) -> asyncio.Future:
        assert self._loop is not None
        fut = self._loop.create_future()
        if self.hung:
            fut.set_exception(JournalError("journal_unavailable", self.hung))
            return fut
        self._outstanding.add(fut)
        fut.add_done_callback(self._outstanding.discard)
        self._jobs.put((kind, payload, fut))
        return fut

    async def _run(self, fn, *args):
        """Run fn(*args) on the journal thread, in queue order with the appends."""
        return await self._submit("call", (fn, args))

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._thread_main, name="journal", daemon=True)
        self._thread.start()
        await self._run(self.store.open, False)
        self.cursors = await self._run(self.store.load_cursors)
        self.last_seq, self.first_seq = self.store.last_seq, self.store.first_seq
        # Lookups are right without it; the set only makes them fast on a large journal.
        threading.Thread(target=self.store.load_tx_index, name="journal-txindex", daemon=True).start()
        self._tasks = [asyncio.create_task(self._retention_loop(), name="journal-retention"),
                       asyncio.create_task(self._flush_watch(), name="journal-flush-watch")]
        log.info("journal open: seq %d..%d in %d segments%s", self.first_seq, self.last_seq,
                 len(self.store.segments), f"; {self.store.read_only}" if self.store.read_only else "")

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.hung:  # the thread is stuck in the kernel: waiting for it would never end
            log.warning("journal: not waiting for the journal thread, stuck in a flush")
            return
        if self._thread:
            await self._run(self.store.close)
            self._jobs.put(("stop", None, None))  # not counted: nothing settles it
            await asyncio.to_thread(self._thread.join)

    def _stuck_for(self) -> float:
        """Seconds the journal thread has been inside one write/flush call (0: not in one)."""
        since = getattr(self.store.disk, "busy_since", None)
        return time.monotonic() - since if since is not None else 0.0

    def healthy(self) -> bool:
        if self.hung or self._stuck_for() > self.flush_timeout:
            return False  # no watchdog ping: systemd restarts edged
        return self._thread is not None and self._thread.is_alive() and not any(t.done() for t in self._tasks)

    async def _flush_watch(self) -> None:
        while not self.hung:
            await asyncio.sleep(min(1.0, self.flush_timeout / 4))
            stuck = self._stuck_for()
            if stuck > self.flush_timeout:
                self._hang(stuck)

    def _hang(self, stuck: float) -> None:
        """A flush outlived flush_timeout: whatever it returns later, nobody waiting is acked."""
        self.hung = (f"journal read-only until restart: a write or flush has not returned for {stuck:.1f} s "
                     f"(journal.flush_timeout {self.flush_timeout:g} s)")
        self.store.read_only = self.hung  # the thread is blocked in the kernel; it reads this when it wakes
        log.critical("journal: %s; waiting appends answered journal_unavailable, watchdog withheld", self.hung)
        err = JournalError("journal_unavailable", self.hung)
        for fut in list(self._outstanding):
            _settle(fut, None, err)

    def info(self) -> dict[str, Any]:
        state: JournalState = "degraded" if self.store.problems else ("read_only" if self.store.read_only else "ok")
        info: dict[str, Any] = {"first_seq": self.first_seq, "last_seq": self.last_seq, "state": state,
                                "segments": len(self.store.segments)}
        if self.store.read_only:
            info["problem"] = self.store.read_only
        lost = self.store.gaps()
        if lost:
            info["lost"] = [{"first_seq": a, "last_seq": b} for a, b in lost]
        return info

    # ---------- appending ----------

    async def append(self, entries: list[Entry]) -> list[Appended]:
        """Durable when this returns: after the fdatasync of the batch holding it."""
        return await self._submit("append", entries)

    async def append_built(self, build: Callable[[Store], tuple[Entry, Callable[[Store], None] | None]],
                           ) -> list[Appended]:
        """Append the entry `build(store)` makes on the journal thread from the durable records,
        with no other append between its reading and its writing; then run the `after` it returns
        (e.g. rotate). For records that sum up what came before them: a day close."""
        return await self._submit("built", build)

    def _store_append(self, batch: list) -> list:
        try:
            return self.store.append([entries for entries, _ in batch])
        except Exception as e:  # a bug, not an I/O error (those come back as JournalError)
            log.exception("journal append failed")
            return [JournalError("internal", str(e))] * len(batch)

    # --- the journal thread ---

    def _thread_main(self) -> None:
        loop = self._loop
        assert loop is not None  # start() sets it before it starts this thread
        held = None
        while True:
            job = held or self._jobs.get()
            held = None
            kind, payload, fut = job
            if kind == "stop":
                return
            if self.hung:  # queued before the hang was seen; already answered, never written
                continue
            if kind == "built":  # an entry made from the durable state, appended with nothing between
                try:
                    entry, after = payload(self.store)
                except BaseException as e:
                    loop.call_soon_threadsafe(self._called, fut, None, e)
                    continue
                results = self._store_append([([entry], fut)])
                if not isinstance(results[0], JournalError) and after is not None:
                    after(self.store)
                loop.call_soon_threadsafe(self._committed, [([entry], fut)], results)
                continue
            if kind == "call":
                fn, args = payload
                try:
                    result, error = fn(*args), None
                except BaseException as e:  # handed to the caller, who decides
                    result, error = None, e
                loop.call_soon_threadsafe(self._called, fut, result, error)
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
            results = self._store_append(batch)
            loop.call_soon_threadsafe(self._committed, batch, results)

    # --- back on the event loop ---

    def _called(self, fut: asyncio.Future, result: Any, error: BaseException | None) -> None:
        _settle(fut, result, error)

    def _committed(self, batch: list, results: list) -> None:
        self.flushes += 1
        fresh: list[fr.Record] = []
        for (_, fut), result in zip(batch, results):
            if isinstance(result, JournalError):
                _settle(fut, None, result)
                continue
            fresh.extend(a.record for a in result if a.record is not None)
            _settle(fut, result, None)
        if fresh:
            self._remember(fresh)
            self.last_seq = fresh[-1].seq
            new, self._new = self._new, asyncio.Event()
            new.set()
            self._check_ranges(fresh)
            for listener in self.on_records:
                listener(fresh)

    def _remember(self, records: list[fr.Record]) -> None:
        """Keep the newest records for live subscribers, bounded by count and bytes."""
        cache = self._cache
        for rec in records:
            if rec.wire is None:  # encoded once, however many subscribers get it
                event = _PACK(rec.event())
                rec.wire = _HEAD(len(event)) + event
            cache.append(fr.Wired(rec.seq, rec.kind, rec.wire, rec.ts, rec.frame))
            self._cache_bytes += len(rec.wire) + len(rec.frame or b"") + _ENTRY_COST
        while cache and (len(cache) > CACHE or self._cache_bytes > CACHE_BYTES):
            gone = cache.popleft()
            self._cache_bytes -= len(gone.wire) + len(gone.frame or b"") + _ENTRY_COST

    def _check_ranges(self, records: list[fr.Record]) -> None:
        for rec in records:
            if rec.counter is None or rec.counter in self._warned:
                continue
            first, last = self.store.ranges[rec.counter]
            assert rec.number is not None  # a record that takes a number from a counter has one
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

    async def read_frames(self, from_seq: int, limit: int, max_bytes: int, backlog: list) -> list[tuple[int, bytes]]:
        """Up to `limit` durable frames from from_seq, seq-contiguous (a lost range ends the list), at
        most `max_bytes` of them but at least one: recent ones from memory, older ones from disk
        (`backlog` holds the disk reader between calls)."""
        out: list[tuple[int, bytes]] = []
        size = 0
        cache = self._cache
        if cache and cache[0].seq <= from_seq:
            for i in range(from_seq - cache[0].seq, min(from_seq - cache[0].seq + limit, len(cache))):
                w = cache[i]
                if w.frame is None or (out and (w.seq != out[-1][0] + 1 or size + len(w.frame) > max_bytes)):
                    break
                out.append((w.seq, w.frame))
                size += len(w.frame)
            if out:
                return out
        if not backlog or backlog[0][0] != from_seq:
            backlog[:] = [(from_seq, _FrameReader(self.store.numbered_frames(from_seq)))]
        _, reader = backlog[0]
        out = await self._run(reader.take, limit, max_bytes)
        if out:
            backlog[0] = (out[-1][0] + 1, reader)
        else:
            backlog.clear()
        return out

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
        return {name: max(self.last_seq - seq - self.store.lost_after(seq), 0) for name, seq in self.cursors.items()}

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


class _FrameReader:
    """Frames from disk in seq order for a frames subscriber; one that did not fit a batch is held
    for the next."""

    def __init__(self, it: Iterator[tuple[int, bytes]]) -> None:
        self.it = it
        self.held: tuple[int, bytes] | None = None

    def take(self, n: int, max_bytes: int) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        size = 0
        while len(out) < n:
            item, self.held = self.held or next(self.it, None), None
            if item is None:
                break
            if out and (item[0] != out[-1][0] + 1 or size + len(item[1]) > max_bytes):
                self.held = item
                break
            out.append(item)
            size += len(item[1])
        return out


def _take(it: Iterator[fr.Record], n: int) -> list[fr.Record]:
    out = []
    for rec in it:
        out.append(rec)
        if len(out) >= n:
            break
    return out


