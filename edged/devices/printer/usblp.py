"""The kernel's usblp node (backend "usblp"): /dev/usb/lpN, written and read on one fd.

usblp passes reads through to the printer's bulk IN endpoint when the printer is
bidirectional, so DLE EOT status and the GS r confirmation work as on a serial line
(a unidirectional printer's node answers a read with EINVAL: it cannot confirm, like
backend "file"). The fd is non-blocking: a write waits for room in poll(), where a stop
can end it, and a read never waits. An unplugged printer's node answers ENODEV (a pty
standing in for it, EIO): the error reaches the link, which counts the printer offline
and opens the node again once it is back. A printer that cannot answer still has the
IEEE 1284 status byte usblp asks it for (LPGETSTATUS): paper out, offline. python-escpos's File class opens "wb", which
cannot read, so this is a small Escpos class of its own.
"""
from __future__ import annotations

import errno
import fcntl
import os
import select
import struct

from escpos.escpos import Escpos

from . import status as st

LPGETSTATUS = 0x060B  # <linux/lp.h>; usblp answers it with the printer's GET_PORT_STATUS byte
LP_PERRORP, LP_PSELECD, LP_POUTPA = 0x08, 0x10, 0x20  # 1284 status bits: no error, selected, paper empty
CLOSE_WAIT_MS = 2000  # a write usblp has taken but not sent yet is dropped by close(): wait for it


class LpDevice:
    """The open node; cancel_read/cancel_write end a waiting write (the link's interrupt)."""

    def __init__(self, path: str) -> None:
        try:
            # O_NOCTTY: a pty standing in for the node must not become edged's controlling terminal.
            self.fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        except OSError as e:
            if e.errno == errno.EBUSY:  # usblp lets one process open it at a time
                raise ConnectionError(f"{path} is open in another program (CUPS?); usblp allows one at a time") \
                    from None
            raise
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.readable = True
        self.read(64)  # tells a printer that can answer from one that cannot; stale bytes are dropped anyway

    def fileno(self) -> int:
        return self.fd

    def read(self, size: int) -> bytes:
        """What the printer sent, without waiting: b"" when nothing came."""
        if not self.readable:
            return b""
        try:
            return os.read(self.fd, size)  # usblp: b"" is a zero-length reply, not an end
        except BlockingIOError:
            return b""
        except OSError as e:
            if e.errno != errno.EINVAL:
                raise  # ENODEV, EIO: unplugged
            self.readable = False  # a unidirectional printer
            return b""

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        poller = select.poll()
        poller.register(self.fd, select.POLLOUT)
        poller.register(self._wake_r, select.POLLIN)
        while view:
            events = dict(poller.poll())
            if self._wake_r in events:
                raise ConnectionError("edged is stopping: the write was cut short")
            if events.get(self.fd, 0) & (select.POLLERR | select.POLLHUP) and not events[self.fd] & select.POLLOUT:
                raise ConnectionError("the printer went away")
            if self.fd in events:
                try:
                    view = view[os.write(self.fd, view):]
                except BlockingIOError:  # usblp: the previous write is still on its way
                    pass

    def port_status(self) -> int | None:
        """The 1284 status byte (0x18: ready), or None from a node that is not usblp's."""
        try:
            return int(struct.unpack("i", fcntl.ioctl(self.fd, LPGETSTATUS, b"\0" * 4))[0]) & 0xFF
        except OSError as e:
            if e.errno in (errno.ENOTTY, errno.EINVAL):
                return None
            raise  # ENODEV, EIO: unplugged

    def cancel_read(self) -> None:
        self.cancel_write()

    def cancel_write(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # already woken, or closed

    def close(self) -> None:
        try:
            poller = select.poll()
            poller.register(self.fd, select.POLLOUT)
            poller.poll(CLOSE_WAIT_MS)
        finally:
            for fd in (self.fd, self._wake_r, self._wake_w):
                os.close(fd)


def port_status(byte: int) -> st.PrinterStatus:
    """A verdict from the 1284 status byte, as usblp itself reads it (usblp_check_status):
    measured on a printer gadget, 0x18 ready and 0x38 out of paper."""
    reasons = []
    if not byte & LP_PSELECD:
        reasons.append("offline")
    if byte & LP_POUTPA:
        reasons.append("paper_out")
    if not byte & LP_PERRORP and not reasons:
        reasons.append("error")
    return st.PrinterStatus("error" if reasons else "ok", tuple(reasons))


class LpPrinter(Escpos):
    """python-escpos's printer class on a usblp node."""

    _device: object  # python-escpos's: False (not opened) or the connection

    def __init__(self, devfile: str, *args: object, **kwargs: object) -> None:
        Escpos.__init__(self, *args, **kwargs)
        self.devfile = devfile
        self.lp: LpDevice | None = None

    @property
    def readable(self) -> bool:
        """Does the printer answer (a bidirectional one)?"""
        return self.lp is not None and self.lp.readable

    def open(self) -> None:
        self.close()
        self.lp = LpDevice(self.devfile)
        self._device = self.lp  # Escpos.device: what the link reads from

    def _raw(self, msg: bytes) -> None:
        assert self.lp is not None
        self.lp.write(msg)

    def _read(self) -> bytes:
        assert self.lp is not None
        return self.lp.read(16)

    def close(self) -> None:
        lp, self.lp = getattr(self, "lp", None), None  # also from __del__ of a half-made one
        self._device = False
        if lp is not None:
            lp.close()
