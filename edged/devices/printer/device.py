"""The receipt printer device: owns one python-escpos connection and its status.

All I/O on the connection happens in this printer's own worker thread, so a
slow or hung printer never blocks the event loop, and status polls never
interleave with other bytes on the wire. The loop side keeps the last verdict,
and never waits on the worker without a bound: `refresh` answers with the last
reading when the worker cannot give a new one in time, and `stop` leaves a
worker stuck in a driver behind (a daemon thread) rather than hang the exit.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...config import PrinterSettings
from . import status as st

if TYPE_CHECKING:
    from .send import Sent

log = logging.getLogger("edged.printer")
STOP_WAIT = 3.0  # seconds stop() waits for the worker to close the connection


class Worker(concurrent.futures.Executor):
    """One named daemon thread running calls in order (a ThreadPoolExecutor's threads are
    joined at exit, so one stuck in a driver would keep edged from ever exiting)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._calls.put(None)
        if wait:
            self._thread.join()

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args, **kwargs))
                except Exception as e:
                    future.set_exception(e)


def _change_line(name: str, old: st.PrinterStatus, new: st.PrinterStatus, detail: str = "") -> str:
    """The log line of a status change, e.g. "printer receipt: ok -> error: offline, paper_out"."""
    line = f"printer {name}: {old.state} -> {new.state}"
    line += f": {', '.join(new.reasons)}" if new.reasons else ""
    return line + (f" ({detail})" if detail else "")


