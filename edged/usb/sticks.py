"""USB sticks: which are plugged in, mounting them, and telling clients.

One pyudev monitor on the `block` subsystem, read on the event loop. It
listens to udevd when udevd runs (its events carry ID_BUS and ID_FS_TYPE),
else to the kernel (containers, test machines), whose events `probe` completes
from sysfs and blkid. Devices present at startup are looked at once.

Events: `usb.inserted` when a stick is recognised, `usb.removed` when it goes
(`safe` says whether edged had unmounted it first), `usb.safe_to_remove` once
it is unmounted after an export. What is written to a stick, and when, is the
day exports' business (day/carry.py): they call mount() and unmount().
On the simulated till (`usb.mounter = "directory"`) there is no monitor: the
`sim` op plugs a directory in as a stick.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pyudev

from ..config import UsbSettings
from .mount import Mounter, MountError
from .probe import Stick, classify

log = logging.getLogger("edged.usb")
UDEVD_CONTROL = "/run/udev/control"  # exists while systemd-udevd runs


class Sticks:
    def __init__(self, settings: UsbSettings, mounter: Mounter, publish: Callable[[dict], int]) -> None:
        self.settings = settings
        self.mounter = mounter
        self.publish = publish
        self.present: dict[str, Stick] = {}
        self.mounted: dict[str, tuple[Stick, str]] = {}  # device -> (stick, mount point)
        self.on_insert: Callable[[Stick], Awaitable[None]] | None = None
        self.monitor: pyudev.Monitor | None = None
        self.source = ""
        self._tasks: set[asyncio.Task] = set()
        self._removals: dict[str, int] = {}  # device -> times udev said it was removed (stale probes)
        self._sim = itertools.count(1)

    async def start(self) -> None:
        if self.settings.mounter == "directory":
            return
        self.source = "udev" if os.path.exists(UDEVD_CONTROL) else "kernel"
        context = pyudev.Context()
        try:
            self.monitor = pyudev.Monitor.from_netlink(context, source=self.source)
            self.monitor.filter_by("block")
            self.monitor.start()
        except OSError as e:
            log.warning("no block device monitor (%s); USB sticks are not detected", e)
            self.monitor = None
            return
        asyncio.get_running_loop().add_reader(self.monitor.fileno(), self._readable)
        for device in context.list_devices(subsystem="block"):  # sticks already plugged in
            self.handle("add", dict(device.properties), _ancestors(device))

    async def stop(self) -> None:
        if self.monitor is not None:
            asyncio.get_running_loop().remove_reader(self.monitor.fileno())
            self.monitor = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for device, (stick, path) in list(self.mounted.items()):  # stopped mid-export: leave nothing mounted
            try:
                await self.mounter.unmount(stick, path)
            except MountError as e:
                log.warning("USB stick %s left mounted at %s: %s", device, path, e)

    def healthy(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {"mounter": self.settings.mounter, "source": self.source or None,
                "watching": self.monitor is not None or self.settings.mounter == "directory",
                "sticks": [{**s.describe(), "mounted": d in self.mounted} for d, s in self.present.items()]}

    def spawn(self, coro: Awaitable[None]) -> None:
        """Run coro as a task this part owns: cancelled at stop, its crash logged."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("USB stick task failed", exc_info=task.exception())

    def _readable(self) -> None:
        assert self.monitor is not None
        try:
            while (device := self.monitor.poll(timeout=0)) is not None:
                self.handle(device.action or "", dict(device.properties), _ancestors(device))
        except OSError as e:  # ENOBUFS: events lost; a stick re-plugged is seen again
            log.warning("block device monitor: %s", e)

    def handle(self, action: str, props: dict[str, str], ancestors: list[tuple[str, str]]) -> None:
        """One udev event for a block device. A removal makes every probe started before it stale:
        seen on real USB, a `change` (udisks2 probing) probed after the stick was pulled brought
        back a phantom `sda`, and the next stick, also `sda`, was then never announced. (A later
        `change` does not: its probe may find less than an earlier one did.)"""
        device = os.path.basename(props.get("DEVNAME", "")) or props.get("DEVPATH", "").rsplit("/", 1)[-1]
        if action in ("add", "change"):
            self.spawn(self._added(props, ancestors, (device, self._removals.get(device, 0))))
        elif action == "remove":
            self._removals[device] = self._removals.get(device, 0) + 1
            self.removed(device)

    async def _added(self, props: dict[str, str], ancestors: list[tuple[str, str]],
                     event: tuple[str, int] | None = None) -> None:
        try:
            stick = await classify(props, ancestors, self.settings)
        except OSError as e:  # blkid missing, or the device went while probing
            log.warning("cannot probe %s: %s", props.get("DEVNAME", "?"), e)
            return
        if event is not None and self._removals.get(event[0], 0) != event[1]:
            return  # pulled while it was being probed: what the probe found is gone
        if stick is not None:
            self.inserted(stick)

    def inserted(self, stick: Stick) -> None:
        if stick.device in self.present:
            return
        self.present[stick.device] = stick
        log.info("USB stick %s inserted (%s, label %r)", stick.device, stick.fs_type, stick.label)
        self.publish({"event": "usb.inserted", **stick.describe()})
        if self.on_insert is not None:
            self.spawn(self.on_insert(stick))

    def removed(self, device: str) -> None:
        stick = self.present.pop(device, None)
        if stick is None:
            return
        safe = device not in self.mounted
        log.log(logging.INFO if safe else logging.WARNING, "USB stick %s removed%s", device,
                "" if safe else " while mounted")
        self.publish({"event": "usb.removed", "device": device, "safe": safe})

    def gone(self, device: str) -> bool:
        """Pulled, or going: edged heard it removed, or its node has vanished (the kernel drops the
        node at once; udev's remove event may come after the writer has failed)."""
        stick = self.present.get(device)
        return stick is None or not os.path.exists(stick.node)

    def write_protected(self, device: str) -> bool:
        """The device itself refuses writes (a stick's lock switch, a read-only reader): the
        kernel's `ro` flag for it. A filesystem the kernel set read-only after an error is on a
        device whose flag is 0. Cannot tell (a simulated stick): True, the plain answer."""
        try:
            with open(f"/sys/class/block/{os.path.basename(device)}/ro") as f:
                return f.read().strip() != "0"
        except OSError:
            return True

    def plug_directory(self, path: str) -> Stick:
        """The simulated till: a directory plugged in as a stick."""
        stick = Stick(f"sim{next(self._sim)}", path, "directory", "sim", os.path.basename(path.rstrip("/")))
        self.inserted(stick)
        return stick

    async def mount(self, stick: Stick) -> str:
        path = await self.mounter.mount(stick)
        self.mounted[stick.device] = (stick, path)
        return path

    async def unmount(self, stick: Stick) -> None:
        """Unmount; then the stick is announced as safe to remove (and udisks2 powers it off, which
        removes the device). MountError if it could not be unmounted, or was pulled first."""
        _, path = self.mounted[stick.device]
        try:
            await self.mounter.unmount(stick, path)
        except MountError:
            if stick.device in self.present:
                raise
        self.mounted.pop(stick.device, None)
        if stick.device not in self.present:  # pulled first: what reached it is not vouched for
            raise MountError(f"the stick {stick.device} was removed before it was unmounted")
        log.info("USB stick %s unmounted; safe to remove", stick.device)
        self.publish({"event": "usb.safe_to_remove", "device": stick.device})
        await self.mounter.eject(stick)


def _ancestors(device: pyudev.Device) -> list[tuple[str, str]]:
    return [(d.subsystem or "", d.sys_name) for d in device.ancestors]
