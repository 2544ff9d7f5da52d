"""Head office: `edged import` merges exports into an archive, `edged archive status` reports it.

The archive is one SQLite file (`DIR/archive.sqlite`) or a PostgreSQL database
(`postgresql://...`; day/backend.py: one code path for both): every record of every
till, keyed by (till, seq), with its chain link and exact frame, and the keys
enrolled for each till (day/trust.py). An export is accepted only when signed
by an enrolled, unretired key of its till (or, with --allow-unsigned, made
before tills signed). It is checked and imported in one pass (day/verify.py):
the frames go into the archive as they are verified, in one transaction that
is rolled back when anything fails at the end (SHA-256, day.close signature,
counts), so what is archived is exactly the bytes verified, read once. A
record the archive already has with the same chain link is skipped (importing
a stick twice adds nothing); the same seq with a different link is a
conflict: that export is refused as a whole and named. Where an export meets
archived records its chain must link on both sides: to the record (or
left-out run) before it and to the one after it, so nothing can be slipped
into a gap. Gaps (seqs missing between the first and last archived record of
a till) are reported.

Records an export left out on purpose (the till's `export.exclude_kinds`) are
archived as runs: their seq range, the day, the kinds and the chain link after
them. They are not gaps, and an export meeting a run is chain-checked against
its link. An export that does carry those records (from another till image
that kept them) adds them as usual; `archive status` then no longer counts
them as left out.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..journal import frame as fr
from . import backend, verify
from . import trust as keys
from .backend import Db
from .trust import Trust

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (till TEXT NOT NULL, seq INTEGER NOT NULL, chain BLOB NOT NULL,
    ts INTEGER NOT NULL, kind TEXT NOT NULL, business_day TEXT NOT NULL, frame BLOB NOT NULL,
    PRIMARY KEY (till, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS days (till TEXT NOT NULL, business_day TEXT NOT NULL, first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL, imported_at REAL NOT NULL, source TEXT NOT NULL, PRIMARY KEY (till, business_day));
CREATE TABLE IF NOT EXISTS excluded (till TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    chain BLOB NOT NULL, business_day TEXT NOT NULL, kinds TEXT NOT NULL, PRIMARY KEY (till, first_seq));
CREATE TABLE IF NOT EXISTS online (till TEXT PRIMARY KEY, archived_through INTEGER NOT NULL, chain BLOB NOT NULL,
    last_seen REAL NOT NULL, batches INTEGER NOT NULL DEFAULT 0, journal_last INTEGER);
CREATE TABLE IF NOT EXISTS lost (till TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    seq INTEGER NOT NULL, PRIMARY KEY (till, first_seq));
CREATE TABLE IF NOT EXISTS outbox (channel TEXT NOT NULL, pos INTEGER NOT NULL, kind TEXT NOT NULL, body BLOB NOT NULL,
    created_at REAL NOT NULL, expires_at REAL, collapse TEXT NOT NULL, PRIMARY KEY (channel, pos)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS outbox_collapse ON outbox (channel, collapse, pos);
CREATE TABLE IF NOT EXISTS channels (channel TEXT PRIMARY KEY, last_pos INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS downstream (till TEXT NOT NULL, channel TEXT NOT NULL, acked INTEGER NOT NULL,
    sent_through INTEGER NOT NULL, last_sent INTEGER NOT NULL, sent_at REAL, hello_at REAL, acked_at REAL,
    PRIMARY KEY (till, channel));
CREATE TABLE IF NOT EXISTS skipped (till TEXT NOT NULL, channel TEXT NOT NULL, pos INTEGER NOT NULL,
    reason TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (till, channel, pos));
CREATE TABLE IF NOT EXISTS presence (till TEXT PRIMARY KEY, status TEXT NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS alerts (till TEXT NOT NULL, record_seq INTEGER NOT NULL, consumer TEXT NOT NULL,
    kind TEXT NOT NULL, overdue_seq INTEGER NOT NULL, due_at REAL NOT NULL, cleared_seq INTEGER, cleared_at REAL,
    PRIMARY KEY (till, record_seq, consumer));
""" + keys.SCHEMA
# Added since: which key signed each day ("unsigned" under --allow-unsigned) and the chain before it,
# which an export filling the gap before this day must end in.
# And the till's last journaled seq as its relay last said (its lag), for archives an ingest made before.
_ADDED = {"days": {"fingerprint": "TEXT", "chain_before": "BLOB"}, "online": {"journal_last": "INTEGER"}}


