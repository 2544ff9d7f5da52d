"""One printer's connection, driven from that printer's worker thread only.

The python-escpos printer class moves the bytes; this adds what a till needs
on top: status reads that never trust silence, and jobs that count as printed
only once the printer says so. After a job, GS r 1 is sent; the printer
answers it only once everything before it is on paper (FACTS.md). Status
replies (DLE EOT) and that confirmation share the return channel and are
told apart by bit 4 (status.is_confirmation).

Nothing read from the printer is trusted to end by itself: every wait has a
deadline and every read a byte budget, so a printer (or a wrong port) that
sends without pause is found out (`flooding`) instead of holding the worker,
and a stop makes any wait give up within a tenth of a second. Sending a job
and waiting for its confirmation is send.py.
"""
from __future__ import annotations

import logging
import select
import socket
import threading
import time

import usb.core
from escpos import printer as escpos_printer
from escpos.escpos import Escpos

from ...config import PrinterSettings
from . import status as st
from .usb_printer import UsbPrinter
from .usblp import LpDevice, LpPrinter, port_status

log = logging.getLogger("edged.printer")

DRAIN_MAX = 256  # bytes dropped before a request: late replies are a handful
EXCHANGE_MAX = 64  # bytes one status read (4 replies) and the wait after it may bring
CHUNK = 64  # bytes read at once
PIECE = 4096  # bytes written at once: a failure before the last piece is known to be a partial job
SLICE = 0.1  # seconds a read waits before it looks at `stopping` again


class Flooding(ConnectionError):
    """The printer sends far more than it was asked for."""


class PartlySent(ConnectionError):
    """The connection failed before the last piece of the bytes went out: the end of the job (its
    cut) never reached the printer, so it cannot have printed the job whole."""


class Stopped(Exception):
    """edged is stopping: the wait in progress gives up."""


