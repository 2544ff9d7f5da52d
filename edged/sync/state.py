"""Sync state: per consumer, is it connected, how far behind is it, when did it last ack.

A consumer is `online` while it has a subscription open, and for
`sync.offline_after` seconds after its last one closed (a sync client that
reconnects is not "offline" for a moment). Its lag is counted over the kinds
of its latest `subscribe` (kept across restarts): for the POS app reading
`order.web` records, the sales it appends itself are not lag. Without kinds,
lag is every record past its cursor. `lag_age` is how long its oldest
unacked record has waited. It is `behind` while lag or lag_age is at or past
`sync.lag_records` / `sync.lag_age`.

Each change of online/offline or behind is a `sync.state` event (topic
`sync`) and a log line; acks, registrations and online/offline go to the
sync log (acklog.py).
"""
from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgpack

from ..config import SyncSettings
from ..journal import frame as fr
from ..journal import statefile
from ..journal.service import Journal
from ..journal.shapes import STR, ListOf, MapOf
from ..relay import protocol as p
from ..relay.registry import Level, may, op
from .acklog import AckLog, last_acks, select

log = logging.getLogger("edged.sync")
# What a sync.state event reports (its "change") and the sync log notes.
SyncChange = Literal["online", "offline", "behind", "caught_up"]
TICK = 1.0
FILL_CHUNK = 20_000  # records per journal-thread read while filling a consumer's pending list
AGE_EVERY = 10.0  # seconds between disk reads of one consumer's oldest unacked record's time
KINDS_FILE = "consumer-kinds"  # beside the cursors: consumer -> kinds of its latest subscribe
KINDS_REMEDY = "remove it: each consumer's lag then counts every kind until its next subscribe"


class Pending:
    """(seq, ts) of the records of some kinds past a cursor, oldest first."""

    def __init__(self, kinds: Iterable[str]) -> None:
        self.kinds = frozenset(kinds)
        self.items: collections.deque[tuple[int, int]] = collections.deque()

    def add(self, records: Iterable[fr.Record]) -> None:
        for rec in records:
            if rec.kind in self.kinds and (not self.items or rec.seq > self.items[-1][0]):
                self.items.append((rec.seq, rec.ts))

    def drop_to(self, seq: int) -> list[int]:
        """Forget the records up to seq (acked); their seqs."""
        gone = []
        while self.items and self.items[0][0] <= seq:
            gone.append(self.items.popleft()[0])
        return gone


@dataclass
class Consumer:
    name: str
    kinds: frozenset[str] | None = None
    pending: Pending | None = None  # with kinds: its records not acked yet
    connections: int = 0
    online: bool = False
    since: float = field(default_factory=time.time)  # last online/offline change (or edged's start)
    disconnected_at: float | None = None
    last_ack: float | None = None
    behind: bool = False
    oldest: tuple[int, int | None] = (0, None)  # without kinds: (seq, ts) of the record after its cursor
    oldest_read: float = 0.0  # when `oldest` was last read from disk
    filling: bool = False  # its pending list is being read from the journal: no verdicts meanwhile