@dataclass
class Outcome:
    added: int = 0
    skipped: int = 0
    refused: list[str] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)


def open_archive(where: str | Path) -> Db:
    """The archive in directory DIR (SQLite, created if new) or at a postgresql:// URL."""
    db = backend.connect(where)
    try:
        db.ensure(SCHEMA, _ADDED)
    except backend.ArchiveError as e:
        db.close()
        raise backend.ArchiveError(f"{backend.shown(where)}: {e}") from None
    return db


def import_exports(db: Db, paths: list[Path], allow_unsigned: bool = False) -> Outcome:
    out = Outcome()
    trust = keys.from_archive(db)
    for ex in verify.loaded(paths):
        if ex.problems:
            out.refused.append(ex.line())
            continue
        _import_one(db, ex, trust, allow_unsigned, out)
    return out


class _Conflict(Exception):
    pass


class _Batches:
    """The sink of one export's verified frames: inserts the new ones, skips those archived with the
    same chain link, raises _Conflict on one archived with another."""

    def __init__(self, db: Db, till: str, day: str, first: int, last: int) -> None:
        self.db, self.till, self.day = db, till, day
        self.first, self.last = first, last  # the manifest's range: nothing outside it reaches the database
        self.added = self.skipped = 0
        # Above the till's highest archived seq no record can be archived already: the usual import
        # (a day not seen before) then needs no look-up per batch.
        self.top = db.execute("SELECT max(seq) FROM records WHERE till=?", (till,)).fetchone()[0] or 0

    def __call__(self, batch: list[tuple[int, bytes, int, str, bytes]]) -> None:
        lo, hi = batch[0][0], batch[-1][0]
        if lo < self.first or hi > self.last:
            raise _Refused(f"{self.till} {self.day}: journal.seg holds seqs {lo}..{hi}, outside the manifest's "
                           f"{self.first}..{self.last}")
        till, day = self.till, self.day
        if lo > self.top:
            self.db.insert("records", [(till, seq, chain, ts, kind, day, frame)
                                       for seq, chain, ts, kind, frame in batch])
            self.added += len(batch)
            return
        have = dict(self.db.execute("SELECT seq, chain FROM records WHERE till=? AND seq BETWEEN ? AND ?",
                                    (till, lo, hi)))
        new = []
        for seq, chain, ts, kind, frame in batch:
            old = have.get(seq)
            if old is None:
                new.append((till, seq, chain, ts, kind, day, frame))
            elif old != chain:
                raise _Conflict(f"seq {seq} is archived with another chain link: the same seq twice with "
                                "different contents")
        self.db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?)", new)
        self.added += len(new)
        self.skipped += len(batch) - len(new)


