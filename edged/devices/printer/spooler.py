"""The print service: one spooler per printer, printing its jobs one at a time, in order.

Before each job the printer's status is read; a printer that cannot print
holds the job (and all behind it) with the reason, and the spooler waits for
the status to change. A job is `printing` in the journal before its first
byte goes out, and `done` only when the printer confirmed it (link.py).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ...journal.kinds import JobState
from ...journal.store import Entry
from ...relay.protocol import BAD_REQUEST, RequestError
from ..drawer import Drawer
from . import document, raw_escpos
from .device import Printer
from .jobs import FINISHED, Job, JobBook

log = logging.getLogger("edged.jobs")
HOUSEKEEPING = 5.0  # seconds between expiry checks


UNKNOWN_READINGS = 3  # readings more before a job goes to a printer whose replies are not well-formed


def held_reason(printer: Printer) -> str:
    reasons = ", ".join(printer.status.reasons) or printer.status.state
    return f"{reasons} ({printer.detail})" if printer.detail else reasons


class Spooler:
    def __init__(self, printer: Printer, book: JobBook, drawer: Drawer | None) -> None:
        self.printer = printer
        self.book = book
        self.drawer = drawer  # kicked by documents with open_drawer
        self.current: Job | None = None
        self._wake = asyncio.Event()
        self._status_changed = asyncio.Event()
        printer.listeners.append(self._on_status)

    def wake(self) -> None:
        self._wake.set()

    def _on_status(self, printer: Printer) -> None:
        self._status_changed.set()
        self._wake.set()

    def render(self, job: Job) -> bytes:
        if job.data is not None:
            return job.data
        s = self.printer.settings
        if job.raw is not None:
            if job.copy_of:
                return document.raw_copy(job.raw, profile=s.profile, codepage=s.codepage)
            return job.raw
        doc = dict(job.document or {}, **({"copy": True} if job.copy_of else {}))
        return document.render_for(s, doc, kick=self.drawer.kick if self.drawer else b"")

    async def run(self) -> None:
        s = self.printer.settings
        while True:
            self._wake.clear()
            jobs = self.book.waiting(self.printer.name)
            if not jobs:
                await self._wake.wait()
                continue
            job = jobs[0]
            if time.time() - job.created > s.job_max_age:
                await self.book.expire_job(job, s.job_max_age)
                continue
            await self.printer.refresh()  # before each job, not the last poll's word
            for _ in range(UNKNOWN_READINGS):
                if self.printer.status.state != "unknown":
                    break
                # A few more readings, a moment apart (each drain drops what came late): a printer
                # plugged back in answers late, or first with what it owed the old connection
                # (seen on real USB). Only a well-formed one lets the job count as `done`; one
                # that never answers well still gets it, and the job ends `unknown`.
                await self._sleep(s.status_interval)
                await self.printer.refresh()
            if not self.printer.status.printable:
                for waiting in jobs:
                    await self.book.transition(waiting, "held", held_reason(self.printer))
                await self._sleep(s.status_interval)
                continue
            await self._print(job)

    async def _print(self, job: Job) -> None:
        try:
            if job.raw is not None:
                await self._check_raw(job)
            data = self.render(job)
            job.data = None  # bytes not kept for a day of finished jobs
        except RequestError as e:  # e.g. the printer's profile changed since the job was accepted
            await self.book.transition(job, "failed", e.message)
            return
        self.current = job  # from here on follow_status leaves it to us
        try:
            if not await self.book.transition(job, "printing", sent=True, extra=self._drawer_records(job)):
                if job.state not in FINISHED:  # not expired meanwhile: the journal refused (disk full?)
                    await self._sleep(1.0)  # the job waits, unsent
                return
            outcome, detail = await self.printer.print_job(data)
        finally:
            self.current = None
        if outcome == "unsent":
            await self.book.transition(job, "held", held_reason(self.printer), sent=False)
            return
        await self.book.transition(job, outcome, detail if outcome == "unknown" else "")
        if self.drawer and self._opens_drawer(job):
            self.drawer.read_soon()

    async def _check_raw(self, job: Job) -> None:
        """Raw bytes as they will go out: a copy's without its kicks, a job read back from the
        journal checked again. A kick with no drawer configured (any more) is not sent unjournaled."""
        assert job.raw is not None
        if job.copy_of:
            try:
                job.raw = await raw_escpos.off_loop(raw_escpos.without_kicks, job.raw)
            except ValueError as e:
                raise RequestError(BAD_REQUEST, f"not printed: {e}") from None
            job.kicks = False
        elif job.kicks is None:
            job.kicks = (await raw_escpos.off_loop(raw_escpos.scan, job.raw)).kicks_drawer
        if job.kicks and self.drawer is None:
            raise RequestError(BAD_REQUEST, f"not printed: its raw bytes kick a drawer, and printer "
                                            f"{self.printer.name!r} has no drawer configured")

    @staticmethod
    def _opens_drawer(job: Job) -> bool:
        if job.copy_of:
            return False
        return bool(job.document and job.document.get("open_drawer")) or bool(job.raw and job.kicks)

    def _drawer_records(self, job: Job) -> list[Entry]:
        if not (self.drawer and self._opens_drawer(job)):
            return []
        reason = f"print job {job.job_id}" + (" (raw ESC/POS with a drawer kick)" if job.raw else "")
        return [Entry("drawer.open", {"drawer": self.drawer.name, "reason": reason,
                                      "job_id": job.job_id, **job.client})]

    async def _sleep(self, seconds: float) -> None:
        """Until a new job or a status change, at most `seconds`."""
        try:
            await asyncio.wait_for(self._wake.wait(), seconds)
        except TimeoutError:
            pass

    async def follow_status(self) -> None:
        """Jobs follow the printer: held with the reason while it cannot print, queued again after."""
        while True:
            await self._status_changed.wait()
            self._status_changed.clear()
            status = self.printer.status
            job = self.current
            if job is not None and job.sent:  # the printer has its bytes: held inside it, or printing on
                state: JobState = "printing" if status.printable else "held"
                await self.book.transition(job, state, "" if status.printable else held_reason(self.printer))
            for waiting in self.book.waiting(self.printer.name):
                if waiting is self.current:
                    continue  # being sent right now: run() decides its state
                if status.printable and waiting.state == "held":
                    await self.book.transition(waiting, "queued")
                elif not status.printable:
                    await self.book.transition(waiting, "held", held_reason(self.printer))


class PrintService:
    """The daemon part: restores the job book, runs the spoolers and expires old jobs."""

    name = "print"

    def __init__(self, book: JobBook, printers: dict[str, Printer], drawers: dict[str, Drawer]) -> None:
        self.book = book
        self.printers = printers
        self.spoolers = {name: Spooler(p, book, drawers.get(name)) for name, p in printers.items()}
        book.on_new = self._new_job
        self._tasks: list[asyncio.Task] = []

    def _new_job(self, job: Job) -> None:
        spooler = self.spoolers.get(job.printer)
        if spooler:
            spooler.wake()

    def max_age(self, printer: str) -> float:
        return self.printers[printer].settings.job_max_age if printer in self.printers else 0.0

    async def start(self) -> None:
        await self.book.restore()
        await self.book.expire(self.max_age)
        for name, spooler in self.spoolers.items():
            self._tasks.append(asyncio.create_task(spooler.run(), name=f"spooler-{name}"))
            self._tasks.append(asyncio.create_task(spooler.follow_status(), name=f"spooler-{name}-status"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="print-housekeeping"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def healthy(self) -> bool:
        return all(not t.done() for t in self._tasks)

    def info(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for job in self.book.jobs.values():
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING)
            try:
                await self.book.expire(self.max_age)
                await self.book.compact()
            except Exception:
                log.exception("print job housekeeping failed")

