"""Pickup deadlines: `[deadlines."order.web"] consumer = "pos", within = 300`.

A record of that kind that its consumer has not acked `within` seconds after
it was appended is overdue: one `journal.overdue` record is appended (so head
office hears of it through its own sync), sent to watchers of `journal` and
logged. When the consumer acks past it later, a `journal.overdue_cleared`
follows. The record itself is never touched.

Once per record, also across restarts: what was reported is kept in a small
state file with the journal seq it reflects, and at startup the journal is
read from there (and from each consumer's cursor) for the overdue and
cleared records written since, so a crash between a journal write and the
state file neither repeats nor loses a report. A record that fell due while
edged was down is reported right after the start. An overdue or cleared record
that is not what edged writes (journal/kinds.py) is skipped, logged and
counted in `status`.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import msgpack

from ..config import DeadlineSettings
from ..journal import frame as fr
from ..journal import statefile
from ..journal.service import Journal
from ..journal.shapes import NUM, SEQ, STR, Int, Map, MapOf
from ..journal.store import Entry, JournalError
from ..relay.protocol import Publish
from .state import Pending

log = logging.getLogger("edged.sync")
OVERDUE, CLEARED = "journal.overdue", "journal.overdue_cleared"
STATE_FILE = "deadlines"
TICK = 1.0
RETRY = 60.0  # seconds before a report the journal refused is tried again
_STATE = Map({"seq": SEQ, "reported": MapOf(Int(1), Map({"kind": STR, "seq": Int(1), "consumer": STR,
                                                         "due_at": NUM, "overdue_seq": Int(1)}))},
             {"floors": MapOf(STR, SEQ)})
STATE_REMEDY = ("remove it: the overdue reports are read again from the journal (a deadline consumer removed "
                "with consumer_remove then counts as never having picked anything up)")


class Deadlines:
    name = "deadlines"

    def __init__(self, journal: Journal, rules: dict[str, DeadlineSettings],
                 publish: Publish) -> None:
        self.journal, self.rules, self.publish = journal, rules, publish
        self.pending = {kind: Pending([kind]) for kind in rules}
        self.reported: dict[int, dict[str, Any]] = {}  # overdue record's seq -> its journal.overdue body + seq
        self._to_clear: set[int] = set()
        # A deadline consumer removed with consumer_remove: its last cursor, so that what it had
        # picked up is not reported overdue after a restart (a never-registered one has none).
        self.floors: dict[str, int] = {}
        self._retry_at: dict[int, float] = {}
        self._wake = asyncio.Event()
        self._dirty = False  # the state file is behind (a floor changed)
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if not self.rules:
            return
        state = await statefile.load(self.journal, STATE_FILE, _STATE, STATE_REMEDY) or {"seq": 0, "reported": {}}
        self.reported = dict(state["reported"])
        self.floors = state.get("floors", {})
        cursors = {kind: self._cursor(rule.consumer) for kind, rule in self.rules.items()}
        start = min([*cursors.values(), state["seq"]]) + 1
        for rec in await self.journal.scan(start, (*self.rules, OVERDUE, CLEARED)):
            if rec.kind in (OVERDUE, CLEARED) and not self.journal.skipped.fits(self.name, rec):
                continue
            if rec.kind == OVERDUE:
                self.reported[rec.body["seq"]] = {**rec.body, "overdue_seq": rec.seq}
            elif rec.kind == CLEARED:
                self.reported.pop(rec.body["seq"], None)
            elif rec.kind in self.rules and rec.seq > cursors[rec.kind]:
                self.pending[rec.kind].add([rec])
        for seq, info in list(self.reported.items()):
            if info["kind"] not in self.rules:
                del self.reported[seq]  # that deadline is no longer configured
            elif all(s != seq for s, _ in self.pending[info["kind"]].items):
                self._to_clear.add(seq)  # acked while edged was down, or before its clear was written
        self.journal.on_records.append(self._records)
        self.journal.on_cursor.append(self._cursor_moved)
        log.info("deadlines: %s", ", ".join(f"{k} within {r.within:g} s by {r.consumer} ({len(self.pending[k].items)} "
                                            "waiting)" for k, r in self.rules.items()))
        self._task = asyncio.create_task(self._run(), name="deadlines")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    def healthy(self) -> bool:
        return self._task is None or not self._task.done()

    def _cursor(self, consumer: str) -> int:
        """A consumer not registered yet has picked up nothing; a removed one what it had acked."""
        return self.journal.cursors.get(consumer, self.floors.get(consumer, self.journal.first_seq - 1))

    def _records(self, records: list[fr.Record]) -> None:
        for pending in self.pending.values():
            pending.add(records)

    def _cursor_moved(self, consumer: str, old: int | None, new: int | None) -> None:
        if new is None:
            if old is not None and any(r.consumer == consumer for r in self.rules.values()):
                self.floors[consumer] = old
                self._dirty = True
                self._wake.set()
            return
        for kind, rule in self.rules.items():
            if rule.consumer == consumer:
                self._to_clear.update(s for s in self.pending[kind].drop_to(new) if s in self.reported)
        if self._to_clear:
            self._wake.set()

    async def _run(self) -> None:
        while True:
            try:
                await self._check()
            except Exception:  # e.g. the state file cannot be written: try again, do not die
                log.exception("deadlines: check failed")
            try:
                await asyncio.wait_for(self._wake.wait(), TICK)
            except TimeoutError:
                pass
            self._wake.clear()

    async def _check(self) -> None:
        now = time.time()
        for seq in sorted(self._to_clear):
            if self._retry_at.get(seq, 0) <= now:
                await self._clear(seq)
        due = [(kind, seq, ts) for kind, pending in self.pending.items() for seq, ts in pending.items
               if seq not in self.reported and ts / 1e6 + self.rules[kind].within <= now
               and self._retry_at.get(seq, 0) <= now]
        for kind, seq, ts in due:
            await self._report(kind, seq, ts)
        if self._dirty:
            await self._save()

    async def _report(self, kind: str, seq: int, ts: int) -> None:
        rule = self.rules[kind]
        body = {"kind": kind, "seq": seq, "consumer": rule.consumer, "within": rule.within,
                "appended_at": ts / 1e6, "due_at": ts / 1e6 + rule.within}
        try:
            (written,) = await self.journal.append([Entry(OVERDUE, body)])
        except JournalError as e:
            self._retry_at[seq] = time.time() + RETRY
            log.error("record %d (%s) is overdue for %s, and the journal refused the report: %s",
                      seq, kind, rule.consumer, e)
            return
        self._retry_at.pop(seq, None)
        self.reported[seq] = {**body, "overdue_seq": written.seq}
        log.warning("record %d (%s) not picked up by %s within %g s: overdue (journal.overdue, seq %d)",
                    seq, kind, rule.consumer, rule.within, written.seq)
        self.publish({"event": OVERDUE, **body, "overdue_seq": written.seq})
        if all(s != seq for s, _ in self.pending[kind].items):
            self._to_clear.add(seq)  # acked while the report was being written
        await self._save()

    async def _clear(self, seq: int) -> None:
        info = self.reported[seq]
        now = time.time()
        body = {"kind": info["kind"], "seq": seq, "consumer": info["consumer"], "overdue_seq": info["overdue_seq"],
                "acked_at": now, "late_by": round(now - info["due_at"], 3)}
        try:
            (written,) = await self.journal.append([Entry(CLEARED, body)])
        except JournalError as e:
            self._retry_at[seq] = time.time() + RETRY
            log.error("cannot journal that overdue record %d was picked up: %s", seq, e)
            return
        self._retry_at.pop(seq, None)
        self._to_clear.discard(seq)
        del self.reported[seq]
        log.info("overdue record %d (%s) picked up by %s, %.0f s late", seq, info["kind"], info["consumer"],
                 body["late_by"])
        self.publish({"event": CLEARED, **body, "cleared_seq": written.seq})
        await self._save()

    async def _save(self) -> None:
        await self.journal.save_state(STATE_FILE, msgpack.packb(
            {"seq": self.journal.last_seq, "reported": self.reported, "floors": self.floors}, use_bin_type=True))
        self._dirty = False

    def describe(self) -> dict[str, Any]:
        """For `status`: per kind, records waiting for pickup and the overdue ones."""
        return {kind: {"consumer": rule.consumer, "within": rule.within, "waiting": len(self.pending[kind].items),
                       "overdue": sorted(s for s, i in self.reported.items() if i["kind"] == kind)}
                for kind, rule in self.rules.items()}

    def summary(self) -> str:
        overdue = len(self.reported)
        return f"{overdue} overdue" if overdue else ""
