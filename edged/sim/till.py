"""What `edged run --simulate` puts in place of the hardware, chosen in one place.

The daemon asks a `Hardware` for each device's settings at the step that
starts those devices: the real till's are the config's own; the simulated
till's (`SimulatedHardware`) are stand-ins started just before the parts that
drive them, so the start (and reverse stop) order is the same either way.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..config import Config, DrawerSettings, PrinterSettings, ScannerSettings, UsbSettings
from .paper import Receipt
from .printer import PrinterEmulator
from .scanner import WEDGE_LAYOUT, SimScanner

log = logging.getLogger("edged")

# How the daemon starts a part (and records it for the reverse stop).
Start = Callable[[str, Any], Awaitable[None]]
Opener = Callable[[str], Any]


class Hardware:
    """The real till: the devices the config names, as it names them."""

    simulated = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.emulators: dict[str, PrinterEmulator] = {}  # the `sim` op's printers (none here)
        self.scanner: SimScanner | None = None  # the `sim` op's scanner (none here)

    async def printers(self, start: Start) -> dict[str, PrinterSettings]:
        return dict(self.cfg.printers)

    def drawers(self, printers: list[str]) -> dict[str, DrawerSettings]:
        return dict(self.cfg.drawers)

    async def scanners(self, start: Start) -> dict[str, ScannerSettings]:
        return dict(self.cfg.scanners)

    def opener(self, scanner: str, default: Opener | None) -> Opener | None:
        """How keyboard-wedge scanner `scanner`'s device is opened (None: evdev + grab)."""
        return default

    def usb(self) -> UsbSettings | None:
        """The sticks' settings, or None when sticks are not used."""
        if self.cfg.usb.mounter == "directory":
            log.warning("usb.mounter = \"directory\" is for the simulated till; USB sticks are not used")
            return None
        return self.cfg.usb


class SimulatedHardware(Hardware):
    """The simulated till: emulators for the printers, simulated scanners, directories as sticks."""

    simulated = True

    def __init__(self, cfg: Config, state_dir: Path) -> None:
        super().__init__(cfg)
        self.state_dir = state_dir

    async def printers(self, start: Start) -> dict[str, PrinterSettings]:
        # Every configured printer (or one called "receipt") is replaced by an emulator,
        # so a site's own config can be tried out without its hardware.
        printers = dict(self.cfg.printers)
        for name in printers or {"receipt": PrinterSettings()}:
            base = printers.get(name, PrinterSettings())
            emulator = PrinterEmulator(on_receipt=self._receipt_saver(name), profile=base.profile,
                                       columns=base.line_columns())
            await start(f"sim-printer-{name}", emulator)
            self.emulators[name] = emulator
            printers[name] = dataclasses.replace(base, backend="network", host="127.0.0.1", port=emulator.port)
        return printers

    def drawers(self, printers: list[str]) -> dict[str, DrawerSettings]:
        drawers = dict(self.cfg.drawers)
        if not drawers and printers:
            # The emulator's drawer raises pin 3 when open.
            drawers["drawer"] = DrawerSettings(printer=printers[0], sensor="open_high")
        return drawers

    async def scanners(self, start: Start) -> dict[str, ScannerSettings]:
        scanners = dict(self.cfg.scanners)
        if not scanners:
            self.scanner = SimScanner()  # fed by `edged scan send CODE`
            await start("sim-scanner", self.scanner)
            scanners["scanner"] = ScannerSettings(backend="serial", device=self.scanner.path, suffix="cr")
            scanners["wedge"] = ScannerSettings(device="/dev/input/by-id/simulated-wedge-event-kbd",
                                                layout=WEDGE_LAYOUT)
        return scanners

    def opener(self, scanner: str, default: Opener | None) -> Opener | None:
        if self.scanner is not None and scanner == "wedge":
            return self.scanner.open_wedge
        return default

    def usb(self) -> UsbSettings | None:
        # The simulated till's sticks are directories plugged in with the `sim` op.
        return dataclasses.replace(self.cfg.usb, mounter="directory")

    def _receipt_saver(self, printer: str) -> Callable[[Receipt, str], None]:
        folder = self.state_dir / "sim" / printer
        folder.mkdir(parents=True, exist_ok=True)
        count = itertools.count(len(list(folder.glob("*.txt"))) + 1)

        def save(receipt: Receipt, text: str) -> None:
            number = next(count)
            (folder / f"{number:05d}.txt").write_text(text, encoding="utf-8")
            log.info("simulated printer %s: receipt %d printed:\n%s", printer, number, text.rstrip(),
                     extra={"multiline": True})

        return save

