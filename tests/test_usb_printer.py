"""Backend "usb": the endpoints come from the device's descriptors (or the config), read by pyusb
from descriptor bytes laid out as real devices send them (tests/usb_descriptors.py), and python-escpos
prints on them; the kernel driver it detached is given back on close."""
from __future__ import annotations

import pytest
import usb.core
from escpos import printer as escpos_printer

from edged import config
from edged.devices.printer.usb_printer import Endpoints, UsbPrinter, endpoints_of, find_printer, pick_endpoints
from usb_descriptors import (
    INTERRUPT,
    DescriptorBackend,
    FakeDevice,
    config_desc,
    device_desc,
    endpoint_desc,
    interface_desc,
)

# The Linux printer gadget (f_printer) on dummy_hcd, as lsusb shows it in the test VM
# (VM-USB.md): interface 7/1/2, its IN endpoint listed first, and IN 0x81 / OUT 0x02,
# where python-escpos assumes OUT 0x01 / IN 0x82.
GADGET = device_desc(0x0416, 0x5011, serial_index=3) + config_desc(
    interface_desc(0, 2, 7, 1, 2), endpoint_desc(0x81), endpoint_desc(0x02))
# An Epson TM-T20II: one printer interface, OUT 0x01 / IN 0x82.
EPSON = device_desc(0x04B8, 0x0E15, serial_index=3) + config_desc(
    interface_desc(0, 2, 7, 1, 2), endpoint_desc(0x01), endpoint_desc(0x82))
# A printer that is also a keyboard-like HID device (interface 0) with its print data on a
# vendor-specific interface 1.
VENDOR_ONLY = device_desc(0x1FC9, 0x2016) + config_desc(
    interface_desc(0, 1, 3), endpoint_desc(0x81, INTERRUPT, 8, 10),
    interface_desc(1, 2, 0xFF), endpoint_desc(0x83), endpoint_desc(0x04))
# Bulk endpoints on a vendor interface first, the printer-class interface after it.
PRINTER_SECOND = device_desc(0x0DD4, 0x0205) + config_desc(
    interface_desc(0, 2, 0xFF), endpoint_desc(0x01), endpoint_desc(0x81),
    interface_desc(1, 2, 7, 1, 2), endpoint_desc(0x82), endpoint_desc(0x03))
# A unidirectional printer (7/1/1): it cannot answer.
ONE_WAY = device_desc(0x0519, 0x0001) + config_desc(interface_desc(0, 1, 7, 1, 1), endpoint_desc(0x01))
HID_ONLY = device_desc(0x0C2E, 0x0B61) + config_desc(interface_desc(0, 1, 3), endpoint_desc(0x81, INTERRUPT, 8, 10))
STRINGS = {1: "Maker", 2: "Printer", 3: "EDGED0001"}


def _device(raw: bytes, **kw) -> tuple[usb.core.Device, FakeDevice]:
    fake = FakeDevice(raw, STRINGS, **kw)
    return usb.core.find(backend=DescriptorBackend(fake)), fake


@pytest.mark.parametrize("raw, expected", [
    (GADGET, (0, 0x02, 0x81)),
    (EPSON, (0, 0x01, 0x82)),
    (VENDOR_ONLY, (1, 0x04, 0x83)),
    (PRINTER_SECOND, (1, 0x03, 0x82)),
    (ONE_WAY, (0, 0x01, 0)),
], ids=["gadget", "epson", "vendor-interface", "printer-class-first", "unidirectional"])
def test_the_endpoints_come_from_the_descriptors(raw, expected):
    device, _ = _device(raw)
    assert pick_endpoints(device[0]) == expected
    number, out_ep, in_ep = expected
    assert endpoints_of(device) == Endpoints(number, out_ep, in_ep)


def test_a_device_without_bulk_endpoints_is_refused_saying_why():
    device, _ = _device(HID_ONLY)
    with pytest.raises(ValueError, match="no interface with a bulk OUT endpoint"):
        endpoints_of(device)


