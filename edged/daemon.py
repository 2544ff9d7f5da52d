"""The composition root: build the parts from config, start them in order,
stop them in reverse on SIGTERM/SIGINT, and keep systemd informed.
"""
from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

from .config import Config
from .day.book import DayBook
from .day.carry import Carrier
from .day.ops import DayOps
from .day.tillkey import TillKey
from .devices.drawer import Drawer
from .devices.printer.device import Printer
from .devices.printer.jobs import JobBook
from .devices.printer.ops import PrintOps
from .devices.printer.spooler import PrintService
from .devices.scanner import decode
from .devices.scanner.device import Scanner
from .devices.scanner.hotplug import Hotplug
from .devices.scanner.ops import ScanOps
from .journal.disk import RealDisk
from .journal.ops import JournalOps
from .journal.owners import Owners
from .journal.service import Journal
from .journal.store import Store
from .relay.access import Access
from .relay.registry import Registry
from .relay.server import Server
from .sim.till import Hardware, SimulatedHardware
from .sync.acklog import AckLog
from .sync.deadlines import Deadlines
from .sync.state import Sync
from .systemd import Notifier, listen_socket
from .till import Till
from .usb.mount import mounter
from .usb.sticks import Sticks

log = logging.getLogger("edged")
GC_THRESHOLD = 50_000
HEARTBEAT = 1.0  # seconds between STATUS refreshes when no watchdog asks for faster


def _said_if_failed(warming: asyncio.Future[None]) -> None:
    if not warming.cancelled() and (e := warming.exception()) is not None:
        log.error("scanners: the GS1 parser (biip) cannot be loaded, scans will fail: %s", e)


