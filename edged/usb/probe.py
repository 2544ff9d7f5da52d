"""Is this block device a USB stick edged may write a day to?

A stick is a partition, or a whole disk without a partition table, on one of
the configured buses (ID_BUS; `usb` by default) holding a filesystem of one of
the configured types (ID_FS_TYPE; vfat and exfat by default). Internal disks,
partition tables and unknown filesystems are left alone.

With udevd running, its events carry ID_BUS and ID_FS_TYPE. Kernel events
(no udevd, as in containers and on this project's test machines) carry
neither: the bus is read from sysfs (a `usb` device among the ancestors), and
the filesystem from the device itself with `blkid -p` (a read-only probe of
the superblock, never a mount). An event udevd has handled (USEC_INITIALIZED)
is not probed again: udevd's answer stands, and edged under its unit cannot
open a block device anyway. A whole disk with a partition table is passed over
quietly: its partitions are looked at as devices of their own.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

from ..config import UsbSettings

log = logging.getLogger("edged.usb")
PROBE_TIMEOUT = 10.0  # blkid on a failing stick can hang in the kernel for a while


@dataclasses.dataclass(frozen=True)
class Stick:
    device: str  # kernel name (sdb1, loop0p1); for a simulated stick, its name
    node: str  # /dev/sdb1; for a simulated stick, its directory
    fs_type: str
    bus: str
    label: str = ""
    uuid: str = ""
    disk: str = ""  # the whole disk's node, which udisks2 powers off

    def describe(self) -> dict[str, Any]:
        return {"device": self.device, "node": self.node, "fs_type": self.fs_type, "bus": self.bus,
                "label": self.label, "uuid": self.uuid}


def bus_of(props: dict[str, str], ancestors: list[tuple[str, str]]) -> str:
    """ID_BUS, else from sysfs: `usb` if a USB device is an ancestor, `loop` for loop devices,
    else the first non-block subsystem above it (`scsi`, `nvme`, `mmc`...)."""
    if props.get("ID_BUS"):
        return props["ID_BUS"]
    subsystems = [sub for sub, _ in ancestors if sub and sub != "block"]
    if "usb" in subsystems:
        return "usb"
    if props.get("DEVPATH", "").startswith("/devices/virtual/block/loop"):
        return "loop"
    return subsystems[0] if subsystems else "virtual"


async def blkid(node: str) -> dict[str, str]:
    """What the device holds, read from the device (`blkid -p -o export`); {} when nothing."""
    proc = await asyncio.create_subprocess_exec(
        "blkid", "-p", "-o", "export", node, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), PROBE_TIMEOUT)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        log.warning("blkid %s did not answer within %.0f s; not used as a stick", node, PROBE_TIMEOUT)
        return {}
    if proc.returncode not in (0, 2) or err.strip():  # 2: nothing recognised, or (with a message) unreadable
        log.info("blkid %s: %s", node, err.decode(errors="replace").strip())
    return dict(line.split("=", 1) for line in out.decode(errors="replace").splitlines() if "=" in line)


async def classify(props: dict[str, str], ancestors: list[tuple[str, str]],
                   settings: UsbSettings) -> Stick | None:
    """The stick this block device is, or None (with the reason logged at debug level)."""
    node, kind = props.get("DEVNAME", ""), props.get("DEVTYPE")
    if kind not in ("disk", "partition") or not node:
        return None
    name = os.path.basename(node)
    bus = bus_of(props, ancestors)
    if bus not in settings.buses:
        log.debug("%s: on bus %s, not one of usb.buses (%s)", name, bus, ", ".join(settings.buses))
        return None
    if "ID_FS_TYPE" in props:
        fs = {"TYPE": props["ID_FS_TYPE"], "LABEL": props.get("ID_FS_LABEL", ""),
              "UUID": props.get("ID_FS_UUID", "")}
    elif "USEC_INITIALIZED" in props:
        # udevd has probed it (as root) and found no filesystem. edged's own blkid could not
        # tell more: under the packaged unit (DevicePolicy=closed, not in group disk) it cannot
        # even open the device, and would take "Permission denied" for "nothing there".
        fs = {}
    else:
        fs = await blkid(node)
    if not fs.get("TYPE") and (props.get("ID_PART_TABLE_TYPE") or fs.get("PTTYPE")):
        # A stick as sold: its partitions come as devices of their own and are looked at then.
        log.debug("%s on %s: a partition table; its partitions are looked at", name, bus)
        return None
    if fs.get("TYPE") not in settings.filesystems:
        why = f"filesystem {fs['TYPE']}" if fs.get("TYPE") else "no filesystem (unformatted?)"
        log.info("%s on %s: %s, not one of usb.filesystems (%s); left alone", name, bus, why,
                 ", ".join(settings.filesystems))
        return None
    disk = "" if kind == "disk" else "/dev/" + next((n for sub, n in ancestors if sub == "block"), name)
    return Stick(name, node, fs["TYPE"], bus, _printable(fs.get("LABEL", "")), _printable(fs.get("UUID", "")),
                 disk or node)


def _printable(text: str) -> str:
    """A label is the stick's to choose: no control characters reach logs, events or terminals."""
    return "".join(c for c in text if c.isprintable())[:64]