def test_endpoints_in_the_config_win_and_say_so():
    device, _ = _device(GADGET)
    both = endpoints_of(device, out_ep=0x02, in_ep=0x81)
    assert both.describe() == "OUT 0x02 IN 0x81 from config"
    one = endpoints_of(device, out_ep=0x02)
    assert (one.out_ep, one.in_ep) == (0x02, 0x81)
    assert one.describe() == "OUT 0x02 from config, IN 0x81 from the device's descriptors"
    assert endpoints_of(device).describe() == "OUT 0x02 IN 0x81 from the device's descriptors"
    assert endpoints_of(_device(ONE_WAY)[0]).describe() == \
        "OUT 0x01 no IN endpoint (no status) from the device's descriptors"


def _settings(vendor: int = 0x0416, product: int = 0x5011, **over) -> config.PrinterSettings:
    return config.PrinterSettings(backend="usb", vendor_id=vendor, product_id=product, timeout=0.5, **over)


def test_two_printers_of_one_model_are_told_apart_by_serial_number():
    a = FakeDevice(GADGET, STRINGS, address=1)
    b = FakeDevice(GADGET, {**STRINGS, 3: "EDGED0002"}, address=2)
    backend = DescriptorBackend(a, b)
    with pytest.raises(ConnectionError, match="2 devices are USB 0416:5011: set printers.NAME.serial_number"):
        find_printer(_settings(), backend)
    assert find_printer(_settings(serial_number="EDGED0002"), backend).address == 2
    with pytest.raises(ConnectionError, match="no USB 0416:5011 serial EDGED0003 device"):
        find_printer(_settings(serial_number="EDGED0003"), backend)


def test_python_escpos_alone_fails_on_the_gadget_and_edged_prints_on_it():
    """The VM's finding: python-escpos's default endpoints are not the gadget's."""
    fake = FakeDevice(GADGET, STRINGS, bound={0})
    backend = DescriptorBackend(fake)
    plain = escpos_printer.Usb(0x0416, 0x5011, usb_args={"backend": backend})
    plain.open()
    with pytest.raises(ValueError, match="Invalid endpoint address 0x1"):
        plain.textln("hello")
    plain.close()

    fake.bound = {0}  # usblp holds the printer interface again
    p = UsbPrinter(_settings(), backend)
    p.open()
    assert fake.bound == set()  # detached, so edged can claim it
    p.textln("hello")
    p.cut()
    assert {ep for ep, _ in fake.written} == {0x02}
    sent = b"".join(data for _, data in fake.written)
    assert sent == b"\x1bt\x00hello\n\x1bd\x06\x1dV\x00"  # code page, text, feed, GS V 0: the cut
    fake.replies += b"\x16"
    assert bytes(p.device.read(p.in_ep, 64, 100)) == b"\x16"
    p.close()
    assert fake.bound == {0}  # /dev/usb/lpN comes back without a replug


def test_a_driver_edged_did_not_detach_is_left_alone():
    fake = FakeDevice(EPSON, STRINGS)  # no kernel driver bound (usblp not loaded)
    p = UsbPrinter(_settings(0x04B8, 0x0E15), DescriptorBackend(fake))
    p.open()
    p._raw(b"x")
    p.close()
    assert fake.bound == set() and fake.written == [(0x01, b"x")]


def test_a_long_job_goes_out_in_chunks_each_with_its_own_timeout_and_a_stop_ends_it():
    fake = FakeDevice(GADGET, STRINGS)
    p = UsbPrinter(_settings(), DescriptorBackend(fake))
    p.open()
    job = bytes(range(256)) * 1000  # 256 kB, a long receipt with a large image
    p._raw(job)
    assert b"".join(data for _, data in fake.written) == job
    assert max(len(data) for _, data in fake.written) <= 4096 and {ep for ep, _ in fake.written} == {0x02}
    p.cancel_write()  # as edged stops
    with pytest.raises(ConnectionError, match="stopping"):
        p._raw(job)
    p.close()