def _import_one(db: Db, ex: verify.Export, trust: Trust, allow_unsigned: bool,
                out: Outcome) -> None:
    m = ex.manifest
    till, day = m["till_id"], m["business_day"]
    db.begin(till)
    try:
        sink = _Batches(db, till, day, m["first_seq"], m["last_seq"])  # in the transaction: its `top` holds
        prev = _link(db, till, m["first_seq"] - 1)
        if prev is not None and prev.hex() != m["chain_before"]:
            raise _Conflict(f"its chain before seq {m['first_seq']} differs from the archived record "
                            f"{m['first_seq'] - 1}")
        verify.check(ex, trust, allow_unsigned, sink)
        if ex.problems:
            raise _Refused(ex.line())
        if ex.unsigned:
            _unsigned_allowed(db, till, m["first_seq"])
        _same_day(db, till, day, m)
        _next_links(db, till, m)
        excluded = m.get("excluded") or {}
        for first, last, link in excluded.get("runs", []):
            have = _link(db, till, last)
            if have is not None and have.hex() != link:
                raise _Conflict(f"left-out records {first}..{last} end in another chain link than the archived "
                                f"record {last}")
            db.execute("INSERT INTO excluded VALUES (?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                       (till, first, last, bytes.fromhex(link), day, ",".join(excluded["kinds"])))
        fingerprint = "unsigned" if ex.unsigned else m["key"]["fingerprint"]
        if not ex.unsigned:
            keys.learn_epoch(db, fingerprint, m["key"]["epoch"])
        db.execute("INSERT INTO days (till, business_day, first_seq, last_seq, imported_at, source, "
                   "fingerprint, chain_before) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                   (till, day, m["first_seq"], m["last_seq"], time.time(), str(ex.path), fingerprint,
                    bytes.fromhex(m["chain_before"])))
        if not ex.unsigned:  # the same day, archived unsigned before, now known signed
            db.execute("UPDATE days SET fingerprint=?, source=? WHERE till=? AND business_day=? AND "
                       "fingerprint='unsigned'", (fingerprint, str(ex.path), till, day))
        db.commit()
    except _Conflict as e:
        db.rollback()
        out.refused.append(f"CONFLICT {till} {day} ({ex.path}): {e}")
        return
    except _Refused as e:
        db.rollback()
        out.refused.append(str(e))
        return
    except Exception as e:  # a check missed something: that export is refused, the others go on
        db.rollback()
        out.refused.append(f"{ex.line() if ex.problems else ex.label} ({ex.path}): could not be imported "
                           f"({type(e).__name__}: {e})")
        return
    except BaseException:
        db.rollback()
        raise
    out.added += sink.added
    out.skipped += sink.skipped
    how = " (unsigned, --allow-unsigned)" if ex.unsigned else f", signed by {ex.signer}"
    out.imported.append(f"{till} {day}: {sink.added} record{'' if sink.added == 1 else 's'} added, "
                        f"{sink.skipped} already archived"
                        + (f", {ex.left_out} left out by the till (export.exclude_kinds)" if ex.left_out else "")
                        + how)


class _Refused(Exception):
    pass


def _unsigned_allowed(db: Db, till: str, first_seq: int) -> None:
    """--allow-unsigned is for days closed before the till signed: none after a signed day of it."""
    row = db.execute("SELECT business_day FROM days WHERE till=? AND fingerprint != 'unsigned' AND first_seq < ? "
                     "ORDER BY first_seq LIMIT 1", (till, first_seq)).fetchone()
    if row is not None:
        raise _Refused(f"{till}: an unsigned export after {row[0]}, which the till signed: once a till signs "
                       "its days, every later day must be signed (--allow-unsigned does not cover it)")


def _same_day(db: Db, till: str, day: str, m: dict) -> None:
    """A day archived once keeps its records: another range under its name is a conflict."""
    row = db.execute("SELECT first_seq, last_seq FROM days WHERE till=? AND business_day=?", (till, day)).fetchone()
    if row is not None and tuple(row) != (m["first_seq"], m["last_seq"]):
        raise _Conflict(f"{day} is archived as records {row[0]}..{row[1]}; this export says "
                        f"{m['first_seq']}..{m['last_seq']}")

def _next_links(db: Db, till: str, m: dict) -> None:
    """The archived record or day after this export must follow on from its chain_after."""
    after, nxt = bytes.fromhex(m["chain_after"]), m["last_seq"] + 1
    row = db.execute("SELECT chain, frame FROM records WHERE till=? AND seq=?", (till, nxt)).fetchone()
    if row is not None:
        if fr.link(after, bytes(row[1])) != bytes(row[0]):
            raise _Conflict(f"the archived record {nxt} after it does not follow on from its last record "
                            "(its chain does not link into the archive after the gap)")
    for (before,) in db.execute("SELECT chain_before FROM days WHERE till=? AND first_seq=? AND chain_before "
                                "IS NOT NULL", (till, nxt)):
        if bytes(before) != after:
            raise _Conflict(f"the archived day starting at seq {nxt} does not follow on from its last record "
                            "(its chain does not link into the archive after the gap)")


