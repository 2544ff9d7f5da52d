"""Print jobs: every job and every change of its state is in the journal first.

A `print` is acknowledged once its `print.job` record (tx_id `print:<job_id>`,
so the same job_id is one job for as long as the journal keeps it) is durable.
Each transition is a `print.state` record, then a `printer.job` event. On
startup the book is rebuilt from those records, starting at a checkpoint
(`print-jobs`) below which every job is finished; a job that was `printing`
(or held inside the printer) when edged died becomes `unknown`, never printed
again by itself. docs/JOURNAL.md lists the records. One that is not what edged
writes (journal/kinds.py), or whose document no longer passes the check a
`print` gets, is skipped, logged and counted in `status`.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ...journal import statefile
from ...journal.frame import Record
from ...journal.kinds import JobState
from ...journal.service import Journal
from ...journal.shapes import Int, Map
from ...journal.store import Entry
from ...relay.protocol import BAD_REQUEST, Publish, RequestError
from . import document

log = logging.getLogger("edged.jobs")

WAITING = ("queued", "held")
FINISHED: tuple[JobState, ...] = ("done", "failed", "unknown", "expired")
KINDS = ("print.job", "print.state")
CHECKPOINT = "print-jobs"
CHECKPOINT_REMEDY = "remove it: edged then rebuilds the print jobs from the whole journal (a slower start, once)"
READER = "print jobs"
HISTORY = 86400.0  # finished jobs stay in memory this long (older ones are read back on demand)


@dataclass
class Job:
    job_id: str
    printer: str
    seq: int  # of its print.job record: the queue order
    created: float
    document: dict[str, Any] | None = None
    raw: bytes | None = None
    copy_of: str | None = None
    client: dict[str, Any] = field(default_factory=dict)
    state: JobState = "queued"
    reason: str = ""  # held: why; failed/unknown/expired: what happened
    sent: bool = False  # the printer has the bytes: never sent again by edged itself
    updated: float = 0.0
    data: bytes | None = None  # rendered when accepted, so the spooler does not render it again
    kicks: bool | None = None  # raw bytes that kick the drawer (raw_escpos); None: not checked yet

    def apply(self, body: dict[str, Any], ts_us: int) -> None:
        """A `print.state` record's change (replayed at startup or read back later)."""
        self.state, self.reason = body.get("state", self.state), body.get("reason", "")
        self.sent = bool(body.get("sent", self.sent))
        self.updated = ts_us / 1e6

    @property
    def waiting(self) -> bool:
        return self.state in WAITING and not self.sent

    def public(self) -> dict[str, Any]:
        out = {"job_id": self.job_id, "printer": self.printer, "state": self.state, "created": self.created,
               "updated": self.updated or self.created}
        if self.reason:
            out["error" if self.state in ("failed", "unknown") else "reason"] = self.reason
        if self.copy_of:
            out["copy_of"] = self.copy_of
        return out


def job_from_record(seq: int, ts_us: int, body: dict[str, Any]) -> Job:
    return Job(body["job_id"], body["printer"], seq, ts_us / 1e6, body.get("document"), body.get("raw"),
               body.get("copy_of"), body.get("client", {}))


