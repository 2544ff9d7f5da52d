"""The receipt printer device: owns one python-escpos connection and its status.

All I/O on the connection happens in this printer's own worker thread, so a
slow or hung printer never blocks the event loop, and status polls never
interleave with other bytes on the wire. The loop side keeps the last verdict.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from typing import Callable

from ..config import PrinterSettings
from . import status as st
from .escpos_link import Link

log = logging.getLogger("edged.printer")


def _change_line(name: str, old: st.PrinterStatus, new: st.PrinterStatus, detail: str = "") -> str:
    """The log line of a status change, e.g. "printer receipt: ok -> error: offline, paper_out"."""
    line = f"printer {name}: {old.state} -> {new.state}"
    line += f": {', '.join(new.reasons)}" if new.reasons else ""
    return line + (f" ({detail})" if detail else "")


class Printer:
    """One configured printer; its state is the last status verdict."""

    kind = "printer"

    def __init__(self, name: str, settings: PrinterSettings,
                 on_change: Callable[["Printer"], None] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.status = st.PrinterStatus.unknown("not_checked")
        self.changed_at = time.time()
        # Called on the loop after every status change: events, the job queue, the drawer.
        self.listeners: list[Callable[[Printer], None]] = [on_change] if on_change else []
        self._link = Link(settings)
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_tick = time.monotonic()

    @property
    def detail(self) -> str:
        """Why the connection failed, for the technician."""
        return self._link.detail

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"printer-{self.name}")
        await self.refresh()  # so the first status anyone sees is a real reading
        self._task = asyncio.create_task(self._poll_forever(), name=f"printer-{self.name}-status")

    async def stop(self) -> None:
        self._link.stopping = True  # a job waiting for its confirmation gives up
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._worker:
            await asyncio.get_running_loop().run_in_executor(self._worker, self._link.close)
            self._worker.shutdown(wait=True)

    def healthy(self) -> bool:
        # The poll loop must keep turning; a stuck worker thread shows up here.
        s = self.settings
        allowed = s.status_interval + 4 * s.timeout + 5.0
        return self._task is not None and not self._task.done() and \
            time.monotonic() - self._last_tick < allowed

    def describe(self) -> dict:
        return {"kind": self.kind, "backend": self.settings.backend, **self.status.as_dict(),
                "since": self.changed_at, "detail": self.detail}

    def summary(self) -> str:
        reasons = f" ({', '.join(self.status.reasons)})" if self.status.reasons else ""
        return f"printer {self.name}: {self.status.state}{reasons}"

    async def refresh(self) -> st.PrinterStatus:
        """Ask the printer now (also done every status_interval)."""
        assert self._worker is not None
        new = await asyncio.get_running_loop().run_in_executor(self._worker, self._link.poll)
        self._apply(new)
        return new

    async def print_job(self, data: bytes) -> tuple[str, str]:
        """Send a job and wait for the printer's word on it (escpos_link.Link.send_job).
        Status read meanwhile reaches the listeners as it comes."""
        assert self._worker is not None
        return await asyncio.get_running_loop().run_in_executor(self._worker, self._link.send_job, data,
                                                                self._report)

    async def send(self, data: bytes) -> None:
        """Bytes that need no confirmation (a drawer kick), sent at once even while a job waits
        in the worker for its confirmation; ConnectionError when they cannot go out."""
        assert self._worker is not None
        if self._link.escpos is None:  # (re)connecting is the worker's job
            await asyncio.get_running_loop().run_in_executor(self._worker, self._send_blocking, data)
        else:
            await asyncio.to_thread(self._send_blocking, data, False)

    def _report(self, status: st.PrinterStatus) -> None:
        """From the worker thread: a status read during a job."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._apply, status)

    def _apply(self, new: st.PrinterStatus) -> None:
        self._last_tick = time.monotonic()
        if new != self.status:
            # The drawer's sensor (pin 3) is part of the status, and the listeners need it, but
            # a drawer opening is no change of the printer: the drawer logs that itself.
            if (new.state, new.reasons) != (self.status.state, self.status.reasons):
                log.log(logging.INFO if new.state in ("ok", "warn") else logging.WARNING, "%s",
                        _change_line(self.name, self.status, new, self.detail))
            self.status, self.changed_at = new, time.time()
            for listener in list(self.listeners):
                listener(self)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval)
            await self.refresh()

    def _send_blocking(self, data: bytes, may_open: bool = True) -> None:
        if may_open and not self._link.ensure_open():
            raise ConnectionError(self._link.detail)
        try:
            self._link.write(data)
        except Exception as e:  # the worker notices the loss at its next read
            raise ConnectionError(f"cannot send to the printer: {e}") from None