def open_escpos(s: PrinterSettings) -> Escpos:
    """Open the python-escpos printer class that the backend names."""
    common = {"profile": s.profile}
    if s.backend == "network":
        p: Escpos = escpos_printer.Network(s.host, s.port, timeout=s.timeout, **common)
    elif s.backend == "serial":
        p = escpos_printer.Serial(s.device, baudrate=s.baudrate, timeout=s.timeout, **common)
    elif s.backend == "usb":
        p = UsbPrinter(s)  # endpoints from the device's descriptors, not python-escpos's guess
    elif s.backend == "usblp":
        p = LpPrinter(s.device, **common)
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
        self.stopping = False  # set from the loop: every wait ends (a job's outcome: unknown)
        self.replies_ok = False  # the last status read was well-formed, on this connection
        self.flood = ""  # why it counts as flooding, until a reading is well-formed or quiet again
        self.endpoints = ""  # USB: the endpoints of the last connection and where they came from
        self._rx = bytearray()
        self._budget = EXCHANGE_MAX
        # Writes are whole under this lock, so a drawer kick sent from another thread
        # while a job waits for its confirmation never lands inside the job's bytes.
        self._write_lock = threading.Lock()

    @property
    def can_read(self) -> bool:
        """Can the printer answer? Known once open, for USB and usblp."""
        if isinstance(self.escpos, UsbPrinter):
            return bool(self.escpos.in_ep)  # a unidirectional printer has no bulk IN
        if isinstance(self.escpos, LpPrinter):
            return self.escpos.readable
        return self.settings.backend != "file"  # a device file is write-only

    def ensure_open(self) -> bool:
        if self.escpos is None:
            try:
                self.escpos = open_escpos(self.settings)
            except Exception as e:  # python-escpos raises its own and OS errors
                self.detail = one_line(e)
                return False
            self.detail = self.flood
            self._rx.clear()
            if isinstance(self.escpos, UsbPrinter) and self.escpos.endpoints:
                self.endpoints = self.escpos.endpoints.describe()
        return True

    def close(self) -> None:
        self.replies_ok = False
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

    def flooded(self, e: Flooding) -> st.PrinterStatus:
        self.flood = self.detail = str(e)
        self.close()  # the next reading opens it again, so a port that calms down comes back
        return st.PrinterStatus("error", ("flooding",))

    def write(self, data: bytes) -> None:
        escpos = self.escpos
        if escpos is None:
            raise ConnectionError("the printer is not connected")
        with self._write_lock:
            last = max(0, len(data) - 1) // PIECE * PIECE
            for start in range(0, len(data), PIECE):
                try:
                    escpos._raw(data[start:start + PIECE])
                except Exception as e:
                    if start < last:  # a cable pulled mid-job (seen on real USB): it waits, then goes again
                        raise PartlySent(f"{one_line(e)} after {start} of {len(data)} bytes") from e
                    raise

    def interrupt(self) -> None:
        """From the loop thread, on stop: a read or a write blocked in the worker returns now."""
        dev = getattr(self.escpos, "_device", None)
        try:
            if isinstance(self.escpos, UsbPrinter):  # a bulk write ends within its timeout; no more follow
                self.escpos.cancel_write()
            elif isinstance(dev, socket.socket):
                dev.shutdown(socket.SHUT_RDWR)
            # pyserial: its reads and writes watch a pipe for this
            elif dev is not None and hasattr(dev, "cancel_write"):
                dev.cancel_read()
                dev.cancel_write()
        except OSError as e:
            log.debug("printer interrupt: %s", e)

    # --- reading ---

    def _read_chunk(self, wait: float) -> bytes:
        """What the printer sent (at most CHUNK bytes), waiting up to `wait` s; b"" on silence."""
        assert self.escpos is not None
        dev = self.escpos.device
        deadline = time.monotonic() + wait
        while True:
            if self.stopping:
                raise Stopped()
            left = deadline - time.monotonic()
            step = max(0.0, min(SLICE, left))
            if self.settings.backend == "usb":
                try:
                    data = bytes(dev.read(self.escpos.in_ep, CHUNK, max(1, int(step * 1000))))
                except usb.core.USBTimeoutError:
                    data = b""
                if data:
                    return data
            elif isinstance(dev, LpDevice):
                if select.select([dev], [], [], step)[0] and (data := dev.read(CHUNK)):
                    return data
            elif select.select([dev], [], [], step)[0]:
                # select, not setblocking(False): a drawer kick may be sending on this socket
                # from another thread right now and must keep its blocking sendall.
                if isinstance(dev, socket.socket):
                    data = dev.recv(CHUNK)
                    if not data:
                        raise ConnectionResetError("the printer closed the connection")  # EOF, not silence
                    return data
                return dev.read(min(max(dev.in_waiting, 1), CHUNK))  # pyserial: what is there, no waiting
            if left <= 0:
                return b""

    def drain(self) -> None:
        """Drop late replies to an earlier query so they are not read as this one's."""
        self._rx.clear()
        dropped = 0
        while chunk := self._read_chunk(0):
            dropped += len(chunk)
            if dropped > DRAIN_MAX:
                raise Flooding(f"the printer sends bytes nobody asked for (more than {DRAIN_MAX} before a "
                               "request): a wrong port or baud rate, or a faulty device; the connection is "
                               "opened again")

    def next_byte(self) -> int | None:
        """The next byte from the printer, or None when it stayed silent for `timeout`."""
        if not self._rx:
            data = self._read_chunk(self.settings.timeout)
            self._budget -= len(data)
            if self._budget < 0:
                raise Flooding(f"the printer sends bytes nobody asked for (more than {EXCHANGE_MAX} in one "
                               "exchange): a wrong port or baud rate, or a faulty device; the connection is "
                               "opened again")
            self._rx += data
        return self._rx.pop(0) if self._rx else None

    def budget(self, limit: int) -> None:
        """An exchange starts: more than `limit` bytes back before the next one is a flood."""
        self._budget = limit

    @property
    def pending(self) -> bool:
        """Bytes read but not used yet."""
        return bool(self._rx)

    def read_status(self) -> tuple[st.PrinterStatus, bool]:
        """Ask DLE EOT 1..4: the verdict, and whether a job confirmation came in meanwhile."""
        self.budget(EXCHANGE_MAX)
        replies: dict[int, bytes | None] = {}
        confirmed = False
        for n in st.QUERIES:
            self.write(st.query(n))
            byte = self.next_byte()
            if byte is not None and st.is_confirmation(byte) and not confirmed:
                confirmed = True  # the job's GS r answer came in between; the reply follows it
                byte = self.next_byte()
            replies[n] = None if byte is None else bytes([byte])
            if byte is None or not st.valid_reply(byte):
                break  # one silent or garbled reply is enough: the verdict is unknown
        status = st.decode(replies)
        self.replies_ok = status.state != "unknown"
        return status, confirmed

    # --- a status reading, as the worker thread is asked for one ---

    def _port_status(self) -> st.PrinterStatus:
        """A printer that cannot answer on usblp: its 1284 status byte, else `unknown`."""
        lp = self.escpos.lp if isinstance(self.escpos, LpPrinter) else None
        if lp is not None:
            try:
                byte = lp.port_status()
            except OSError as e:
                return self.lost(e)
            if byte is not None:
                return port_status(byte)
        return st.PrinterStatus.unknown("cannot_read_status")

    def poll(self) -> st.PrinterStatus:
        if not self.ensure_open():
            return st.PrinterStatus.unreachable()
        if not self.can_read:
            return self._port_status()
        try:
            self.drain()
            status = self.read_status()[0]
        except Flooding as e:
            return self.flooded(e)
        except Stopped:
            return st.PrinterStatus.unknown("not_checked")
        except Exception as e:  # connection reset, device gone, USB error
            return self.lost(e)
        if self.flood and "malformed_reply" in status.reasons:
            # Just re-opened, it has not sent enough yet to be caught: garbage is still the flood.
            return self.flooded(Flooding(self.flood))
        self.flood = self.detail = ""
        return status