class JobBook:
    """All jobs of this run, by id; their states, persisted through the journal."""

    def __init__(self, journal: Journal, printers: set[str], publish: Publish) -> None:
        self.journal = journal
        self.printers = printers
        self.publish = publish
        self.jobs: dict[str, Job] = {}
        self.on_new: Callable[[Job], None] = lambda job: None  # the spooler's wake-up
        self._checkpoint = 0

    # --- startup ---

    async def restore(self) -> list[Job]:
        """Rebuild from the journal; returns the jobs that were cut off by a crash."""
        state = await statefile.load(self.journal, CHECKPOINT, Map({"from_seq": Int(1)}), CHECKPOINT_REMEDY)
        self._checkpoint = state["from_seq"] if state else 1
        for rec in await self.journal.scan(self._checkpoint, KINDS):
            self._replay(rec)
        cut_off = [j for j in self.jobs.values() if j.state not in FINISHED and (j.state == "printing" or j.sent)]
        for job in cut_off:
            await self.transition(job, "unknown", "edged stopped while the job was printing; not printed again "
                                                  "by itself (reprint it if it is missing)")
        for job in [j for j in self.jobs.values() if j.waiting and j.printer not in self.printers]:
            await self.transition(job, "failed", f"no printer {job.printer!r} is configured any more")
        waiting = sum(j.waiting for j in self.jobs.values())
        log.info("print jobs: %d known since seq %d, %d waiting, %d cut off by a stop", len(self.jobs),
                 self._checkpoint, waiting, len(cut_off))
        return cut_off

    def _fits(self, rec: Record) -> bool:
        if not self.journal.skipped.fits(READER, rec):
            return False
        if rec.kind == "print.job" and "document" in rec.body:
            try:
                document.check(rec.body["document"])
            except RequestError as e:
                self.journal.skipped.note(READER, rec.seq, rec.kind, e.message)
                return False
        return True

    def _replay(self, rec: Record) -> None:
        if not self._fits(rec):
            return
        if rec.kind == "print.job":
            self.jobs[rec.body["job_id"]] = job_from_record(rec.seq, rec.ts, rec.body)
            return
        job = self.jobs.get(rec.body["job_id"])
        if job is not None:
            job.apply(rec.body, rec.ts)

    async def lookup(self, job_id: str) -> Job | None:
        """A job of this run, or an older one read back from the journal."""
        job = self.jobs.get(job_id)
        if job is not None:
            return job
        seq = await self.journal.find_tx(f"print:{job_id}")
        if seq is None:
            return None
        found: Job | None = None
        for rec in await self.journal.scan(seq, KINDS, lambda body: isinstance(body, dict)
                                           and body.get("job_id") == job_id):
            if not self._fits(rec):
                continue
            if rec.kind == "print.job":
                found = job_from_record(rec.seq, rec.ts, rec.body)
            elif found is not None:
                found.apply(rec.body, rec.ts)
        return found

    # --- changes ---

    async def add(self, job: Job) -> tuple[Job, bool]:
        """Journal a new job; (the job, whether that job_id existed already)."""
        body: dict[str, Any] = {"job_id": job.job_id, "printer": job.printer, "client": job.client}
        for key in ("document", "raw", "copy_of"):
            if getattr(job, key) is not None:
                body[key] = getattr(job, key)
        results = await self.journal.append([Entry("print.job", body, tx_id=f"print:{job.job_id}")])
        if results[0].duplicate:
            existing = await self.lookup(job.job_id)
            if existing is None:  # its print.job is one the reader skips (its document fails the check)
                raise RequestError(BAD_REQUEST, f"job_id {job.job_id!r} is taken by journal record "
                                                f"{results[0].seq}, which edged cannot print; use another job_id")
            return existing, True
        record = results[0].record
        assert record is not None  # a record that is not a duplicate is the one just written
        job.seq, job.created = results[0].seq, record.ts / 1e6
        self.jobs[job.job_id] = job
        self._event(job)
        self.on_new(job)
        return job, False

    async def transition(self, job: Job, state: JobState, reason: str = "", *, sent: bool | None = None,
                         extra: Sequence[Entry] = ()) -> bool:
        """Journal, then apply, then announce one state change. False when the journal refused,
        or the job has finished meanwhile (expired): then nothing changed, and a job is never
        sent without its `printing` record."""
        if job.state in FINISHED:
            return job.state == state
        if job.state == state and job.reason == reason and sent in (None, job.sent):
            return True
        body: dict[str, Any] = {"job_id": job.job_id, "state": state}
        if reason:
            body["reason"] = reason
        if sent is not None:
            body["sent"] = sent
        try:
            await self.journal.append([Entry("print.state", body), *extra])
        except Exception as e:
            log.error("job %s: cannot journal %s (%s)", job.job_id, state, e)
            if state == "printing":
                return False
        job.state, job.reason, job.updated = state, reason, time.time()
        if sent is not None:
            job.sent = sent
        log.log(logging.WARNING if state in ("failed", "unknown", "expired") else logging.INFO,
                "job %s on %s: %s%s", job.job_id, job.printer, state, f" ({reason})" if reason else "")
        self._event(job)
        return True

    def _event(self, job: Job) -> None:
        self.publish({"event": "printer.job", **job.public()})

    # --- queries and housekeeping ---

    def waiting(self, printer: str) -> list[Job]:
        return sorted((j for j in self.jobs.values() if j.printer == printer and j.waiting), key=lambda j: j.seq)

    def recent(self, printer: str | None = None, limit: int = 50) -> list[Job]:
        jobs = sorted(self.jobs.values(), key=lambda j: j.seq)
        return [j for j in jobs if printer in (None, j.printer)][-limit:]

    async def expire(self, max_age: Callable[[str], float], now: float | None = None) -> list[Job]:
        """Waiting jobs past their printer's job_max_age: expired, journaled, announced."""
        now = time.time() if now is None else now
        old = [j for j in self.jobs.values() if j.waiting and now - j.created > max_age(j.printer)]
        for job in old:
            await self.expire_job(job, max_age(job.printer))
        return old

    async def expire_job(self, job: Job, max_age: float) -> None:
        await self.transition(job, "expired", f"waited longer than {max_age:g} s "
                                              "(printers.NAME.job_max_age); not printed")

    async def compact(self, now: float | None = None) -> None:
        """Forget old finished jobs and move the checkpoint past them."""
        now = time.time() if now is None else now
        for job_id in [i for i, j in self.jobs.items() if j.state in FINISHED and now - j.updated > HISTORY]:
            del self.jobs[job_id]
        start = min((j.seq for j in self.jobs.values()), default=self.journal.last_seq + 1)
        if start > self._checkpoint:
            await self.journal.save_state(CHECKPOINT, msgpack.packb({"from_seq": start}))
            self._checkpoint = start
