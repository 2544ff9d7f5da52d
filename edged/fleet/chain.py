"""The chain at a glance, from head office's archive: per till, whether its relay is online, how
far its journal is archived, how far it applied head office's records and what waits for it,
its open alerts, its last closed day and its last stick (`edged headoffice status`)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..day.backend import Db
from . import outbox


@dataclass
class Limits:
    """When a till counts as behind (exit 1 of `edged headoffice status`, for monitoring)."""

    max_lag: int = 10_000  # records journaled on the till and not yet archived
    max_silence: float = 3600.0  # seconds since head office last heard of the till's relay
    max_pending: int = 1_000  # head office's records due to the till and not yet applied


@dataclass
class Till:
    till: str
    link: str = "never"  # online / offline (its relay's retained status), never: no relay heard yet
    link_since: float | None = None
    last_seen: float | None = None  # the last batch, hello or status of its relay
    archived_through: int = 0
    journal_last: int | None = None
    down: dict[str, dict] = field(default_factory=dict)  # channel -> {applied, last, pending}
    overdue: int = 0
    last_day: str | None = None
    last_stick: float | None = None
    behind: list[str] = field(default_factory=list)

    @property
    def lag(self) -> int | None:
        return None if self.journal_last is None else max(0, self.journal_last - self.archived_through)

    def as_json(self) -> dict:
        return {**self.__dict__, "lag": self.lag}


def tills(db: Db, limits: Limits, now: float | None = None) -> list[Till]:
    now = time.time() if now is None else now
    out: dict[str, Till] = {}

    def one(name: str) -> Till:
        return out.setdefault(name, Till(name))

    for (name,) in db.execute("SELECT till FROM keys UNION SELECT till FROM online UNION SELECT till FROM presence "
                              "UNION SELECT till FROM days UNION SELECT till FROM downstream WHERE till <> ? UNION "
                              "SELECT substr(channel, 6) FROM channels WHERE channel LIKE 'till:%'",
                              (outbox.EVERY_TILL,)):
        one(name)
    for name, status, at in db.execute("SELECT till, status, at FROM presence"):
        t = one(name)
        t.link, t.link_since, t.last_seen = status, at, at
    for name, through, seen, journal_last in db.execute("SELECT till, archived_through, last_seen, journal_last "
                                                        "FROM online"):
        t = one(name)
        t.archived_through, t.journal_last = through, journal_last
        t.last_seen = max(t.last_seen or 0, seen)
    last = {c: p for c, p in db.execute("SELECT channel, last_pos FROM channels")}
    for name, channel, applied, hello_at, acked_at in db.execute(
            "SELECT till, channel, acked, hello_at, acked_at FROM downstream WHERE till <> ?", (outbox.EVERY_TILL,)):
        t = one(name)
        source = f"till:{name}" if channel == "till" else outbox.BROADCAST
        pending = db.execute("SELECT count(*) FROM outbox WHERE channel=? AND pos>? AND (expires_at IS NULL OR "
                             "expires_at > ?)", (source, applied, now)).fetchone()[0]
        t.down[channel] = {"applied": applied, "last": last.get(source, 0), "pending": pending}
        t.last_seen = max(t.last_seen or 0, hello_at or 0, acked_at or 0) or None
    for name, n in db.execute("SELECT till, count(*) FROM alerts WHERE cleared_seq IS NULL GROUP BY till"):
        one(name).overdue = n
    for name, day in db.execute("SELECT till, max(business_day) FROM days GROUP BY till"):
        one(name).last_day = day
    for name, at in db.execute("SELECT till, max(imported_at) FROM days WHERE source <> 'online' GROUP BY till"):
        one(name).last_stick = at
    for t in out.values():
        # A till that never said hello has its own records waiting all the same.
        own = f"till:{t.till}"
        if "till" not in t.down and last.get(own):
            t.down["till"] = {"applied": 0, "last": last[own], "pending": db.execute(
                "SELECT count(*) FROM outbox WHERE channel=? AND (expires_at IS NULL OR expires_at > ?)",
                (own, now)).fetchone()[0]}
        _judge(t, limits, now)
    return sorted(out.values(), key=lambda t: t.till)


def _judge(t: Till, limits: Limits, now: float) -> None:
    if t.lag is not None and t.lag > limits.max_lag:
        t.behind.append(f"{t.lag} records not archived (more than {limits.max_lag})")
    # Not for a till of sticks only, nor for one whose relay is connected (a shop closed overnight)
    if t.link != "online" and t.last_seen is not None and now - t.last_seen > limits.max_silence:
        t.behind.append(f"not heard for {int(now - t.last_seen)} s (more than {limits.max_silence:g})")
    pending = sum(d["pending"] for d in t.down.values())
    if pending > limits.max_pending:
        t.behind.append(f"{pending} of head office's records not applied (more than {limits.max_pending})")
    if t.overdue:
        t.behind.append(f"{t.overdue} overdue (`edged headoffice alerts`)")
