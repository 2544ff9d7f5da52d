"""The simulated barcode scanner: a serial scanner on a pty, fed with `edged scan send CODE`.

Under `edged run --simulate` (when no scanner is configured) the daemon reads
the pty's other end as an ordinary serial scanner with a CR suffix, so every
simulated scan goes through the same framing and decoding as a real one.
"""
from __future__ import annotations

import os
import tty


class SimScanner:
    name = "sim-scanner"

    def __init__(self) -> None:
        self.path = ""
        self._fds: tuple[int, int] | None = None

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

    def healthy(self) -> bool:
        return self._fds is not None

    def send(self, code: str) -> None:
        """Scan `code` (AIM prefix included if wanted, e.g. "]E04006381333931")."""
        assert self._fds is not None
        os.write(self._fds[0], code.encode("utf-8") + b"\r")
