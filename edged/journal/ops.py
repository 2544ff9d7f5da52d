"""The journal's socket ops: append, subscribe, ack (PROTOCOL.md).

A named consumer belongs to the uid that registered it (owners.py). A
connection holds one subscription at most: a second `subscribe` ends the
first (its task is cancelled and awaited) before it is answered, so a client
repeating `subscribe` never piles up tasks.
"""
from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING, Any

import msgpack

from ..relay import framing
from ..relay import protocol as p
from ..relay.registry import Level, may, needs, op
from .highwater import LOST
from .kinds import RESERVED, reserved
from .owners import Owners
from .service import Journal
from .store import Entry

if TYPE_CHECKING:
    from ..relay.session import Session
    from ..sync.state import Sync

log = logging.getLogger("edged.journal")
MAX_WINDOW = 100_000
FRAMES_BATCH = 500  # records per `frames` event by default
MAX_FRAMES_BATCH = 5000
FRAMES_BYTES = 256 << 10  # bytes of frames per event, unless one frame alone is larger
# The loop thread's own packer (a Packer is not thread-safe; reusing one beats packb).
_PACK = msgpack.Packer(use_bin_type=True).pack
_HEAD = framing.HEADER.pack
_NAME_MAX = 128
_TX_MAX = 256


def _entries(params: dict[str, Any], uid: int) -> list[Entry]:
    """The records of an `append`; a tx_id is scoped to the appending client's uid."""
    records = p.param(params, "records", list)
    if not records:
        raise p.RequestError(p.BAD_REQUEST, "'records' is empty")
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}] must be a map")
        unknown = set(rec) - {"kind", "body", "tx_id", "number"}
        if unknown:
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}]: unknown field {sorted(unknown)[0]!r}")
        kind = rec.get("kind")
        if not isinstance(kind, str) or not 0 < len(kind) <= _NAME_MAX:
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}].kind must be a non-empty string")
        if "\0" in kind:  # head office's archive (PostgreSQL text) cannot hold it
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}].kind must not hold a NUL character")
        if reserved(kind):  # edged acts on its own records after a restart: never a client's
            prefix = next(r for r in RESERVED if kind.startswith(r))
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}].kind {p.shown(kind)}: kinds starting with {prefix!r} "
                                                f"are written by edged only (reserved: {', '.join(RESERVED)})")
        if "body" not in rec:
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}].body is missing")
        tx_id, counter = rec.get("tx_id"), rec.get("number")
        if tx_id is not None and (not isinstance(tx_id, str) or not 0 < len(tx_id) <= _TX_MAX):
            # bounded: the tx-id index keeps every tx_id of the active segment in memory
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}].tx_id must be a string of 1 to {_TX_MAX} characters")
        if counter is not None and not isinstance(counter, str):
            raise p.RequestError(p.BAD_REQUEST, f"records[{i}].number must name a number range")
        out.append(Entry(kind, rec["body"], tx_id, counter, tx_uid=uid))
    return out


def _consumer(params: dict[str, Any]) -> str:
    name = p.param(params, "consumer", str)
    if not 0 < len(name) <= _NAME_MAX:
        raise p.RequestError(p.BAD_REQUEST, "'consumer' must be 1 to 128 characters")
    return name


