"""edged's own record kinds: reserved to edged, and the body each must have.

Clients may append any kind except those starting with a reserved prefix
(PROTOCOL.md, "Reserved kinds"); edged's own records are what it acts on
after a restart (closed days, print jobs, overdue reports), so a client must
never be able to write one. A journal written before these prefixes were
reserved, a bug or a damaged disk may still hold a record of such a kind
that does not fit: every reader checks the record here first. One that does
not fit is logged with its seq, counted in `status` (`degraded`) and skipped
by that reader only; it never stops a start.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, get_args

from .shapes import BOOL, BYTES, CHAIN, DATE, NUM, SEQ, STR, Choice, Int, ListOf, Map, MapOf, Maybe

if TYPE_CHECKING:
    from .frame import Record

log = logging.getLogger("edged.journal")

# Every kind edged journals lives under one of these; `edged.` is kept for kinds to come.
RESERVED = ("day.", "drawer.", "edged.", "identity.", "journal.", "print.", "usb.")

JobState = Literal["queued", "printing", "held", "done", "failed", "unknown", "expired"]
JOB_STATES: tuple[JobState, ...] = get_args(JobState)
_WHO = {"client": Maybe(STR), "pid": Int(), "uid": Int(), "gid": Int()}

BODIES: dict[str, Map] = {
    "print.job": Map({"job_id": STR, "printer": STR},
                     {"document": Map({}), "raw": BYTES, "copy_of": STR, "client": Map({}, _WHO)}),
    "print.state": Map({"job_id": STR, "state": Choice(JOB_STATES)}, {"reason": STR, "sent": BOOL}),
    "drawer.open": Map({"drawer": STR, "reason": STR}, {"job_id": STR, **_WHO}),
    "drawer.open_failed": Map({"drawer": STR, "error": STR}),
    "day.close": Map({"business_day": DATE, "till_id": STR, "first_seq": Int(1), "last_seq": SEQ,
                      "counts": MapOf(STR, SEQ), "numbers": MapOf(STR, ListOf(Int(), 2)), "chain": CHAIN,
                      "closed_at": NUM}, {"excluded_kinds": ListOf(STR), **_WHO,
                                          "signature": Map({"fingerprint": STR, "epoch": Int(1), "ed25519": BYTES})}),
    # A new key pair (edged/identity.py): the first, or one replacing a lost key (previous names it).
    "identity.key": Map({"epoch": Int(1), "public_key": STR, "fingerprint": STR, "till_id": STR},
                        {"previous": Maybe(STR), "reason": STR}),
    "day.exported": Map({"business_day": DATE, "path": STR, "manifest_sha256": STR, "first_seq": Int(1),
                         "last_seq": Int(1), "export_id": STR}, {"device": Maybe(STR)}),
    "journal.overdue": Map({"kind": STR, "seq": Int(1), "consumer": STR, "within": NUM, "appended_at": NUM,
                            "due_at": NUM}),
    "journal.overdue_cleared": Map({"kind": STR, "seq": Int(1), "consumer": STR, "overdue_seq": Int(1),
                                    "acked_at": NUM, "late_by": NUM}),
}


def reserved(kind: str) -> bool:
    return kind.startswith(RESERVED)


def problem(rec: Record) -> str | None:
    """Why this record of one of edged's kinds is not one edged wrote, or None when it fits."""
    shape = BODIES.get(rec.kind)
    if shape is None:
        return None
    why = shape.problem(rec.body, "body")
    if why is None and rec.kind in _TIED:
        why = _TIED[rec.kind](rec)
    return why


def _print_job(rec: Record) -> str | None:
    body = rec.body
    if ("document" in body) == ("raw" in body):
        return "body holds neither or both of document and raw"
    if rec.tx_id != f"print:{body['job_id']}":
        return f"tx_id {rec.tx_id!r} is not print:<job_id>"
    return None


def _day_close(rec: Record) -> str | None:
    body = rec.body
    if rec.tx_id != f"day.close:{body['business_day']}":
        return f"tx_id {rec.tx_id!r} is not day.close:<business_day>"
    # Built on the journal thread with no append between: it follows its day's last record.
    if body["last_seq"] != rec.seq - 1 or body["first_seq"] > rec.seq:
        return f"body's range {body['first_seq']}..{body['last_seq']} does not end just before it"
    return None


def _day_exported(rec: Record) -> str | None:
    if rec.body["last_seq"] < rec.body["first_seq"] or rec.body["last_seq"] >= rec.seq:
        return "body's range is not one of records before it"
    return None


_TIED = {"print.job": _print_job, "day.close": _day_close, "day.exported": _day_exported}


class Skipped:
    """Records of edged's kinds some reader could not use: logged, and counted for `status`."""

    KEEP = 100  # described in status, and logged one by one; beyond that only counted
    SEEN = 10_000  # (reader, seq) remembered so a record read again is not counted twice

    def __init__(self) -> None:
        self.count = 0
        self.records: list[dict[str, Any]] = []
        self._seen: set[tuple[str, int]] = set()

    def fits(self, reader: str, rec: Record) -> bool:
        """Does rec fit what edged writes? If not, note it for `reader` (which then skips it)."""
        why = problem(rec)
        if why is not None:
            self.note(reader, rec.seq, rec.kind, why)
        return why is None

    def note(self, reader: str, seq: int, kind: str, why: str) -> None:
        if (reader, seq) in self._seen:
            return
        if len(self._seen) < self.SEEN:
            self._seen.add((reader, seq))
        self.count += 1
        if len(self.records) < self.KEEP:
            self.records.append({"seq": seq, "kind": kind, "reader": reader, "problem": why})
            log.error("journal record %d (%s) is not one edged wrote: %s; skipped by %s", seq, kind, why, reader)
        elif len(self.records) == self.count - 1:
            log.error("more journal records do not fit what edged writes; counted in status, not logged")

    def describe(self) -> dict[str, Any]:
        """`status` `degraded`: how many records were skipped, and the first of them."""
        return {"skipped_records": self.count, "records": list(self.records)}

    def summary(self) -> str:
        return f"{self.count} record{'s' if self.count != 1 else ''} skipped" if self.count else ""
