"""One printer's connection, driven from that printer's worker thread only.

The python-escpos printer class moves the bytes; this adds what a till needs
on top: status reads that never trust silence, and jobs that count as printed
only once the printer says so. After a job, GS r 1 is sent; the printer
answers it only once everything before it is on paper (FACTS.md). Status
replies (DLE EOT) and that confirmation share the return channel and are
told apart by bit 4 (status.is_confirmation).
"""
from __future__ import annotations

import logging
import select
import socket
import threading
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


def one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


class Link:
    """The open connection (or none yet) and the bytes read but not yet used."""

    def __init__(self, settings: PrinterSettings) -> None:
        self.settings = settings
        self.escpos: Escpos | None = None
        self.detail = ""  # why the connection failed, for the technician
        self.stopping = False  # set from the loop: a job wait ends (its outcome: unknown)
        self._rx = bytearray()
        # Writes are whole under this lock, so a drawer kick sent from another thread
        # while a job waits for its confirmation never lands inside the job's bytes.
        self._write_lock = threading.Lock()

    @property
    def can_read(self) -> bool:
        return self.settings.backend != "file"  # a device file is write-only

    def ensure_open(self) -> bool:
        if self.escpos is None:
            try:
                self.escpos = open_escpos(self.settings)
            except Exception as e:  # python-escpos raises its own and OS errors
                self.detail = one_line(e)
                return False
            self.detail = ""
            self._rx.clear()
        return True

    def close(self) -> None:
        if self.escpos is not None:
            try:
                self.escpos.close()
            except Exception as e:
                log.debug("printer close: %s", e)
            self.escpos = None

    def lost(self, e: BaseException) -> st.PrinterStatus:
        self.detail = f"connection lost: {one_line(e)}"
        self.close()
        return st.PrinterStatus.unreachable()

    def write(self, data: bytes) -> None:
        escpos = self.escpos
        if escpos is None:
            raise ConnectionError("the printer is not connected")
        with self._write_lock:
            escpos._raw(data)

    # --- reading ---

    def drain(self) -> None:
        """Drop late replies to an earlier query so they are not read as this one's."""
        self._rx.clear()
        assert self.escpos is not None
        dev = self.escpos.device
        if isinstance(dev, socket.socket):
            # select, not setblocking(False): a drawer kick may be sending on this socket
            # from another thread right now and must keep its blocking sendall.
            while select.select([dev], [], [], 0)[0]:
                if not dev.recv(64):
                    raise ConnectionResetError("the printer closed the connection")
        elif hasattr(dev, "reset_input_buffer"):
            dev.reset_input_buffer()
        elif self.settings.backend == "usb":
            try:
                while dev.read(self.escpos.in_ep, 64, 10):
                    pass
            except usb.core.USBTimeoutError:
                pass

    def next_byte(self) -> int | None:
        """The next byte from the printer, or None when it stayed silent for `timeout`."""
        if not self._rx:
            assert self.escpos is not None
            dev = self.escpos.device
            try:
                if hasattr(dev, "reset_input_buffer"):  # pyserial: read(16) would wait for all 16
                    data = dev.read(1)
                else:
                    data = bytes(self.escpos._read())
                    if not data and isinstance(dev, socket.socket):
                        raise ConnectionResetError("the printer closed the connection")  # EOF, not silence
            except (socket.timeout, TimeoutError, usb.core.USBTimeoutError):
                return None
            self._rx += data
        return self._rx.pop(0) if self._rx else None

    def read_status(self) -> tuple[st.PrinterStatus, bool]:
        """Ask DLE EOT 1..4: the verdict, and whether a job confirmation came in meanwhile."""
        replies: dict[int, bytes | None] = {}
        confirmed = False
        for n in st.QUERIES:
            self.write(st.query(n))
            while True:
                byte = self.next_byte()
                if byte is not None and st.is_confirmation(byte):
                    confirmed = True
                    continue
                replies[n] = None if byte is None else bytes([byte])
                break
            if replies[n] is None:
                break  # one silent query is enough: the verdict is unknown
        return st.decode(replies), confirmed

    # --- the two things the worker thread is asked to do ---

    def poll(self) -> st.PrinterStatus:
        if not self.ensure_open():
            return st.PrinterStatus.unreachable()
        if not self.can_read:
            return st.PrinterStatus.unknown("cannot_read_status")
        try:
            self.drain()
            return self.read_status()[0]
        except Exception as e:  # connection reset, device gone, USB error
            return self.lost(e)

    def send_job(self, data: bytes, report: Callable[[st.PrinterStatus], None]) -> tuple[str, str]:
        """Send one job and wait for the printer to confirm it.

        Returns (outcome, detail): `unsent` (nothing went out: the job may be tried
        again), `done` (confirmed on paper; for a write-only device: written),
        or `unknown` (bytes went out, the printer never confirmed them)."""
        if not self.ensure_open():
            report(st.PrinterStatus.unreachable())
            return "unsent", self.detail
        s = self.settings
        if self.can_read:
            try:
                self.drain()
            except Exception as e:  # a stale connection: nothing of this job went out yet
                report(self.lost(e))
                return "unsent", self.detail
        try:
            self.write(data + (st.CONFIRM if self.can_read else b""))
        except Exception as e:  # how much went out is not known
            report(self.lost(e))
            return "unknown", self.detail
        if not self.can_read:
            return "done", "written to a device that cannot confirm"
        deadline = time.monotonic() + s.confirm_timeout
        next_poll = time.monotonic() + s.status_interval
        try:
            while not self.stopping:
                byte = self.next_byte()
                if byte is not None and st.is_confirmation(byte):
                    return "done", ""
                if byte is not None and time.monotonic() < next_poll:
                    continue  # a late status reply
                status, confirmed = self.read_status()
                next_poll = time.monotonic() + s.status_interval
                report(status)
                if confirmed:
                    return "done", ""
                if status.state == "error":
                    # The printer holds the job (paper out, cover open) and prints it once
                    # fixed; it must not be sent again. Wait as long as that takes.
                    deadline = time.monotonic() + s.confirm_timeout
                elif time.monotonic() > deadline:
                    # Its confirmation may still come; on this connection it would pass
                    # for the next job's. A new connection starts with nothing owed.
                    self.close()
                    return "unknown", f"no confirmation within {s.confirm_timeout:g} s"
            return "unknown", "edged stopped while the printer held the job"
        except Exception as e:
            report(self.lost(e))
            return "unknown", self.detail