class JournalOps:
    def __init__(self, journal: Journal, sync: Sync | None = None, owners: Owners | None = None) -> None:
        self.journal = journal
        self.sync = sync  # told of subscriptions: a consumer's kinds, and whether it is connected
        self.owners = owners or Owners(journal)  # the daemon starts its own, so a bad file stops startup

    @op("consumers", Level.ANY)
    async def op_consumers(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        lags = self.journal.lags()
        return {"last_seq": self.journal.last_seq,
                "consumers": {name: {"acked": seq, "lag": lags[name], "owner": self.owners.uids.get(name)}
                              for name, seq in sorted(self.journal.cursors.items())}}

    @op("consumer_remove", Level.PRIVILEGED, consumer=needs(str))
    async def op_consumer_remove(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        consumer = _consumer(params)
        await self.journal.remove_consumer(consumer)
        await self.owners.forget(consumer)
        log.warning("consumer %r removed by client %r (%s)", consumer, session.client, session.peer)
        return {"removed": consumer}

    @op("append", Level.ANY, records=needs(list))
    async def op_append(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        entries = _entries(params, session.peer.uid)
        results = await self.journal.append(entries)
        return {"records": [{"seq": a.seq, "duplicate": a.duplicate, **({"number": a.number}
                                                                          if a.number is not None else {})}
                            for a in results]}

    @op("subscribe", Level.ANY, consumer=needs(str), from_=needs(int, str), kinds=may(list), window=may(int),
        frames=may(bool), batch=may(int))
    async def op_subscribe(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        consumer = _consumer(params)
        start = p.param(params, "from", (int, str))
        if isinstance(start, str):
            if start != "acked":
                raise p.RequestError(p.BAD_REQUEST, "'from' must be a seq or \"acked\"")
            start = self.journal.cursors.get(consumer, self.journal.first_seq - 1) + 1
        elif start > self.journal.last_seq + 1:  # a cursor there would skip records not written yet
            raise p.RequestError(p.BAD_REQUEST, f"'from' {start} is beyond the end of the journal: the last "
                                                f"durable seq is {self.journal.last_seq}, so at most "
                                                f"{self.journal.last_seq + 1}")
        start = max(start, self.journal.first_seq)
        kinds = p.param(params, "kinds", list, required=False)
        if kinds is not None and not all(isinstance(k, str) for k in kinds):
            raise p.RequestError(p.BAD_REQUEST, "'kinds' must be a list of strings")
        window = p.param(params, "window", int, required=False, default=1000)
        if not 1 <= window <= MAX_WINDOW:
            raise p.RequestError(p.BAD_REQUEST, f"'window' must be between 1 and {MAX_WINDOW}")
        frames = p.param(params, "frames", bool, required=False, default=False)
        batch = p.param(params, "batch", int, required=False, default=FRAMES_BATCH)
        if frames and kinds is not None:
            raise p.RequestError(p.BAD_REQUEST, "'kinds' cannot go with 'frames': a frames subscriber gets every "
                                                "record, so what it relays can be checked as one chain")
        if not 1 <= batch <= MAX_FRAMES_BATCH:
            raise p.RequestError(p.BAD_REQUEST, f"'batch' must be between 1 and {MAX_FRAMES_BATCH}")
        await self.owners.admit(session, consumer)
        for old in list(session.subscriptions.values()):  # replaced: ended before the new one starts
            await old.stop()
        session.subscriptions.clear()
        await self.journal.register(consumer, start)
        if self.sync is not None:
            await self.sync.subscribed(consumer, kinds)
        sub = Subscription(self.journal, session, consumer, start, set(kinds) if kinds else None, window,
                           self.sync, batch if frames else 0)
        session.after_response.append(sub.start)
        session.subscriptions[consumer] = sub
        return {"from_seq": start}

    @op("ack", Level.ANY, consumer=needs(str), seq=needs(int))
    async def op_ack(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        consumer = _consumer(params)
        seq = p.param(params, "seq", int)
        if seq < 0:
            raise p.RequestError(p.BAD_REQUEST, "'seq' must be >= 0")
        if seq > self.journal.last_seq:  # before admit: a refused ack never claims a name
            raise p.RequestError(p.BAD_REQUEST, f"seq {seq} is beyond the journal's last seq "
                                                f"{self.journal.last_seq}")
        await self.owners.admit(session, consumer)
        acked = await self.journal.ack(consumer, seq)
        sub = session.subscriptions.get(consumer)
        if sub is not None:
            sub.acked(acked)
        return {"acked": acked}


class Subscription:
    """Backlog, then live records, never more than `window` beyond the last ack."""

    def __init__(self, journal: Journal, session: Session, consumer: str, start: int,
                 kinds: set[str] | None, window: int, sync: Sync | None = None, frames: int = 0) -> None:
        self.journal, self.session, self.consumer, self.sync = journal, session, consumer, sync
        self.next_seq, self.kinds, self.window = start, kinds, window
        self.frames = frames  # > 0: `frames` events of up to this many records instead of `record` events
        self.chain: bytes | None = None  # frames mode: the link after the last frame sent
        self.in_flight: collections.deque[int] = collections.deque()
        self._room = asyncio.Event()
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = self.session.spawn(self.run(), f"subscription {self.consumer}")

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        return {"next_seq": self.next_seq, "in_flight": len(self.in_flight), "window": self.window,
                "lag": max(self.journal.last_seq - self.journal.cursors.get(self.consumer, 0), 0)}

    def acked(self, seq: int) -> None:
        while self.in_flight and self.in_flight[0] <= seq:
            self.in_flight.popleft()
        self._room.set()

    async def run(self) -> None:
        if self.sync is None:
            return await self._deliver()
        self.sync.connected(self.consumer)
        try:
            await self._deliver()
        finally:  # the connection closed (this task is cancelled with it)
            self.sync.disconnected(self.consumer)

    async def _ready(self) -> int:
        """How many records may go now: once the window has room and a record beyond next_seq is durable."""
        while True:
            if len(self.in_flight) >= self.window:
                self._room.clear()
                await self._room.wait()
            elif self.next_seq > self.journal.last_seq:
                await self.journal.wait_beyond(self.next_seq - 1)
            else:
                return self.window - len(self.in_flight)

    async def _deliver(self) -> None:
        if self.frames:
            return await self._deliver_frames()
        backlog: list = []
        while True:
            room = await self._ready()
            records = await self.journal.read(self.next_seq, min(room, 1000), backlog)
            if not records:
                await self.journal.wait_beyond(self.next_seq - 1)
                continue
            frames = []
            for rec in records:
                self.next_seq = rec.seq + 1
                if self.kinds and rec.kind not in self.kinds and rec.kind != LOST:  # every consumer sees a gap
                    continue
                self.in_flight.append(rec.seq)
                if rec.wire is None:  # encoded once, however many subscribers get it
                    event = _PACK(rec.event())
                    rec.wire = _HEAD(len(event)) + event
                frames.append(rec.wire)
            if frames:  # one queue entry per batch: replaying a backlog is mostly this loop
                await self.session.outbox.put(b"".join(frames), len(frames))

    async def _deliver_frames(self) -> None:
        """`frames` events: seq-contiguous runs of frames, byte for byte, each with the chain link
        before it, so a relay can hand them on and head office can check them as one chain."""
        backlog: list = []
        while True:
            room = await self._ready()
            frames = await self.journal.read_frames(self.next_seq, min(room, self.frames), FRAMES_BYTES, backlog)
            if not frames:
                await self.journal.wait_beyond(self.next_seq - 1)
                continue
            first, last = frames[0][0], frames[-1][0]
            if self.chain is None or first != self.next_seq:  # the first event, or after a lost range
                self.chain = await self.journal.chain_before(first)
            event = _PACK({"event": "frames", "first_seq": first, "last_seq": last, "chain_before": self.chain,
                           "journal_last": max(self.journal.last_seq, last), "frames": [raw for _, raw in frames]})
            self.chain = frames[-1][1][36:68]  # the frame's own chain link (journal/frame.py)
            self.next_seq = last + 1
            self.in_flight.extend(seq for seq, _ in frames)
            await self.session.outbox.put(_HEAD(len(event)) + event, 1)
