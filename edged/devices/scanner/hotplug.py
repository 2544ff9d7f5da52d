"""Hot-plug: udev tells edged when a scanner's input device comes and goes.

One pyudev monitor on the input subsystem, read on the event loop. An `add`
whose properties fit a configured scanner re-opens it at once; a `remove` of the
node a scanner has open marks it offline at once (its fd may not error until
it is read). Events come from udevd (source `udev`), so by the time edged hears
them the node's permissions and /dev/input/by-id links are in place. Scanners
also retry on their own every few seconds, which covers a monitor that lost
events (ENOBUFS) or a system without udevd.
"""
from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import pyudev

if TYPE_CHECKING:
    from .device import Scanner

log = logging.getLogger("edged.scanner")


class Hotplug:
    def __init__(self, scanners: list[Scanner]) -> None:
        self.scanners = scanners
        self.monitor: pyudev.Monitor | None = None

    async def start(self) -> None:
        try:
            self.monitor = pyudev.Monitor.from_netlink(pyudev.Context(), source="udev")
            self.monitor.filter_by("input")
            self.monitor.start()
        except OSError as e:  # no netlink (some containers): the scanners' own retry still works
            log.warning("no udev monitor (%s); scanners are re-opened by polling only", e)
            self.monitor = None
            return
        asyncio.get_running_loop().add_reader(self.monitor.fileno(), self._readable)

    async def stop(self) -> None:
        if self.monitor is not None:
            asyncio.get_running_loop().remove_reader(self.monitor.fileno())
            self.monitor = None

    def healthy(self) -> bool:
        return True

    def _readable(self) -> None:
        assert self.monitor is not None
        try:
            while (device := self.monitor.poll(timeout=0)) is not None:
                self.handle(device.action or "", dict(device.properties))
        except OSError as e:  # ENOBUFS: events were lost; the scanners' own retry finds them
            log.warning("udev monitor: %s; scanners are re-opened by their retry", e)

    def handle(self, action: str, props: dict[str, str]) -> None:
        node = props.get("DEVNAME", "")
        for scanner in self.scanners:
            if action == "add" and scanner.identity.matches(props):
                log.info("scanner %s: %s plugged in", scanner.name, node)
                ident = scanner.identity
                # vendor:product without a serial fits any scanner of that model: look at all of
                # them (resolve refuses to guess between two) instead of taking this one.
                scanner.open(None if ident.vendor and not ident.serial else node)
            elif action == "remove" and node and scanner.node == node:
                scanner.close("unplugged")
