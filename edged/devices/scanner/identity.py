"""Which input device is this scanner: a stable path, or USB ids on udev properties.

`/dev/input/eventN` numbers change with every plug and boot, so a scanner is
named by a `/dev/input/by-id/...` link or by vendor, product and serial
matched against udev's properties (ID_VENDOR_ID, ID_MODEL_ID, ID_SERIAL_SHORT).
Vendor and product alone name a model, not a scanner: when two devices match,
edged refuses to guess and says so, rather than reading the wrong one.
"""
from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from dataclasses import dataclass

import pyudev

EVENT_NODE = "/dev/input/event"


class NotFound(OSError):
    """No device, or more than one, fits the identity (the message says which)."""


@dataclass(frozen=True)
class Identity:
    path: str = ""
    vendor: str = ""
    product: str = ""
    serial: str = ""

    def __str__(self) -> str:
        if self.path:
            return self.path
        return f"vendor {self.vendor} product {self.product}" + (f" serial {self.serial}" if self.serial else "")

    def matches(self, props: Mapping[str, str]) -> bool:
        """Is the input device with these udev properties this scanner's keyboard node?"""
        node = props.get("DEVNAME", "")
        if not node.startswith(EVENT_NODE):
            return False
        if self.path:
            return self.path in props.get("DEVLINKS", "").split() or os.path.realpath(self.path) == node
        return (props.get("ID_INPUT_KEYBOARD") == "1"
                and props.get("ID_VENDOR_ID", "").lower() == self.vendor.lower()
                and props.get("ID_MODEL_ID", "").lower() == self.product.lower()
                and (not self.serial or props.get("ID_SERIAL_SHORT") == self.serial))

    def resolve(self, context: pyudev.Context | None = None) -> str:
        """The device node to open now; NotFound when none or several fit."""
        if self.path:
            return self.path
        found = sorted(d.device_node for d in (context or pyudev.Context()).list_devices(subsystem="input")
                       if self.matches(d.properties))
        if not found:
            raise NotFound(errno.ENOENT, f"no keyboard input device with {self}")
        if len(found) > 1:
            raise NotFound(errno.EEXIST, f"{len(found)} devices have {self} ({', '.join(found)}); "
                                         "set serial to say which")
        return found[0]
