"""A raw USB printer (backend "usb"): found by pyusb, its bulk endpoints read from its descriptors.

python-escpos's Usb class assumes OUT 0x01 / IN 0x82; printers differ (a Linux printer gadget on
dummy_hcd has OUT 0x02 / IN 0x81, and python-escpos then fails with "Invalid endpoint address").
So the printer-class interface (or else the first with bulk endpoints) is looked up in the
descriptors, unless the config names the endpoints. python-escpos also leaves the kernel's usblp
driver detached after close, and /dev/usb/lpN gone until a replug: closing here gives it back.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import usb.core
import usb.util
from escpos import printer as escpos_printer

from ...config import PrinterSettings

log = logging.getLogger("edged.printer")

PRINTER_CLASS = 7  # USB interface class "printer"
_BULK = 0x02  # bmAttributes bits 0-1: the transfer type
FROM_DESCRIPTORS = "from the device's descriptors"
FROM_CONFIG = "from config"
# Bytes per bulk write. The timeout holds for each one: a printer takes a long receipt with a
# large image only as fast as it prints, so one write of all of it could outlast any timeout.
WRITE_CHUNK = 4096


class EndpointDesc(Protocol):
    """What is read of an endpoint descriptor (pyusb's Endpoint has these fields)."""

    bEndpointAddress: int
    bmAttributes: int


class InterfaceDesc(Protocol):
    """What is read of an interface descriptor; iterating it gives its endpoints, as pyusb's Interface does."""

    bInterfaceNumber: int
    bInterfaceClass: int

    def __iter__(self) -> Iterator[EndpointDesc]: ...


@dataclass(frozen=True)
class Endpoints:
    """Where print data goes and status replies come from, and where edged got them."""

    interface: int
    out_ep: int
    in_ep: int  # 0: the interface has no bulk IN (a printer that cannot answer)
    out_from: str = FROM_DESCRIPTORS
    in_from: str = FROM_DESCRIPTORS

    def describe(self) -> str:
        """E.g. "OUT 0x02 IN 0x81 from the device's descriptors", for doctor and the log."""
        out = f"OUT 0x{self.out_ep:02x}"
        inn = f"IN 0x{self.in_ep:02x}" if self.in_ep else "no IN endpoint (no status)"
        if self.out_from == self.in_from:
            return f"{out} {inn} {self.out_from}"
        return f"{out} {self.out_from}, {inn} {self.in_from}"


def pick_endpoints(interfaces: Iterable[InterfaceDesc]) -> tuple[int, int, int]:
    """(interface number, bulk OUT, bulk IN or 0) of the printer-class interface, or else of the
    first interface with a bulk OUT endpoint; ValueError saying what the descriptors lack."""
    found = []
    for intf in interfaces:
        bulk = [ep.bEndpointAddress for ep in intf if ep.bmAttributes & 0x03 == _BULK]
        outs = [a for a in bulk if not a & 0x80]
        if outs:
            ins = [a for a in bulk if a & 0x80]
            found.append((intf.bInterfaceClass != PRINTER_CLASS, not ins, intf.bInterfaceNumber,
                          outs[0], ins[0] if ins else 0))
    if not found:
        raise ValueError("its USB descriptors show no interface with a bulk OUT endpoint: not a printer, "
                         "or set printers.NAME.out_ep")
    # A printer-class interface first, one that can answer before one that cannot, then in order.
    _, _, number, out_ep, in_ep = min(found)
    return number, out_ep, in_ep


def endpoints_of(device: usb.core.Device, out_ep: int = 0, in_ep: int = 0) -> Endpoints:
    """The endpoints edged uses on this device: from config where given, else its active (or first)
    configuration's descriptors."""
    try:
        config = device.get_active_configuration()
    except usb.core.USBError:  # not configured yet (or not allowed to ask): the first one
        config = device[0]
    if out_ep and in_ep:
        holder = usb.util.find_descriptor(config, custom_match=lambda i: any(
            e.bEndpointAddress == out_ep for e in i))
        return Endpoints(holder.bInterfaceNumber if holder else 0, out_ep, in_ep, FROM_CONFIG, FROM_CONFIG)
    number, found_out, found_in = pick_endpoints(config)
    return Endpoints(number, out_ep or found_out, in_ep or found_in,
                     FROM_CONFIG if out_ep else FROM_DESCRIPTORS, FROM_CONFIG if in_ep else FROM_DESCRIPTORS)


def find_printer(s: PrinterSettings, backend: Any = None) -> usb.core.Device:
    """The one device with the configured vendor, product (and serial number, when set);
    `backend` is pyusb's (None: libusb)."""
    wanted = f"USB {s.vendor_id:04x}:{s.product_id:04x}" + (f" serial {s.serial_number}" if s.serial_number else "")
    found = list(usb.core.find(find_all=True, idVendor=s.vendor_id, idProduct=s.product_id, backend=backend))
    if s.serial_number:
        found = [d for d in found if _serial(d) == s.serial_number]
    if not found:
        raise ConnectionError(f"no {wanted} device: plugged in and switched on? `lsusb` lists what is there")
    if len(found) > 1:
        raise ConnectionError(f"{len(found)} devices are {wanted}: set printers.NAME.serial_number")
    return found[0]


def _serial(device: usb.core.Device) -> str | None:
    try:
        return device.serial_number
    except (usb.core.USBError, ValueError) as e:  # not allowed to open it, or it has none
        log.debug("USB %s: no serial number read: %s", device.address, e)
        return None


class UsbPrinter(escpos_printer.Usb):
    """python-escpos's Usb on the endpoints of the device's descriptors (or the config), giving the
    kernel driver it detached back on close."""

    def __init__(self, s: PrinterSettings, backend: Any = None) -> None:
        super().__init__(s.vendor_id, s.product_id, timeout=int(s.timeout * 1000), profile=s.profile)
        self.settings = s
        self.backend = backend
        self.endpoints: Endpoints | None = None
        self.cancelled = False  # set on stop: the write in progress ends at its next chunk
        self._detached: list[int] = []

    def open(self, raise_not_found: bool = True) -> None:
        if self._device:
            self.close()
        device = find_printer(self.settings, self.backend)
        self.endpoints = eps = endpoints_of(device, self.settings.out_ep, self.settings.in_ep)
        self.out_ep, self.in_ep = eps.out_ep, eps.in_ep
        try:
            # usblp holds the printer interface: python-escpos detaches interface 0 only, which
            # is the wrong one on a device whose printer interface comes later.
            if device.is_kernel_driver_active(eps.interface):
                device.detach_kernel_driver(eps.interface)
                self._detached.append(eps.interface)
        except NotImplementedError:  # a pyusb backend without kernel drivers
            pass
        self.device = device
        try:
            device.set_configuration()
            device.reset()
        except usb.core.USBError as e:  # as python-escpos: a configured device may refuse it
            log.debug("USB printer set_configuration/reset: %s", e)
        log.debug("USB printer %04x:%04x: %s", self.settings.vendor_id, self.settings.product_id, eps.describe())

    def _raw(self, msg: bytes) -> None:
        assert self.device
        for start in range(0, len(msg), WRITE_CHUNK):
            if self.cancelled:
                raise ConnectionError("edged is stopping: the write was cut short")
            self.device.write(self.out_ep, msg[start:start + WRITE_CHUNK], self.timeout)

    def cancel_write(self) -> None:
        self.cancelled = True

    def close(self) -> None:
        device = self._device
        super().close()
        for interface in self._detached:
            try:
                device.attach_kernel_driver(interface)  # /dev/usb/lpN comes back without a replug
            except Exception as e:  # unplugged meanwhile, or no driver wants it: nothing lost
                log.debug("USB printer: kernel driver not re-attached to interface %d: %s", interface, e)
        self._detached = []