class Printer:
    """One configured printer; its state is the last status verdict."""

    kind = "printer"

    def __init__(self, name: str, settings: PrinterSettings,
                 on_change: Callable[[Printer], None] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.status = st.PrinterStatus.unknown("not_checked")
        self.changed_at = time.time()
        # Called on the loop after every status change: events, the job queue, the drawer.
        self.listeners: list[Callable[[Printer], None]] = [on_change] if on_change else []
        # The connection's modules load python-escpos and pyusb: imported once a printer is
        # configured, so a till without one starts without them (seconds on a slow box).
        from . import send
        from .link import Link

        self._link = Link(settings)
        self._send_job = send.send_job
        self._worker: Worker | None = None
        self._task: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._last_tick = time.monotonic()
        self._poll: asyncio.Future | None = None  # the reading the worker is taking, shared by all who ask
        self._job: asyncio.Future | None = None  # the job the worker sends and waits for
        self._readings: list[asyncio.Future] = []  # refreshes waiting for a reading a job takes

    @property
    def detail(self) -> str:
        """Why the connection failed, for the technician."""
        return self._link.detail

    @property
    def answer_within(self) -> float:
        """How long a reading may take: a drain, four replies, and a job's wait for its next read."""
        s = self.settings
        return s.status_interval + 4 * s.timeout + 1.0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._worker = Worker(f"printer-{self.name}")
        await self.refresh()  # so the first status anyone sees is a real reading
        self._task = asyncio.create_task(self._poll_forever(), name=f"printer-{self.name}-status")

    async def stop(self) -> None:
        self._link.stopping = True  # every wait in the worker gives up, a job's too
        self._link.interrupt()
        if self._task:
            # Python 3.11's wait_for can swallow a cancel that lands as its reading arrives: the
            # loop also ends on `stopping`, and the cancel is repeated until the task is gone.
            while not self._task.done():
                self._task.cancel()
                await asyncio.wait([self._task], timeout=0.5)
        if self._worker:
            closed = asyncio.get_running_loop().run_in_executor(self._worker, self._link.close)
            try:
                await asyncio.wait_for(closed, STOP_WAIT)
            except TimeoutError:
                log.error("printer %s: its worker thread is stuck in the driver; leaving it behind", self.name)
            self._worker.shutdown(wait=False)

    def healthy(self) -> bool:
        # The poll loop must keep turning; a stuck worker thread shows up here.
        return self._task is not None and not self._task.done() and \
            time.monotonic() - self._last_tick < self.answer_within + 4.0

    def describe(self) -> dict:
        return {"kind": self.kind, "backend": self.settings.backend, **self.status.as_dict(),
                "since": self.changed_at, "detail": self.detail, "endpoints": self._link.endpoints}

    def summary(self) -> str:
        reasons = f" ({', '.join(self.status.reasons)})" if self.status.reasons else ""
        return f"printer {self.name}: {self.status.state}{reasons}"

    async def refresh(self) -> st.PrinterStatus:
        """Ask the printer now (also done every status_interval). While a job waits in the
        worker, that job's next reading (or its end) is the answer. After `answer_within`
        without one, the last reading is."""
        assert self._worker is not None
        loop = asyncio.get_running_loop()
        if self._poll is None and self._job is not None:
            waiter = loop.create_future()
            self._readings.append(waiter)
            reading: asyncio.Future = waiter
        else:
            if self._poll is None:
                self._poll = loop.run_in_executor(self._worker, self._link.poll)
                self._poll.add_done_callback(self._polled)
            reading = asyncio.shield(self._poll)
        try:
            await asyncio.wait_for(reading, self.answer_within)
        except TimeoutError:
            log.warning("printer %s: no reading within %.1f s; answering with the last one", self.name,
                        self.answer_within)
        return self.status

    async def print_job(self, data: bytes) -> Sent:
        """Send a job and wait for the printer's word on it (send.send_job).
        Status read meanwhile reaches the listeners as it comes."""
        assert self._worker is not None
        job = asyncio.get_running_loop().run_in_executor(self._worker, self._send_job, self._link, data, self._report)
        self._job = job
        job.add_done_callback(self._job_done)
        return await asyncio.shield(job)  # a cancelled spooler leaves the job to finish in the worker

    async def send(self, data: bytes) -> None:
        """Bytes that need no confirmation (a drawer kick), sent at once even while a job waits
        in the worker for its confirmation; ConnectionError when they cannot go out."""
        assert self._worker is not None
        if self._link.escpos is None:  # (re)connecting is the worker's job
            await asyncio.get_running_loop().run_in_executor(self._worker, self._send_blocking, data)
        else:
            await asyncio.to_thread(self._send_blocking, data, False)

    def _polled(self, future: asyncio.Future) -> None:
        self._poll = None
        if not future.cancelled() and future.exception() is None:  # poll() answers failures with a status
            self._apply(future.result())

    def _job_done(self, future: asyncio.Future) -> None:
        if self._job is future:
            self._job = None
        self._answer_readings(self.status)  # the job's last reading (or the one just before it)

    def _report(self, status: st.PrinterStatus) -> None:
        """From the worker thread: a status read during a job."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._apply, status)

    def _apply(self, new: st.PrinterStatus) -> None:
        self._last_tick = time.monotonic()
        self._answer_readings(new)
        if new != self.status:
            # The drawer's sensor (pin 3) is part of the status, and the listeners need it, but
            # a drawer opening is no change of the printer: the drawer logs that itself.
            if (new.state, new.reasons) != (self.status.state, self.status.reasons):
                log.log(logging.INFO if new.state in ("ok", "warn") else logging.WARNING, "%s",
                        _change_line(self.name, self.status, new, self.detail))
            self.status, self.changed_at = new, time.time()
            for listener in list(self.listeners):
                listener(self)

    def _answer_readings(self, status: st.PrinterStatus) -> None:
        waiting, self._readings = self._readings, []
        for waiter in waiting:
            if not waiter.done():
                waiter.set_result(status)

    async def _poll_forever(self) -> None:
        while not self._link.stopping:
            await asyncio.sleep(self.settings.status_interval)
            await self.refresh()

    def _send_blocking(self, data: bytes, may_open: bool = True) -> None:
        if may_open and not self._link.ensure_open():
            raise ConnectionError(self._link.detail)
        try:
            self._link.write(data)
        except Exception as e:  # the worker notices the loss at its next read
            raise ConnectionError(f"cannot send to the printer: {e}") from None
