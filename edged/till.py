"""The policy in the middle: the socket's ops, answered from the devices' state.

The other parts (journal, print jobs, scanners, days) declare their own ops
beside their handlers (relay/registry.py); these are the till-wide ones.
"""
from __future__ import annotations

import dataclasses
import os
import time
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Config
from .devices.printer.device import Printer
from .devices.printer.spooler import PrintService
from .journal.service import Journal
from .relay import protocol as p
from .relay.registry import Level, may, op

if TYPE_CHECKING:
    from .day.tillkey import TillKey
    from .relay.server import Server
    from .relay.session import Session
    from .sim.printer import PrinterEmulator
    from .sim.scanner import SimScanner
    from .sync.deadlines import Deadlines
    from .sync.state import Sync
    from .usb.sticks import Sticks


class Till:
    """The till-wide ops over the parts it reports on, each handed in once started (the daemon's
    steps); a part left out (a bare Till in tests, no sticks on a till without them) reports empty."""

    def __init__(self, cfg: Config, devices: dict[str, Any], simulated: bool,
                 journal: Journal | None = None, *, printing: PrintService | None = None,
                 sticks: Sticks | None = None, sync: Sync | None = None, deadlines: Deadlines | None = None,
                 key: TillKey | None = None, emulators: dict[str, PrinterEmulator] | None = None,
                 sim_scanner: SimScanner | None = None) -> None:
        self.cfg = cfg
        self.journal = journal
        self.devices = devices  # printers and drawers: describe() and summary() each
        self.printers: dict[str, Printer] = {n: d for n, d in devices.items() if isinstance(d, Printer)}
        self.printing = printing
        self.simulated = simulated
        self.started = time.time()
        # The one part set afterwards: the socket serves this till's ops, so it is made after it
        # (the daemon's start_socket, or a test's server).
        self.server: Server | None = None
        self.emulators: dict[str, PrinterEmulator] = emulators or {}
        self.sim_scanner = sim_scanner
        self.sticks = sticks
        self.sync = sync
        self.deadlines = deadlines
        self.key = key  # the till's signing key

    def hello_info(self) -> dict[str, Any]:
        return {"server": f"edged {__version__}", "till_id": self.cfg.till_id,
                "journal": self.journal_info()}

    def journal_info(self) -> dict[str, Any]:
        if self.journal is None:
            return {"first_seq": 0, "last_seq": 0}
        return {"first_seq": self.journal.first_seq, "last_seq": self.journal.last_seq}

    @op("status", Level.ANY, refresh=may(bool))
    async def op_status(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        if p.param(params, "refresh", bool, required=False):  # read every printer now, not the last poll
            for printer in self.printers.values():
                await printer.refresh()
        return self.status()

    def status(self) -> dict[str, Any]:
        return {
            "till_id": self.cfg.till_id,
            "server": f"edged {__version__}",
            "simulated": self.simulated,
            "uptime": round(time.time() - self.started, 1),
            "devices": {name: dev.describe() for name, dev in self.devices.items()},
            "jobs": self.printing.info() if self.printing else {},
            "usb": self.sticks.describe() if self.sticks else {},
            "journal": self.journal.info() if self.journal else self.journal_info(),
            "consumers": dict(self.journal.cursors) if self.journal else {},
            "consumer_lag": self.journal.lags() if self.journal else {},
            "sync": self.sync.describe() if self.sync else {},
            "deadlines": self.deadlines.describe() if self.deadlines else {},
            "identity": self.key.describe() if self.key else {},  # public: which key signs the days
            # edged's own records a reader skipped since the start (journal/kinds.py)
            "degraded": self.journal.skipped.describe() if self.journal else {"skipped_records": 0, "records": []},
            **(self.server.info() if self.server else {"connections": []}),
        }

    def summary(self) -> str:
        """The one-line systemd STATUS= text."""
        parts = [dev.summary() for dev in self.devices.values()] or ["no printers"]
        if self.journal:
            info = self.journal.info()
            parts.insert(0, f"journal {info['state']}, seq {info['last_seq']}")
        if self.sync:
            parts.append(self.sync.summary())
        if self.deadlines and self.deadlines.summary():
            parts.append(self.deadlines.summary())
        if self.journal and self.journal.skipped.count:
            parts.append(self.journal.skipped.summary())
        if self.server:
            parts.append(self.server.summary())
        return ("simulated till; " if self.simulated else "") + "; ".join(parts)

    # The simulated till's controls (a directory plugged in as a stick is written with edged's
    # rights) belong to whoever runs it.
    @op("sim", Level.DAEMON, when="simulated", printer=may(str), set=may(dict), scan=may(str), device=may(str),
        stick=may(str), unplug=may(str))
    async def op_sim(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        """Simulation only: change the simulated printer's state, then re-read its status;
        or (`scan`) let the simulated scanner scan a code; or plug a directory in as a USB stick
        (`stick`), or pull one (`unplug`)."""
        if "stick" in params or "unplug" in params:
            return self._sim_stick(params)
        code = p.param(params, "scan", str, required=False)
        if code is not None:
            if self.sim_scanner is None:
                raise p.RequestError(p.NOT_FOUND, "no simulated scanner (scanners are configured)")
            if not code or "\r" in code or len(code) > 1024:
                raise p.RequestError(p.BAD_REQUEST, "'scan' must be 1 to 1024 characters without CR")
            device = p.param(params, "device", str, required=False, default="scanner")
            if device not in ("scanner", "wedge"):
                raise p.RequestError(p.NOT_FOUND, f"no simulated scanner {device!r} (scanner, wedge)")
            try:
                self.sim_scanner.send(code, wedge=device == "wedge")
            except ValueError as e:
                raise p.RequestError(p.BAD_REQUEST, str(e)) from None
            return {"scanned": code, "device": device}
        name = p.param(params, "printer", str, required=False) or next(iter(self.emulators), "")
        emulator = self.emulators.get(name)
        if emulator is None:
            raise p.RequestError(p.NOT_FOUND, f"no simulated printer {name!r}")
        changes = p.param(params, "set", dict, required=False, default={})
        for key, value in changes.items():
            if not isinstance(key, str) or not isinstance(value, bool):
                raise p.RequestError(p.BAD_REQUEST, f"parameter 'set' must map state names to bool ({key!r})")
        try:
            state = emulator.set_state(**changes)
        except ValueError as e:
            raise p.RequestError(p.BAD_REQUEST, str(e)) from None
        await self.printers[name].refresh()
        return {"printer": name, "state": dataclasses.asdict(state),
                "status": self.printers[name].status.as_dict()}

    def _sim_stick(self, params: dict[str, Any]) -> dict[str, Any]:
        assert self.sticks is not None
        device = p.param(params, "unplug", str, required=False)
        if device is not None:
            if device not in self.sticks.present:
                raise p.RequestError(p.NOT_FOUND, f"no stick {device!r} plugged in "
                                                  f"({', '.join(self.sticks.present) or 'none'})")
            self.sticks.removed(device)
            return {"unplugged": device}
        path = p.param(params, "stick", str)
        if not path.startswith("/") or not os.path.isdir(path):
            raise p.RequestError(p.BAD_REQUEST, f"stick: an existing directory, as an absolute path ({path!r})")
        return {"plugged": self.sticks.plug_directory(path).describe()}
