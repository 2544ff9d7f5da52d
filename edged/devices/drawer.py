"""The cash drawer: kicked through its printer, its sensor read from the printer's status.

Every opening is journaled (`drawer.open`, with the reason and who asked)
before the kick is sent. A ready printer gets ESC p with the configured pin
and pulse; a printer that cannot print (paper out, cover open) would hold
ESC p and open the drawer minutes later by itself, so it gets the real-time
pulse DLE DC4 instead, which it executes at once. The sensor is pin 3 of the
drawer connector (DLE EOT 1); which level means open depends on the drawer,
so it is configured (`sensor`), and unknown (`open: null`) without it.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from ..config import DrawerSettings
from ..journal.service import Journal
from ..journal.store import Entry
from ..relay import protocol as p
from .printer.device import Printer

log = logging.getLogger("edged.drawer")


def kick_bytes(pin: int, pulse_ms: int) -> bytes:
    """ESC p m t1 t2 (t in 2 ms units), encoded by python-escpos."""
    from . import escpos_cache

    escpos_cache.load()  # here: a till without a printer never loads python-escpos
    from escpos.printer import Dummy

    out = Dummy()
    t = max(1, min(255, pulse_ms // 2))
    out.cashdraw([27, 112, 0 if pin == 2 else 1, t, t])
    return out.output


def realtime_kick_bytes(pin: int, pulse_ms: int) -> bytes:
    """DLE DC4 1 m t (t in 100 ms units, 1..8): executed on arrival, also while offline."""
    return bytes([0x10, 0x14, 1, 0 if pin == 2 else 1, max(1, min(8, round(pulse_ms / 100)))])


class Drawer:
    kind = "drawer"

    def __init__(self, name: str, settings: DrawerSettings, printer: Printer, journal: Journal,
                 publish: p.Publish) -> None:
        self.name = name
        self.settings = settings
        self.printer = printer
        self.journal = journal
        self.publish = publish
        self.open: bool | None = None
        self.since = time.time()
        self.kicks = 0
        self._alert: asyncio.TimerHandle | None = None
        self._reads: set[asyncio.Task] = set()
        printer.listeners.append(self._on_status)

    @property
    def kick(self) -> bytes:
        return kick_bytes(self.settings.pin, self.settings.pulse_ms)

    async def start(self) -> None:
        self._on_status(self.printer)  # the printer was read before us

    async def stop(self) -> None:
        if self._alert:
            self._alert.cancel()
        for task in self._reads:
            task.cancel()
        await asyncio.gather(*self._reads, return_exceptions=True)

    def healthy(self) -> bool:
        return True  # the printer's health covers the wire

    def sensed(self) -> bool | None:
        pin3 = self.printer.status.drawer_pin3
        if self.settings.sensor == "none" or pin3 is None:
            return None
        return pin3 if self.settings.sensor == "open_high" else not pin3

    def describe(self) -> dict[str, Any]:
        state = {True: "open", False: "closed", None: "unknown"}[self.open]
        reasons = ["no_sensor"] if self.settings.sensor == "none" else ([] if self.open is not None
                                                                         else ["printer_not_answering"])
        return {"kind": self.kind, "printer": self.printer.name, "state": state, "reasons": reasons,
                "open": self.open, "since": self.since, "sensor": self.settings.sensor,
                "drawer_pin3": self.printer.status.drawer_pin3, "detail": ""}

    def summary(self) -> str:
        return f"drawer {self.name}: {self.describe()['state']}"

    def _on_status(self, printer: Printer) -> None:
        now_open = self.sensed()
        if now_open == self.open:
            return
        self.open, self.since = now_open, time.time()
        log.info("drawer %s: %s", self.name, {True: "open", False: "closed", None: "unknown"}[now_open])
        self.publish({"event": "drawer.state", "drawer": self.name, "open": now_open, "since": self.since})
        if self._alert:
            self._alert.cancel()
            self._alert = None
        if now_open:
            loop = asyncio.get_running_loop()
            self._alert = loop.call_later(self.settings.open_alert_after, self._left_open)

    def _left_open(self) -> None:
        self._alert = None
        seconds = round(time.time() - self.since, 1)
        log.warning("drawer %s open for %.0f s (drawers.%s.open_alert_after = %g)", self.name, seconds,
                    self.name, self.settings.open_alert_after)
        self.publish({"event": "drawer.alert", "drawer": self.name, "open_for": seconds,
                      "open_alert_after": self.settings.open_alert_after})

    async def open_drawer(self, reason: str, who: dict[str, Any]) -> float:
        """Journal the opening, then kick; device_unavailable when the kick cannot go out."""
        body = {"drawer": self.name, "reason": reason, **who}
        await self.journal.append([Entry("drawer.open", body)])
        status = self.printer.status
        data = self.kick if status.printable else realtime_kick_bytes(self.settings.pin, self.settings.pulse_ms)
        try:
            await self.printer.send(data)
        except ConnectionError as e:
            await self.journal.append([Entry("drawer.open_failed", {"drawer": self.name, "error": str(e)})])
            raise p.RequestError(p.DEVICE_UNAVAILABLE, f"drawer {self.name!r}: {e}") from None
        self.kicks += 1
        log.info("drawer %s kicked (%s) for %s: %s", self.name, "ESC p" if status.printable else "DLE DC4",
                 who.get("client"), reason)
        self.read_soon()
        return time.time()

    def read_soon(self) -> None:
        """Read the sensor shortly after a kick rather than at the next poll, so drawer.state
        follows quickly (a drawer takes a moment to spring open)."""
        task = asyncio.create_task(self._read_later(), name=f"drawer-{self.name}-read")
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)

    async def _read_later(self) -> None:
        await asyncio.sleep(0.3)
        await self.printer.refresh()