class Sync:
    name = "sync"

    def __init__(self, journal: Journal, settings: SyncSettings, acklog: AckLog,
                 publish: p.Publish) -> None:
        self.journal, self.settings, self.acklog, self.publish = journal, settings, acklog, publish
        self.consumers: dict[str, Consumer] = {}
        self._task: asyncio.Task | None = None
        self._saving: asyncio.Task | None = None

    async def start(self) -> None:
        kinds = await statefile.load(self.journal, KINDS_FILE, MapOf(STR, ListOf(STR)), KINDS_REMEDY) or {}
        last = last_acks(await asyncio.to_thread(self.acklog.read_written))
        for name in self.journal.cursors:
            c = self.consumers[name] = Consumer(name, last_ack=last.get(name))
            if kinds.get(name):
                await self._fill(c, kinds[name])
        self.journal.on_records.append(self._records)
        self.journal.on_cursor.append(self._cursor)
        self._task = asyncio.create_task(self._ticker(), name="sync-state")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.to_thread(self.acklog.write, self.acklog.take(everything=True))

    def healthy(self) -> bool:
        return self._task is None or not self._task.done()

    async def _fill(self, c: Consumer, kinds: Iterable[str]) -> None:
        """Read the records of its kinds past its cursor, a chunk per journal-thread call so appends
        go on meanwhile. Live records go to the new list from the start; the two are merged."""
        c.kinds = frozenset(kinds)
        live = c.pending = Pending(c.kinds)
        c.filling = True
        try:
            found: list[fr.Record] = []
            seq = max(self.journal.cursors.get(c.name, 0) + 1, self.journal.first_seq)
            end = self.journal.last_seq
            while seq <= end:
                found += await self.journal.scan(seq, tuple(c.kinds), to_seq=min(seq + FILL_CHUNK - 1, end))
                seq += FILL_CHUNK
            merged = Pending(c.kinds)
            merged.items.extend(sorted({(r.seq, r.ts) for r in found} | set(live.items)))
            merged.drop_to(self.journal.cursors.get(c.name, 0))  # acks that came meanwhile
            if c.pending is live:  # not replaced by a newer subscribe meanwhile
                c.pending = merged
        finally:
            c.filling = False

    # ---------- what the journal and the subscriptions tell us ----------

    def _records(self, records: list[fr.Record]) -> None:
        for c in self.consumers.values():
            if c.pending is not None:
                c.pending.add(records)

    def _cursor(self, name: str, old: int | None, new: int | None) -> None:
        if new is None:
            gone = self.consumers.pop(name, None)
            self.acklog.note(name, "removed", acked=old)
            if gone is not None and gone.kinds:  # held, or the loop may drop the task half-way
                self._saving = asyncio.get_running_loop().create_task(self._save_kinds())
            return
        c = self._consumer(name)
        if old is None:
            self.acklog.note(name, "registered", from_seq=new + 1)
            return
        c.last_ack = time.time()
        self.acklog.acked(name, old, new, c.last_ack)
        if c.pending is not None:
            c.pending.drop_to(new)

    def _consumer(self, name: str) -> Consumer:
        if name not in self.consumers:
            self.consumers[name] = Consumer(name)
        return self.consumers[name]

    async def subscribed(self, name: str, kinds: list[str] | None) -> None:
        """A `subscribe` was answered: its kinds become the consumer's (what its lag counts)."""
        c = self._consumer(name)
        wanted = frozenset(kinds) if kinds else None
        if wanted == c.kinds:
            return
        if wanted is None:
            c.kinds = c.pending = None
        else:
            await self._fill(c, wanted)
        await self._save_kinds()

    async def _save_kinds(self) -> None:
        try:
            await self.journal.save_state(KINDS_FILE, msgpack.packb(
                {n: sorted(x.kinds) for n, x in self.consumers.items() if x.kinds}, use_bin_type=True))
        except OSError as e:  # only lag figures after a restart depend on it
            log.error("cannot save the consumers' kinds: %s", e)

    def connected(self, name: str) -> None:
        c = self._consumer(name)
        c.connections += 1
        c.disconnected_at = None
        self._evaluate(c, time.time())

    def disconnected(self, name: str) -> None:
        c = self.consumers.get(name)
        if c is None:
            return
        c.connections = max(c.connections - 1, 0)
        if not c.connections:
            c.disconnected_at = time.time()
            self._evaluate(c, c.disconnected_at)

    # ---------- state ----------

    def lag(self, c: Consumer, now: float) -> tuple[int, float | None]:
        """(records not acked, seconds the oldest of them has waited)."""
        if c.pending is not None:
            items = c.pending.items
            return len(items), (max(now - items[0][1] / 1e6, 0.0) if items else None)
        acked = self.journal.cursors.get(c.name, 0)
        n = max(self.journal.last_seq - max(acked, self.journal.first_seq - 1), 0)
        if not n:
            return 0, None
        nxt = acked + 1
        ts = self.journal.cached_ts(nxt)
        if ts is None and c.oldest[0] == nxt:
            ts = c.oldest[1]
        return n, (max(now - ts / 1e6, 0.0) if ts is not None else None)

    def _evaluate(self, c: Consumer, now: float) -> None:
        if c.filling:
            return
        s = self.settings
        online = c.connections > 0 or (c.online and c.disconnected_at is not None
                                       and now - c.disconnected_at < s.offline_after)
        lag, age = self.lag(c, now)
        if s.lag_age and age is None and lag:
            by_age = c.behind  # the age is being read from disk: keep the verdict, do not flap
        else:
            by_age = bool(s.lag_age and age is not None and age >= s.lag_age)
        behind = bool(s.lag_records and lag >= s.lag_records) or by_age
        changes: list[SyncChange] = []
        if online != c.online:
            c.online, c.since = online, now
            changes.append("online" if online else "offline")
            self.acklog.note(c.name, changes[-1], lag=lag)
        if behind != c.behind:
            c.behind = behind
            changes.append("behind" if behind else "caught_up")
        for change in changes:
            state = self.describe_one(c, now)
            log.log(logging.WARNING if change in ("offline", "behind") else logging.INFO,
                    "sync: consumer %s %s (lag %d records%s)", c.name, change.replace("_", " "), lag,
                    f", oldest {age:.0f} s" if age is not None else "")
            self.publish({"event": "sync.state", "consumer": c.name, "change": change, **state})

    async def _ticker(self) -> None:
        while True:
            try:
                await self._tick()
            except Exception:  # a damaged segment, say: the figures wait, the daemon goes on
                log.exception("sync state: tick failed")
            await asyncio.sleep(TICK)

    async def _tick(self) -> None:
        now = time.time()
        for c in list(self.consumers.values()):
            nxt = self.journal.cursors.get(c.name, 0) + 1
            # Off the cache, the time of its oldest unacked record is read from disk, but not every
            # second: catching up after an outage moves the cursor on every tick.
            if (c.pending is None and nxt <= self.journal.last_seq and c.oldest[0] != nxt
                    and self.journal.cached_ts(nxt) is None and now - c.oldest_read >= AGE_EVERY):
                c.oldest, c.oldest_read = (nxt, await self.journal.ts_at(nxt)), now
            self._evaluate(c, now)
        lines = self.acklog.take(now=now)
        if lines:
            try:
                await asyncio.to_thread(self.acklog.write, lines)
            except OSError as e:
                log.error("cannot write the sync log %s: %s", self.acklog.path, e)

    def describe_one(self, c: Consumer, now: float) -> dict[str, Any]:
        lag, age = self.lag(c, now)
        return {"state": "online" if c.online else "offline", "connected": c.connections > 0,
                "since": round(c.since, 3), "acked": self.journal.cursors.get(c.name),
                "kinds": sorted(c.kinds) if c.kinds else None, "lag": lag,
                "lag_age": None if age is None else round(age, 1),
                "last_ack": None if c.last_ack is None else round(c.last_ack, 3), "behind": c.behind}

    def describe(self) -> dict[str, dict[str, Any]]:
        now = time.time()
        return {name: self.describe_one(c, now) for name, c in sorted(self.consumers.items())}

    def summary(self) -> str:
        """For systemd's STATUS= line, e.g. "sync head-office: online, lag 0"."""
        if not self.consumers:
            return "sync: no consumers"
        # No ticking age here: STATUS= is sent on every change, and a clock in it would send it every
        # second. Past lag_age the consumer is "behind", which says enough; `edged status` has the age.
        return "; ".join(f"sync {name}: {d['state']}, lag {d['lag']}{', behind' if d['behind'] else ''}"
                         for name, d in self.describe().items())

    # ---------- the socket op ----------

    @op("sync_log", Level.ANY, consumer=may(str), since=may(int, float), limit=may(int))
    async def op_sync_log(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        consumer = p.param(params, "consumer", str, required=False)
        since = p.param(params, "since", (int, float), required=False)
        limit = p.param(params, "limit", int, required=False, default=1000)
        if not 1 <= limit <= 5000:
            raise p.RequestError(p.BAD_REQUEST, "'limit' must be between 1 and 5000")
        written = await asyncio.to_thread(self.acklog.read_written)
        entries = select(written + self.acklog.unwritten(), consumer, since)
        return {"entries": entries[-limit:], "more": len(entries) > limit, "consumers": self.describe()}