def _link(db: Db, till: str, seq: int) -> bytes | None:
    """The chain link after seq: an archived record's, or a left-out run's that ends there."""
    row = db.execute("SELECT chain FROM records WHERE till=? AND seq=?", (till, seq)).fetchone()
    if row is None:
        row = db.execute("SELECT chain FROM excluded WHERE till=? AND last_seq=?", (till, seq)).fetchone()
    return None if row is None else bytes(row[0])


def status(db: Db) -> dict[str, dict]:
    """Per till: days, records, first and last seq, records left out on purpose, gaps as
    (first missing, last missing)."""
    out = {}
    for till, n, lo, hi in db.execute("SELECT till, COUNT(*), MIN(seq), MAX(seq) FROM records GROUP BY till"):
        spans = db.execute("SELECT seq, seq FROM records WHERE till=? UNION ALL SELECT first_seq, last_seq "
                           "FROM excluded WHERE till=? ORDER BY 1", (till, till))
        gaps, covered = [], None
        for first, last in spans:  # a seq is there when archived or left out on purpose
            if covered is None:
                lo = first
            elif first > covered + 1:
                gaps.append((covered + 1, first - 1))
            covered = last if covered is None else max(covered, last)
        hi = max(hi, covered or hi)
        # Seqs left out and not archived since (a later export may have carried them after all).
        (left_out,) = db.execute("SELECT COALESCE(SUM(e.last_seq - e.first_seq + 1 - (SELECT COUNT(*) FROM records r "
                                 "WHERE r.till = e.till AND r.seq BETWEEN e.first_seq AND e.last_seq)), 0) "
                                 "FROM excluded e WHERE e.till=?", (till,)).fetchone()
        left_out = int(left_out)  # PostgreSQL's SUM is a numeric
        kinds = sorted({k for (ks,) in db.execute("SELECT DISTINCT kinds FROM excluded WHERE till=?", (till,))
                        for k in ks.split(",")})
        days = [d for (d,) in db.execute("SELECT business_day FROM days WHERE till=? ORDER BY first_seq", (till,))]
        signers = {fp: n for fp, n in db.execute("SELECT fingerprint, COUNT(*) FROM days WHERE till=? "
                                                "GROUP BY fingerprint", (till,))}
        enrolled = [{"fingerprint": k.fingerprint, "epoch": k.epoch, "retired": k.retired_at is not None,
                     "days": signers.pop(k.fingerprint, 0)} for k in keys.listed(db) if k.till == till]
        out[till] = {"records": n, "first_seq": lo, "last_seq": hi, "gaps": gaps, "days": days,
                     "left_out": left_out, "left_out_kinds": kinds, "keys": enrolled,
                     "other_signers": {str(fp): n for fp, n in signers.items()}, "online": _online(db, till)}
    return out


def _online(db: Db, till: str) -> dict | None:
    """The till's relay as the ingest last saw it (docs/FLEET.md); None when it never came online."""
    row = db.execute("SELECT archived_through, last_seen, batches, journal_last FROM online WHERE till=?",
                     (till,)).fetchone()
    if row is None:
        return None
    last = row[3]
    return {"archived_through": row[0], "last_seen": row[1], "batches": row[2], "journal_last": last,
            "lag": None if last is None else max(last - row[0], 0)}


def gap_lines(db: Db) -> list[str]:
    lines = []
    for till, st in status(db).items():
        for lo, hi in st["gaps"]:
            after = _day_of(db, till, lo - 1)
            before = _day_of(db, till, hi + 1)
            lines.append(f"{till}: gap: records {lo}..{hi} missing (after {after}, before {before}); "
                         "re-export the days between by date on the till")
    return lines


def _day_of(db: Db, till: str, seq: int) -> str:
    row = db.execute("SELECT business_day FROM records WHERE till=? AND seq=? UNION ALL SELECT business_day "
                     "FROM excluded WHERE till=? AND ? BETWEEN first_seq AND last_seq",
                     (till, seq, till, seq)).fetchone()
    return row[0] if row else "?"
