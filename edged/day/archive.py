"""Head office: `edged import` merges exports into an archive, `edged archive status` reports it.

The archive is one SQLite file (`DIR/archive.sqlite`): every record of every
till, keyed by (till, seq), with its chain link and exact frame. An export is
checked first (the same checks as `edged verify`) and imported in one
transaction: a record the archive already has with the same chain link is
skipped (importing a stick twice adds nothing); the same seq with a different
link is a conflict: that export is refused as a whole and named. The chain is
also checked where an export meets records already archived. Gaps (seqs
missing between the first and last archived record of a till) are reported.

Records an export left out on purpose (the till's `export.exclude_kinds`) are
archived as runs: their seq range, the day, the kinds and the chain link after
them. They are not gaps, and an export meeting a run is chain-checked against
its link. An export that does carry those records (from another till image
that kept them) adds them as usual; `archive status` then no longer counts
them as left out.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import verify

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (till TEXT NOT NULL, seq INTEGER NOT NULL, chain BLOB NOT NULL,
    ts INTEGER NOT NULL, kind TEXT NOT NULL, business_day TEXT NOT NULL, frame BLOB NOT NULL,
    PRIMARY KEY (till, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS days (till TEXT NOT NULL, business_day TEXT NOT NULL, first_seq INTEGER NOT NULL,
    last_seq INTEGER NOT NULL, imported_at REAL NOT NULL, source TEXT NOT NULL, PRIMARY KEY (till, business_day));
CREATE TABLE IF NOT EXISTS excluded (till TEXT NOT NULL, first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    chain BLOB NOT NULL, business_day TEXT NOT NULL, kinds TEXT NOT NULL, PRIMARY KEY (till, first_seq));
"""


@dataclass
class Outcome:
    added: int = 0
    skipped: int = 0
    refused: list[str] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)


def open_archive(directory: Path) -> sqlite3.Connection:
    directory.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(directory / "archive.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.executescript(SCHEMA)
    return db


def import_exports(db: sqlite3.Connection, paths: list[Path]) -> Outcome:
    out = Outcome()
    for ex in sorted((verify.check(p) for p in verify.find(paths)), key=lambda e: e.manifest.get("first_seq", 0)):
        if ex.problems:
            out.refused.append(f"{ex.label} ({ex.path}): " + "; ".join(ex.problems))
            continue
        _import_one(db, ex, out)
    return out


def _import_one(db: sqlite3.Connection, ex: verify.Export, out: Outcome) -> None:
    m = ex.manifest
    till, day = m["till_id"], m["business_day"]
    data = (ex.path / "journal.seg").read_bytes()
    db.execute("BEGIN IMMEDIATE")
    try:
        prev = _link(db, till, m["first_seq"] - 1)
        if prev is not None and prev.hex() != m["chain_before"]:
            raise _Conflict(f"its chain before seq {m['first_seq']} differs from the archived record "
                            f"{m['first_seq'] - 1}")
        added = skipped = 0
        pos = verify.fr.SEG_HEAD_SIZE
        for rec in ex.records:
            have = db.execute("SELECT chain FROM records WHERE till=? AND seq=?", (till, rec.seq)).fetchone()
            frame = data[pos:pos + rec.size]
            pos += rec.size
            if have is not None:
                if have[0] != rec.chain:
                    raise _Conflict(f"seq {rec.seq} is archived with another chain link: the same seq twice "
                                    "with different contents")
                skipped += 1
                continue
            db.execute("INSERT INTO records VALUES (?,?,?,?,?,?,?)",
                       (till, rec.seq, rec.chain, rec.ts, rec.kind, day, frame))
            added += 1
        excluded = m.get("excluded") or {}
        for first, last, link in excluded.get("runs", []):
            have = _link(db, till, last)
            if have is not None and have.hex() != link:
                raise _Conflict(f"left-out records {first}..{last} end in another chain link than the archived "
                                f"record {last}")
            db.execute("INSERT OR IGNORE INTO excluded VALUES (?,?,?,?,?,?)",
                       (till, first, last, bytes.fromhex(link), day, ",".join(excluded["kinds"])))
        db.execute("INSERT OR REPLACE INTO days VALUES (?,?,?,?,?,?)",
                   (till, day, m["first_seq"], m["last_seq"], time.time(), str(ex.path)))
        db.execute("COMMIT")
    except _Conflict as e:
        db.execute("ROLLBACK")
        out.refused.append(f"CONFLICT {till} {day} ({ex.path}): {e}")
        return
    except BaseException:
        db.execute("ROLLBACK")
        raise
    out.added += added
    out.skipped += skipped
    left_out = sum((m.get("excluded") or {}).get("counts", {}).values())
    out.imported.append(f"{till} {day}: {added} record{'' if added == 1 else 's'} added, "
                        f"{skipped} already archived"
                        + (f", {left_out} left out by the till (export.exclude_kinds)" if left_out else ""))


def _link(db: sqlite3.Connection, till: str, seq: int) -> bytes | None:
    """The chain link after seq: an archived record's, or a left-out run's that ends there."""
    row = db.execute("SELECT chain FROM records WHERE till=? AND seq=?", (till, seq)).fetchone()
    if row is None:
        row = db.execute("SELECT chain FROM excluded WHERE till=? AND last_seq=?", (till, seq)).fetchone()
    return None if row is None else bytes(row[0])


class _Conflict(Exception):
    pass


def status(db: sqlite3.Connection) -> dict[str, dict]:
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
        kinds = sorted({k for (ks,) in db.execute("SELECT DISTINCT kinds FROM excluded WHERE till=?", (till,))
                        for k in ks.split(",")})
        days = [d for (d,) in db.execute("SELECT business_day FROM days WHERE till=? ORDER BY first_seq", (till,))]
        out[till] = {"records": n, "first_seq": lo, "last_seq": hi, "gaps": gaps, "days": days,
                     "left_out": left_out, "left_out_kinds": kinds}
    return out


def gap_lines(db: sqlite3.Connection) -> list[str]:
    lines = []
    for till, st in status(db).items():
        for lo, hi in st["gaps"]:
            after = _day_of(db, till, lo - 1)
            before = _day_of(db, till, hi + 1)
            lines.append(f"{till}: gap: records {lo}..{hi} missing (after {after}, before {before}); "
                         "re-export the days between by date on the till")
    return lines


def _day_of(db: sqlite3.Connection, till: str, seq: int) -> str:
    row = db.execute("SELECT business_day FROM records WHERE till=? AND seq=? UNION ALL SELECT business_day "
                     "FROM excluded WHERE till=? AND ? BETWEEN first_seq AND last_seq", (till, seq, till, seq)).fetchone()
    return row[0] if row else "?"
