"""Head office hears when a till's POS app did not take a record over in time (a web order not
picked up: `journal.overdue`), and when it did later (`journal.overdue_cleared`): both are edged's
own records in the till's journal, so they come up with everything else; the ingest keeps them as
`alerts` rows in the same transaction as the records (docs/FLEET.md, "Alerts")."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from ..day.backend import Db
from ..journal import frame as fr

log = logging.getLogger("edged.fleet")
KINDS = ("journal.overdue", "journal.overdue_cleared")


def _fields(body: object, names: tuple[str, ...], types: tuple[Any, ...]) -> tuple | None:
    """The body's fields of these names and types, ints as seqs and numbers as finite times; None
    for anything else (a till's own record, but a head office never trusts a shape it did not check)."""
    if not isinstance(body, dict):
        return None
    values = tuple(body.get(n) for n in names)
    for v, t in zip(values, types):
        if not isinstance(v, t) or isinstance(v, bool):
            return None
        if isinstance(v, int) and not 0 <= v < 1 << 63 or isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, str) and (len(v) > 128 or "\0" in v):
            return None
    return values


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
            # A clear may have come first (batches of two ingest workers, a batch refused and sent again)
            db.execute("INSERT INTO alerts (till, record_seq, consumer, kind, overdue_seq, due_at) "
                       "VALUES (?,?,?,?,?,?) ON CONFLICT (till, record_seq, consumer) DO UPDATE SET "
                       "kind=excluded.kind, overdue_seq=excluded.overdue_seq, due_at=excluded.due_at",
                       (till, seq, consumer, kind, rec.seq, float(due_at)))
            log.warning("ingest: %s: %s record %d not taken over by %s in time (due %.0f)", till, kind, seq,
                        consumer, due_at)
        elif rec.kind == "journal.overdue_cleared":
            got = _fields(rec.body, ("seq", "consumer", "acked_at"), (int, str, (int, float)))
            if got is None:
                log.error("ingest: %s record %d: a journal.overdue_cleared out of shape", till, rec.seq)
                continue
            seq, consumer, acked_at = got
            db.execute("INSERT INTO alerts (till, record_seq, consumer, kind, overdue_seq, due_at, cleared_seq, "
                       "cleared_at) VALUES (?,?,?,'',0,0,?,?) ON CONFLICT (till, record_seq, consumer) DO UPDATE SET "
                       "cleared_seq=excluded.cleared_seq, cleared_at=excluded.cleared_at",
                       (till, seq, consumer, rec.seq, float(acked_at)))


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
    where, params = ["overdue_seq > 0"], []  # a clear whose overdue has not come yet is not an alert
    if not everything:
        where.append("cleared_seq IS NULL")
    if till is not None:
        where.append("till=?")
        params.append(till)
    sql = ("SELECT till, record_seq, consumer, kind, overdue_seq, due_at, cleared_seq, cleared_at FROM alerts WHERE "
           + " AND ".join(where) + " ORDER BY due_at, till, record_seq")
    return [Alert(*row) for row in db.execute(sql, params).fetchall()]
