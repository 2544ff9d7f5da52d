"""Head office hears when a till's POS app did not take a record over in time (a web order not
picked up: `journal.overdue`), and when it did later (`journal.overdue_cleared`): both are edged's
own records in the till's journal, so they come up with everything else; the ingest keeps them as
`alerts` rows in the same transaction as the records (docs/FLEET.md, "Alerts")."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..day.backend import Db
from ..journal import frame as fr

log = logging.getLogger("edged.fleet")
KINDS = ("journal.overdue", "journal.overdue_cleared")


def _fields(body: object, names: tuple[str, ...], types: tuple[Any, ...]) -> tuple | None:
    if not isinstance(body, dict):
        return None
    values = tuple(body.get(n) for n in names)
    ok = all(isinstance(v, t) and not isinstance(v, bool) for v, t in zip(values, types))
    return values if ok else None


def record(db: Db, till: str, recs: list[fr.Record]) -> None:
    """The batch's overdue records as alerts (a resend changes nothing); one out of shape is logged
    and left as a record only: the batch is still the till's journal, checked by its chain."""
    for rec in recs:
        if rec.kind == "journal.overdue":
            got = _fields(rec.body, ("seq", "consumer", "kind", "due_at"), (int, str, str, (int, float)))
            if got is None:
                log.error("ingest: %s record %d: a journal.overdue out of shape: not listed as an alert", till,
                          rec.seq)
                continue
            seq, consumer, kind, due_at = got
            db.execute("INSERT INTO alerts (till, record_seq, consumer, kind, overdue_seq, due_at) "
                       "VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                       (till, seq, consumer[:128], kind[:128], rec.seq, float(due_at)))
            log.warning("ingest: %s: %s record %d not taken over by %s in time (due %.0f)", till, kind, seq,
                        consumer, due_at)
        elif rec.kind == "journal.overdue_cleared":
            got = _fields(rec.body, ("seq", "consumer", "acked_at"), (int, str, (int, float)))
            if got is None:
                log.error("ingest: %s record %d: a journal.overdue_cleared out of shape", till, rec.seq)
                continue
            seq, consumer, acked_at = got
            db.execute("UPDATE alerts SET cleared_seq=?, cleared_at=? WHERE till=? AND record_seq=? AND consumer=?",
                       (rec.seq, float(acked_at), till, seq, consumer[:128]))


@dataclass
class Alert:
    till: str
    record_seq: int
    consumer: str
    kind: str
    overdue_seq: int
    due_at: float
    cleared_seq: int | None
    cleared_at: float | None

    def as_json(self) -> dict:
        return dict(self.__dict__)


def listed(db: Db, everything: bool = False, till: str | None = None) -> list[Alert]:
    """Open alerts (with everything: cleared ones too), oldest first."""
    where, params = [], []
    if not everything:
        where.append("cleared_seq IS NULL")
    if till is not None:
        where.append("till=?")
        params.append(till)
    sql = ("SELECT till, record_seq, consumer, kind, overdue_seq, due_at, cleared_seq, cleared_at FROM alerts"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY due_at, till, record_seq")
    return [Alert(*row) for row in db.execute(sql, params).fetchall()]
