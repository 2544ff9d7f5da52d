"""The socket ops for printing and the drawer: print, job, jobs, reprint, drawer_open (PROTOCOL.md)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ...relay import protocol as p
from ...relay.registry import Level, may, needs, op
from ..drawer import Drawer
from . import document, raw_escpos
from .jobs import Job
from .spooler import PrintService

if TYPE_CHECKING:
    from ...relay.session import Session

_ID_MAX = 128


def who(session: Session) -> dict[str, Any]:
    """The client's identity as journaled with what it caused."""
    return {"client": session.client, "pid": session.peer.pid, "uid": session.peer.uid, "gid": session.peer.gid}


def _job_id(params: dict[str, Any], key: str = "job_id") -> str:
    job_id = p.param(params, key, str)
    if not 0 < len(job_id) <= _ID_MAX:
        raise p.RequestError(p.BAD_REQUEST, f"{key!r} must be 1 to {_ID_MAX} characters")
    return job_id


class PrintOps:
    def __init__(self, service: PrintService, drawers: dict[str, Drawer]) -> None:
        self.service = service
        self.book = service.book
        self.drawers = drawers

    def _answer(self, job: Job, duplicate: bool) -> dict[str, Any]:
        return {**job.public(), "duplicate": duplicate}

    async def _existing(self, params: dict[str, Any]) -> Job:
        job_id = _job_id(params)
        job = await self.book.lookup(job_id)
        if job is None:
            raise p.RequestError(p.NOT_FOUND, f"no print job {job_id!r}")
        return job

    @op("print", Level.ANY, printer=may(str), job_id=needs(str), document=may(dict), raw=may(bytes))
    async def op_print(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        printer = p.named(params, "printer", self.service.printers, "printer")
        job_id = _job_id(params)
        if ("document" in params) == ("raw" in params):
            raise p.RequestError(p.BAD_REQUEST, "send either 'document' (a map) or 'raw' (bytes)")
        known = self.book.jobs.get(job_id)
        if known is not None:  # a retry: answered from memory, nothing printed again
            return self._answer(known, True)
        job = Job(job_id, printer, 0, 0.0, client=who(session))
        if "raw" in params:
            job.raw = p.param(params, "raw", bytes)
            if not job.raw:
                raise p.RequestError(p.BAD_REQUEST, "'raw' is empty")
            await self._check_raw(session, job)
        else:
            job.document = document.check(params["document"])
            spooler = self.service.spoolers[printer]
            if job.document.get("open_drawer"):
                if spooler.drawer is None:
                    raise p.RequestError(p.BAD_REQUEST, f"document: 'open_drawer' but printer {printer!r} "
                                                        "has no drawer configured ([drawers.NAME] printer = ...)")
                if not session.server.access.permits(session.peer, "drawer_open"):
                    raise p.RequestError(p.NOT_PERMITTED, "'open_drawer' needs a privileged user or group "
                                                          "(daemon.privileged_users / privileged_groups)")
            job.data = spooler.render(job)  # what python-escpos refuses is refused now, not at print time
        job, duplicate = await self.book.add(job)
        return self._answer(job, duplicate)

    async def _check_raw(self, session: Session, job: Job) -> None:
        """Raw bytes that kick the drawer need the drawer privilege, as `open_drawer` does, and are
        journaled as its opening when printed; from anyone else they must be ESC/POS that edged
        can check for a kick (raw_escpos)."""
        assert job.raw is not None
        found = await raw_escpos.off_loop(raw_escpos.scan, job.raw)
        privileged = session.server.access.permits(session.peer, "drawer_open")
        if found.problem and not privileged:
            raise p.RequestError(p.BAD_REQUEST, f"raw: {found.problem}; without the drawer privilege, raw "
                                                "bytes must be ESC/POS edged can check for a drawer kick")
        if found.kicks_drawer:
            where = f"raw: byte {found.first_kick()}: a drawer kick (ESC p or DLE DC4 1)"
            if not privileged:
                raise p.RequestError(p.NOT_PERMITTED, f"{where} needs a privileged user or group "
                                                      "(daemon.privileged_users / privileged_groups)")
            if self.service.spoolers[job.printer].drawer is None:
                raise p.RequestError(p.BAD_REQUEST, f"{where}, but printer {job.printer!r} has no drawer "
                                                    "configured ([drawers.NAME] printer = ...)")
        job.kicks = found.kicks_drawer

    @op("job", Level.ANY, job_id=needs(str))
    async def op_job(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return (await self._existing(params)).public()

    @op("jobs", Level.ANY, printer=may(str), limit=may(int))
    async def op_jobs(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        printer = p.param(params, "printer", str, required=False)
        limit = p.param(params, "limit", int, required=False, default=50)
        if not 1 <= limit <= 1000:
            raise p.RequestError(p.BAD_REQUEST, "'limit' must be between 1 and 1000")
        return {"jobs": [j.public() for j in self.book.recent(printer, limit)], "counts": self.service.info()}

    @op("reprint", Level.ANY, job_id=needs(str), copy_job_id=may(str))
    async def op_reprint(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        original = await self._existing(params)
        job_id = original.job_id
        if original.state not in ("done", "unknown"):
            raise p.RequestError(p.BAD_REQUEST, f"job {job_id!r} is {original.state}; only done or unknown "
                                                "jobs are reprinted")
        if original.printer not in self.service.printers:
            raise p.RequestError(p.NOT_FOUND, f"job {job_id!r} was for printer {original.printer!r}, "
                                              "which is not configured any more")
        copy_id = _job_id(params, "copy_job_id") if "copy_job_id" in params else await self._next_copy_id(job_id)
        doc, raw = None, original.raw
        if original.document is not None:  # a copy never opens the drawer again
            doc = {k: v for k, v in original.document.items() if k != "open_drawer"}
        if raw is not None:
            try:
                raw = await raw_escpos.off_loop(raw_escpos.without_kicks, raw)
            except ValueError as e:
                raise p.RequestError(p.BAD_REQUEST, f"job {job_id!r} cannot be reprinted: {e}") from None
        job = Job(copy_id, original.printer, 0, 0.0, document=doc, raw=raw, copy_of=job_id,
                  client=who(session), kicks=False)
        job, duplicate = await self.book.add(job)
        return self._answer(job, duplicate)

    async def _next_copy_id(self, job_id: str) -> str:
        """`<job_id>.copy<n>` with the first n not taken, also by copies the journal holds
        from before the in-memory history."""
        n = 1 + sum(1 for j in self.book.jobs.values() if j.copy_of == job_id)
        while await self.book.lookup(f"{job_id}.copy{n}") is not None:
            n += 1
        return f"{job_id}.copy{n}"

    @op("drawer_open", Level.PRIVILEGED, drawer=may(str), reason=needs(str))
    async def op_drawer_open(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        name = p.named(params, "drawer", self.drawers, "drawer")
        reason = p.param(params, "reason", str)
        if not 0 < len(reason) <= 256:
            raise p.RequestError(p.BAD_REQUEST, "'reason' must be 1 to 256 characters")
        opened_at = await self.drawers[name].open_drawer(reason, who(session))
        return {"drawer": name, "opened_at": opened_at}
