"""Business days: closing one, and which closed days have been exported (docs/JOURNAL.md).

A day is the records from the one after the previous day close up to its own
`day.close` record. The close is built on the journal thread from the durable
records with no append between (Journal.append_built), then the segment is
rotated, so every day starts a segment. The `day.close` body sums the day up:
sequence range, counts per kind, number ranges used, and the chain head,
which exports and audits check against. Closing a day again answers the same
record (tx_id `day.close:<date>`).

What is closed and exported is kept in memory and in the state file `days`,
rebuilt at startup from it plus the `day.close` / `day.exported` records after
it, so retention deleting old records never forgets a day. A record that is
not one edged wrote (journal/kinds.py), or does not follow the days before it,
is skipped, logged and counted in `status`.
"""
from __future__ import annotations

import asyncio
import collections
import datetime
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ..identity import Identity
from ..journal import kinds, statefile
from ..journal.frame import Record
from ..journal.service import Journal
from ..journal.shapes import DATE, Int, Map, MapOf
from ..journal.store import Entry, Store
from ..relay import protocol as p
from .signing import sign_day

log = logging.getLogger("edged.day")
STATE = "days"
_SEQ = {"seq": Int(1)}
_STATE = Map({"closed": MapOf(DATE, Map({**kinds.BODIES["day.close"].required, **_SEQ},
                                        kinds.BODIES["day.close"].optional)),
              "exported": MapOf(DATE, Map({**kinds.BODIES["day.exported"].required, **_SEQ},
                                          kinds.BODIES["day.exported"].optional)),
              "from_seq": Int(1)})
STATE_REMEDY = ("remove it: edged rebuilds it from the journal (days whose records retention has deleted are "
                "then missing from `edged day list`)")


def business_day(value: Any, what: str = "business_day") -> str:
    """A YYYY-MM-DD string that is a real date, or bad_request naming it."""
    try:
        if isinstance(value, str) and len(value) == 10:
            return datetime.date.fromisoformat(value).isoformat()
    except ValueError:
        pass
    raise p.RequestError(p.BAD_REQUEST, f"{what}: a date as YYYY-MM-DD, got {value!r}")


class DayBook:
    name = "days"

    def __init__(self, journal: Journal, till_id: str, publish: p.Publish,
                 exclude_kinds: list[str] | tuple[str, ...] = (), identity: Identity | None = None) -> None:
        self.journal = journal
        self.identity = identity  # signs each day.close (day/signing.py); None: unsigned, as before
        self.till_id = till_id
        # export.exclude_kinds as the day is closed: its exports leave out these kinds and no
        # others, checkably (the record is in the chain), however the config changes later.
        self.exclude_kinds = sorted(exclude_kinds)
        self.publish = publish
        self.closed: dict[str, dict[str, Any]] = {}  # date -> day.close body + its seq
        self.exported: dict[str, dict[str, Any]] = {}  # date -> day.exported body of the last export
        self._from_seq = 1  # records from here on are not in the state file yet
        self._closing = asyncio.Lock()  # one close at a time: each starts where the last ended

    async def start(self) -> None:
        state = await statefile.load(self.journal, STATE, _STATE, STATE_REMEDY)
        if state:
            self.closed, self.exported, self._from_seq = state["closed"], state["exported"], state["from_seq"]
        for rec in await self.journal.scan(self._from_seq, ("day.close", "day.exported")):
            if self.journal.skipped.fits(self.name, rec):
                why = self._misfit(rec)
                if why is None:
                    self._apply(rec.kind, rec.body, rec.seq)
                else:
                    self.journal.skipped.note(self.name, rec.seq, rec.kind, why)
        if self.journal.last_seq + 1 > self._from_seq:
            await self._save()  # the next start reads on from here, not the whole journal again

    async def stop(self) -> None:
        pass

    def healthy(self) -> bool:
        return True

    def _misfit(self, rec: Record) -> str | None:
        """Why a well-formed record does not follow the days known before it (None: it does)."""
        day = rec.body["business_day"]
        if rec.kind == "day.exported":
            return None if day in self.closed else f"exports {day}, which is not closed"
        if day in self.closed:
            return f"closes {day} again (closed by record {self.closed[day]['seq']})"
        last = self.last_closed()
        if last is not None and day < last["business_day"]:  # days close in date order
            return f"closes {day}, before the last closed day {last['business_day']} (record {last['seq']})"
        return None

    def _apply(self, kind: str, body: dict[str, Any], seq: int) -> None:
        if kind == "day.close":
            self.closed[body["business_day"]] = {**body, "seq": seq}
        else:
            self.exported[body["business_day"]] = {**body, "seq": seq}

    async def _save(self) -> None:
        self._from_seq = self.journal.last_seq + 1
        await self.journal.save_state(STATE, msgpack.packb(
            {"closed": self.closed, "exported": self.exported, "from_seq": self._from_seq}, use_bin_type=True))

    def last_closed(self) -> dict[str, Any] | None:
        return self.closed[max(self.closed)] if self.closed else None

    async def close(self, day: str, who: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """(the day's close record, whether it existed already)."""
        async with self._closing:
            return await self._close(day, who)

    async def _close(self, day: str, who: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        if day in self.closed:
            return self.closed[day], True
        last = self.last_closed()
        if last is not None and day < last["business_day"]:
            raise p.RequestError(p.BAD_REQUEST, f"business_day {day} is before the last closed day "
                                                f"{last['business_day']}; days close in order")
        start = last["seq"] + 1 if last else 1
        built: dict[str, Any] = {}

        def build(store: Store) -> tuple[Entry, Callable[[Store], None]]:
            if start < store.first_seq:
                raise p.RequestError(p.BAD_REQUEST, f"records {start}..{store.first_seq - 1} of this day are no "
                                                    "longer retained; the day cannot be closed whole")
            counts: collections.Counter[str] = collections.Counter()
            numbers: dict[str, list[int]] = {}
            chain, end = store.chain_before(start), start - 1
            for rec in store.records(start):
                counts[rec.kind] += 1
                if rec.number is not None:
                    lo, hi = numbers.get(rec.counter or "", [rec.number, rec.number])
                    numbers[rec.counter or ""] = [min(lo, rec.number), max(hi, rec.number)]
                chain, end = rec.chain, rec.seq
            body = built["body"] = {"business_day": day, "till_id": self.till_id, "first_seq": start,
                                    "last_seq": end, "counts": dict(counts), "numbers": numbers, "chain": chain,
                                    "closed_at": time.time(), **who}
            if self.exclude_kinds:
                body["excluded_kinds"] = self.exclude_kinds
            if self.identity is not None:
                sign_day(body, self.identity)
            return Entry("day.close", body, tx_id=f"day.close:{day}"), Store.rotate

        seq = (await self.journal.append_built(build))[0].seq
        body = built["body"]
        self._apply("day.close", body, seq)
        await self._save()
        log.info("business day %s closed: records %d..%d, %s", day, body["first_seq"], body["last_seq"],
                 ", ".join(f"{k} {n}" for k, n in sorted(body["counts"].items())) or "no records")
        self.publish({"event": "day.closed", "business_day": day, "seq": seq,
                      "first_seq": body["first_seq"], "last_seq": body["last_seq"]})
        return self.closed[day], False

    async def mark_exported(self, day: str, body: dict[str, Any]) -> dict[str, Any]:
        appended = (await self.journal.append([Entry("day.exported", {"business_day": day, **body})]))[0]
        self._apply("day.exported", {"business_day": day, **body}, appended.seq)
        await self._save()
        return self.exported[day]