class Part(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def healthy(self) -> bool: ...


class Daemon:
    def __init__(self, cfg: Config, *, simulate: bool = False, notifier: Notifier | None = None,
                 input_opener: Callable[[str], Any] | None = None) -> None:
        self.cfg = cfg
        # How keyboard-wedge scanners' device paths are opened: evdev + grab unless given
        # (the scan benchmark hands in pipe-backed devices).
        self.input_opener = input_opener
        self.simulate = simulate
        self.notifier = notifier or Notifier()
        self.state_dir = Path(cfg.daemon.state_dir)
        # The one place --simulate is decided: the devices the config names, or stand-ins
        # for them (edged/sim/till.py) that the start steps below ask for their settings.
        self.hw = SimulatedHardware(cfg, self.state_dir) if simulate else Hardware(cfg)
        self.started: list[tuple[str, Part]] = []
        self._stop = asyncio.Event()
        self._unhealthy: set[str] = set()
        self.server: Server | None = None
        self._warming: asyncio.Future[None] | None = None  # the GS1 parser loading (decode.warm)

    def publish(self, event: dict) -> int:
        """Device events for watchers (how many got it); parts started before the socket call this too."""
        return self.server.publish(event) if self.server is not None else 0

    def _printer_changed(self, printer: Printer) -> None:
        self.publish({"event": "printer.status", "printer": printer.name, **printer.status.as_dict()})

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._request_stop, sig)
        try:
            await self._start_all()
            # Replaying a backlog makes ~10 objects per record; with the default threshold
            # (700) the cyclic GC runs every few dozen records and halves the replay rate.
            # Our data has no cycles to speak of: collect young objects 70x less often, and
            # leave what startup built out of every collection.
            gc.set_threshold(GC_THRESHOLD, 20, 20)
            gc.freeze()
            self.notifier.ready()
            log.info("edged ready (till %s)%s", self.cfg.till_id, " on the simulated till" if self.hw.simulated else "")
            heartbeat = asyncio.create_task(self._heartbeat(), name="heartbeat")
            await self._stop.wait()
            heartbeat.cancel()
            await asyncio.gather(heartbeat, return_exceptions=True)
        finally:
            self.notifier.stopping()
            await self._stop_all()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        log.info("edged stopped")
        return 0

    def _request_stop(self, sig: signal.Signals) -> None:
        log.info("%s received; stopping", sig.name)
        self._stop.set()

    @contextlib.asynccontextmanager
    async def parts(self) -> AsyncIterator[Daemon]:
        """Every part started, stopped in reverse on leaving (also what tests run in-process)."""
        try:
            await self._start_all()
            yield self
        finally:
            await self._stop_all()

    async def _start(self, name: str, part: Part) -> None:
        await part.start()
        self.started.append((name, part))

    async def _start_all(self) -> None:
        """The start order (docs/ARCHITECTURE.md); _stop_all stops in reverse."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        journal = await self.start_journal()
        owners, sync, deadlines = await self.start_followers(journal)
        printers = await self.start_printers()
        drawers = await self.start_drawers(printers, journal)
        printing = await self.start_printing(journal, printers, drawers)
        scanners = await self.start_scanners()
        days, key = await self.start_days(journal)
        sticks, carrier = await self.start_sticks(days, journal)
        self.till = Till(self.cfg, {**printers, **drawers, **scanners}, self.hw.simulated, journal,
                         printing=printing, sticks=sticks, sync=sync, deadlines=deadlines, key=key,
                         emulators=self.hw.emulators, sim_scanner=self.hw.scanner)
        ops = Registry.of(self.till, JournalOps(journal, sync, owners), PrintOps(printing, drawers),
                          ScanOps(scanners), DayOps(days, carrier), sync)
        await self.start_socket(ops, scanners)

    async def start_journal(self) -> Journal:
        jcfg = self.cfg.journal
        store = Store(RealDisk(str(self.state_dir / "journal")), segment_size=jcfg.segment_size,
                      ranges={name: (r.first, r.last) for name, r in self.cfg.numbering.items()})
        journal = Journal(store, min_retention_days=jcfg.min_retention_days, on_event=self.publish,
                          flush_timeout=jcfg.flush_timeout)
        wd = self.notifier.watchdog_interval
        if wd and jcfg.flush_timeout >= 2 * wd:  # a hung flush is then noticed a watchdog period late
            log.warning("journal.flush_timeout (%g s) is not below WatchdogSec (%g s)", jcfg.flush_timeout, 2 * wd)
        await self._start("journal", journal)
        return journal

    async def start_followers(self, journal: Journal) -> tuple[Owners, Sync, Deadlines]:
        """The journal's readers that must see it before anything else appends."""
        owners = Owners(journal)  # read now: a damaged file stops the start, not the first ack
        await self._start("consumer-owners", owners)
        # Both read the journal from their cursors, then follow it.
        sync = Sync(journal, self.cfg.sync, AckLog(self.state_dir / "sync.log"), self.publish)
        await self._start("sync", sync)
        deadlines = Deadlines(journal, self.cfg.deadlines, self.publish)
        await self._start("deadlines", deadlines)
        return owners, sync, deadlines

    async def start_printers(self) -> dict[str, Printer]:
        settings = await self.hw.printers(self._start)  # emulators started first when simulating
        printers = {name: Printer(name, s, on_change=self._printer_changed) for name, s in settings.items()}
        for name, printer in printers.items():
            await self._start(f"printer-{name}", printer)
        return printers

    async def start_drawers(self, printers: dict[str, Printer], journal: Journal) -> dict[str, Drawer]:
        drawers = {name: Drawer(name, d, printers[d.printer or next(iter(printers))], journal, self.publish)
                   for name, d in self.hw.drawers(list(printers)).items()}
        for name, drawer in drawers.items():
            await self._start(f"drawer-{name}", drawer)
        return drawers

    async def start_printing(self, journal: Journal, printers: dict[str, Printer],
                             drawers: dict[str, Drawer]) -> PrintService:
        on_printer: dict[str, Drawer] = {}
        for drawer in drawers.values():  # a document's open_drawer kicks its printer's first drawer
            on_printer.setdefault(drawer.printer.name, drawer)
        printing = PrintService(JobBook(journal, set(printers), self.publish), printers, on_printer)
        await self._start("print", printing)
        return printing

    async def start_scanners(self) -> dict[str, Scanner]:
        settings = await self.hw.scanners(self._start)  # the simulated scanner started first when simulating
        scanners = {name: Scanner(name, s, self.publish,
                                  self.hw.opener(name, self.input_opener) if s.backend == "evdev" else None)
                    for name, s in settings.items()}
        if scanners:
            self._warming = asyncio.get_running_loop().run_in_executor(None, decode.warm)
            self._warming.add_done_callback(_said_if_failed)
        for name, scanner in scanners.items():
            await self._start(f"scanner-{name}", scanner)
        wedges = [s for s in scanners.values() if s.settings.backend == "evdev"]
        if wedges:
            await self._start("hotplug", Hotplug(wedges))
        return scanners

    async def start_days(self, journal: Journal) -> tuple[DayBook, TillKey]:
        days = DayBook(journal, self.cfg.till_id, self.publish, self.cfg.export.exclude_kinds)
        await self._start("days", days)
        key = TillKey(journal, days, str(self.state_dir), self.cfg.till_id)
        await self._start("identity", key)
        return days, key

    async def start_sticks(self, days: DayBook, journal: Journal) -> tuple[Sticks | None, Carrier]:
        usb = self.hw.usb()
        sticks = Sticks(usb, mounter(usb), self.publish) if usb is not None else None
        self.carrier = carrier = Carrier(days, journal, self.publish, sticks, self.cfg.export.usb == "on_day_close")
        if sticks is not None:  # after the carrier: sticks found at startup go straight to it
            await self._start("usb", sticks)
        return sticks, carrier

    async def start_socket(self, ops: Registry, scanners: dict[str, Scanner]) -> None:
        d = self.cfg.daemon
        activated = listen_socket()
        if activated is not None:
            if activated.getsockname() != d.socket:
                log.warning("systemd's socket is %s but daemon.socket is %s: clients reading the config "
                            "will not find edged", activated.getsockname(), d.socket)
            if d.socket_group:
                log.warning("daemon.socket_group is ignored: edged.socket's SocketGroup= decides who may connect")
        server = Server(d.socket, ops, self.till.hello_info, max_frame=d.max_frame,
                        max_connections=d.max_connections, send_queue=d.send_queue,
                        max_connections_per_uid=d.max_connections_per_uid,
                        reserved_connections=d.reserved_connections,
                        client_timeout=d.client_timeout, group=d.socket_group,
                        access=Access(d.privileged_users, d.privileged_groups), activated=activated)
        self.till.server = self.server = server
        server.watchers.backlogs["scanner"] = lambda: sorted(
            (e for s in scanners.values() for e in s.take_kept()), key=lambda e: e["at"])
        await self._start("socket", server)

    async def _stop_all(self) -> None:
        while self.started:
            name, part = self.started.pop()
            try:
                await part.stop()
            except Exception:
                log.exception("stopping %s failed", name)

    def healthy(self) -> bool:
        sick = {name for name, part in self.started if not part.healthy()}
        for name in sick - self._unhealthy:
            log.error("part %s reports unhealthy; withholding the systemd watchdog ping", name)
        for name in self._unhealthy - sick:
            log.info("part %s healthy again", name)
        self._unhealthy = sick
        return not sick

    async def _heartbeat(self) -> None:
        """Keep STATUS= current; ping the watchdog from the loop only while all parts are healthy."""
        wd = self.notifier.watchdog_interval
        # Ping on every healthy tick, at most half the timeout apart, so loop jitter never kills us.
        period = min(HEARTBEAT, wd) if wd else HEARTBEAT
        while True:
            self.notifier.status(self.till.summary())
            if self.healthy() and wd:
                self.notifier.watchdog()
            await asyncio.sleep(period)
