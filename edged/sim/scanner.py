"""The simulated barcode scanners, fed with `edged scan send CODE`.

Under `edged run --simulate` (when no scanner is configured) the daemon reads
two: `scanner`, a serial scanner on a pty with a CR suffix, and `wedge`, a
keyboard-wedge scanner programmed for German (QWERTZ) whose key events come
through a pipe of input_event structs (edged.sim.wedge). Either way every
simulated scan goes through the same framing and decoding as a real one.
"""
from __future__ import annotations

import os
import time
import tty
from typing import Any

from .wedge import packed, pipe_device, typing

WEDGE_LAYOUT = "de"
PIPE_ROOM = 60_000  # below a pipe's 64 KiB buffer


class SimScanner:
    name = "sim-scanner"

    def __init__(self) -> None:
        self.path = ""
        self._fds: tuple[int, int] | None = None
        self._wedge_w: int | None = None  # write end of the wedge's pipe while edged has it open

    async def start(self) -> None:
        master, slave = os.openpty()
        tty.setraw(slave)  # bytes pass untouched: no echo, no CR/LF translation
        self._fds = (master, slave)  # the slave stays open so the reader never sees a hang-up
        self.path = os.ttyname(slave)

    async def stop(self) -> None:
        if self._fds:
            for fd in self._fds:
                os.close(fd)
            self._fds = None
        if self._wedge_w is not None:
            os.close(self._wedge_w)
            self._wedge_w = None

    def open_wedge(self, path: str) -> Any:
        """The wedge scanner's device, as the daemon's opener for it: a new pipe per opening."""
        if self._wedge_w is not None:
            os.close(self._wedge_w)
        dev, self._wedge_w = pipe_device("simulated wedge scanner")
        return dev

    def healthy(self) -> bool:
        return self._fds is not None

    def send(self, code: str, wedge: bool = False) -> None:
        """Scan `code` (AIM prefix included if wanted, e.g. "]E04006381333931"); ValueError if the
        wedge's layout has no key for one of its characters."""
        if not wedge:
            assert self._fds is not None
            os.write(self._fds[0], code.encode("utf-8") + b"\r")
            return
        if self._wedge_w is None:
            raise ValueError("the simulated wedge scanner is not open")
        try:
            keys = typing(code, WEDGE_LAYOUT, start=time.time(), gap=0.002)
        except KeyError as e:
            raise ValueError(f"the simulated wedge scanner (layout {WEDGE_LAYOUT}) has no key for {e.args[0]!r}") from e
        data = packed(keys)
        if len(data) > PIPE_ROOM:  # the daemon's own loop reads this pipe: a blocked write would hang it
            raise ValueError(f"{len(code)} characters are too many for the simulated wedge scanner "
                             f"(at most about {PIPE_ROOM * len(code) // len(data)})")
        os.write(self._wedge_w, data)
