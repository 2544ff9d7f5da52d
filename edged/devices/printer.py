"""The receipt printer device: owns one python-escpos connection and its status.

All I/O on the connection happens in this printer's own worker thread, so a
slow or hung printer never blocks the event loop, and status polls never
interleave with other bytes on the wire. The loop side keeps the last verdict.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import time
from typing import Callable

import usb.core
from escpos import printer as escpos_printer
from escpos.escpos import Escpos

from ..config import PrinterSettings
from . import status as st

log = logging.getLogger("edged.printer")


def open_escpos(s: PrinterSettings) -> Escpos:
    """Open the python-escpos printer class that the backend names."""
    common = {"profile": s.profile}
    if s.backend == "network":
        p: Escpos = escpos_printer.Network(s.host, s.port, timeout=s.timeout, **common)
    elif s.backend == "serial":
        p = escpos_printer.Serial(s.device, baudrate=s.baudrate, timeout=s.timeout, **common)
    elif s.backend == "usb":
        usb_args = {"serial_number": s.serial_number} if s.serial_number else {}
        p = escpos_printer.Usb(s.vendor_id, s.product_id, usb_args=usb_args,
                               timeout=int(s.timeout * 1000), **common)
    else:
        p = escpos_printer.File(s.device, **common)
    p.open()
    return p


def _drain(p: Escpos) -> None:
    """Drop late replies to an earlier query so they are not read as this one's."""
    dev = p.device
    if isinstance(dev, socket.socket):
        dev.setblocking(False)
        try:
            while dev.recv(64):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            dev.settimeout(p.timeout)
    elif hasattr(dev, "reset_input_buffer"):
        dev.reset_input_buffer()


def _read_reply(p: Escpos) -> bytes | None:
    """One status byte, or None when the printer stayed silent."""
    dev = p.device
    try:
        if hasattr(dev, "reset_input_buffer"):  # pyserial: read(16) would wait for all 16
            return dev.read(1) or None
        reply = bytes(p._read())
    except (socket.timeout, TimeoutError, usb.core.USBTimeoutError):
        return None
    if not reply and isinstance(dev, socket.socket):
        raise ConnectionResetError("the printer closed the connection")  # EOF, not silence
    return reply or None


def _one_line(e: Exception) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class Printer:
    """One configured printer; its state is the last status verdict."""

    kind = "printer"

    def __init__(self, name: str, settings: PrinterSettings,
                 on_change: Callable[["Printer"], None] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.status = st.PrinterStatus.unknown("not_checked")
        self.changed_at = time.time()
        self._on_change = on_change
        self._escpos: Escpos | None = None
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._task: asyncio.Task | None = None
        self._last_tick = time.monotonic()
        self.detail = ""  # why the connection failed, for the technician

    async def start(self) -> None:
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=f"printer-{self.name}")
        await self.refresh()  # so the first status anyone sees is a real reading
        self._task = asyncio.create_task(self._poll_forever(), name=f"printer-{self.name}-status")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._worker:
            await asyncio.get_running_loop().run_in_executor(self._worker, self._close)
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
        new = await asyncio.get_running_loop().run_in_executor(self._worker, self._poll_blocking)
        self._last_tick = time.monotonic()
        if new != self.status:
            log.log(logging.INFO if new.state in ("ok", "warn") else logging.WARNING,
                    "printer %s: %s -> %s %s%s", self.name, self.status.state, new.state,
                    ", ".join(new.reasons), f" ({self.detail})" if self.detail else "")
            self.status, self.changed_at = new, time.time()
            if self._on_change:
                self._on_change(self)
        return new

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.status_interval)
            await self.refresh()

    # --- worker thread only below ---

    def _poll_blocking(self) -> st.PrinterStatus:
        if self._escpos is None:
            try:
                self._escpos = open_escpos(self.settings)
            except Exception as e:  # python-escpos raises its own and OS errors
                self.detail = _one_line(e)
                return st.PrinterStatus.unreachable()
            self.detail = ""
        if self.settings.backend == "file":
            return st.PrinterStatus.unknown("cannot_read_status")  # a device file is write-only
        replies: dict[int, bytes | None] = {}
        try:
            _drain(self._escpos)
            for n in st.QUERIES:
                self._escpos._raw(st.query(n))
                replies[n] = _read_reply(self._escpos)
                if replies[n] is None:
                    break  # one silent query is enough: the verdict is unknown
        except Exception as e:  # connection reset, device gone, USB error
            self.detail = f"connection lost: {_one_line(e)}"
            self._close()
            return st.PrinterStatus.unreachable()
        return st.decode(replies)

    def _close(self) -> None:
        if self._escpos is not None:
            try:
                self._escpos.close()
            except Exception as e:
                log.debug("printer %s: close: %s", self.name, e)
            self._escpos = None
