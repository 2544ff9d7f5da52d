"""USB devices for pyusb made of raw descriptor bytes: a pyusb backend (usb.backend.IBackend) that
serves them as the Linux kernel does in sysfs `descriptors` (the device descriptor, then each
configuration with its interfaces, endpoints and class descriptors, in wire format), and answers
GET_DESCRIPTOR for strings. usb.core.find(backend=...) then builds pyusb's own Device,
Configuration, Interface and Endpoint objects from them: no USB hardware, no mocks.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import usb.backend
import usb.core

DEVICE, CONFIG, STRING, INTERFACE, ENDPOINT = 1, 2, 3, 4, 5
BULK, INTERRUPT = 2, 3


def device_desc(vendor: int, product: int, *, serial_index: int = 0, configs: int = 1) -> bytes:
    # bcdUSB 2.00, class per interface, bMaxPacketSize0 64, bcdDevice 1.00, iManufacturer 1, iProduct 2
    return struct.pack("<BBHBBBBHHHBBBB", 18, DEVICE, 0x0200, 0, 0, 0, 64, vendor, product, 0x0100,
                       1, 2, serial_index, configs)


def interface_desc(number: int, endpoints: int, cls: int, subclass: int = 0, protocol: int = 0, alt: int = 0) -> bytes:
    return struct.pack("<BBBBBBBBB", 9, INTERFACE, number, alt, endpoints, cls, subclass, protocol, 0)


def endpoint_desc(address: int, kind: int = BULK, max_packet: int = 512, interval: int = 0) -> bytes:
    return struct.pack("<BBBBHB", 7, ENDPOINT, address, kind, max_packet, interval)


def config_desc(*parts: bytes, value: int = 1) -> bytes:
    body = b"".join(parts)
    interfaces = len({p[2] for p in parts if p[1] == INTERFACE})
    return struct.pack("<BBHBBBBB", 9, CONFIG, 9 + len(body), interfaces, value, 0, 0xC0, 50) + body


@dataclass
class FakeDevice:
    """One device: its descriptor bytes and its strings (index -> text)."""

    descriptors: bytes
    strings: dict[int, str] = field(default_factory=dict)
    address: int = 1
    bound: set[int] = field(default_factory=set)  # interfaces a kernel driver (usblp) holds
    written: list[tuple[int, bytes]] = field(default_factory=list)  # (endpoint, data) of each bulk OUT
    replies: bytearray = field(default_factory=bytearray)  # what its bulk IN endpoint sends next


def _fields(names: str, values: tuple, **more: Any) -> SimpleNamespace:
    return SimpleNamespace(**dict(zip(names.split(), values)), **more)


class _Parsed:
    def __init__(self, raw: bytes) -> None:
        descs, pos = [], 0
        while pos < len(raw):
            length = raw[pos]
            assert length >= 2, f"descriptor of length {length} at {pos}"
            descs.append(raw[pos:pos + length])
            pos += length
        d = struct.unpack("<BBHBBBBHHHBBBB", descs[0])
        self.device = _fields("bLength bDescriptorType bcdUSB bDeviceClass bDeviceSubClass bDeviceProtocol "
                              "bMaxPacketSize0 idVendor idProduct bcdDevice iManufacturer iProduct "
                              "iSerialNumber bNumConfigurations", d)
        self.configs: list[tuple[SimpleNamespace, list[list[tuple[SimpleNamespace, list]]]]] = []
        for desc in descs[1:]:
            kind = desc[1]
            if kind == CONFIG:
                c = _fields("bLength bDescriptorType wTotalLength bNumInterfaces bConfigurationValue "
                            "iConfiguration bmAttributes bMaxPower", struct.unpack("<BBHBBBBB", desc),
                            extra_descriptors=[])
                self.configs.append((c, []))
            elif kind == INTERFACE:
                i = _fields("bLength bDescriptorType bInterfaceNumber bAlternateSetting bNumEndpoints "
                            "bInterfaceClass bInterfaceSubClass bInterfaceProtocol iInterface",
                            struct.unpack("<BBBBBBBBB", desc), extra_descriptors=[])
                interfaces = self.configs[-1][1]
                if i.bAlternateSetting == 0:
                    interfaces.append([])
                interfaces[-1].append((i, []))
            elif kind == ENDPOINT:
                e = _fields("bLength bDescriptorType bEndpointAddress bmAttributes wMaxPacketSize bInterval",
                            struct.unpack("<BBBBHB", desc), bRefresh=0, bSynchAddress=0, extra_descriptors=[])
                self.configs[-1][1][-1][-1][1].append(e)


class DescriptorBackend(usb.backend.IBackend):
    """pyusb's backend interface over FakeDevices (enumeration, descriptors, string requests)."""

    def __init__(self, *devices: FakeDevice) -> None:
        self.devices = list(devices)
        self._parsed = {id(d): _Parsed(d.descriptors) for d in devices}

    def enumerate_devices(self):
        return iter(self.devices)

    def get_device_descriptor(self, dev: FakeDevice):
        desc = self._parsed[id(dev)].device
        return SimpleNamespace(**vars(desc), bus=1, address=dev.address, port_number=None, port_numbers=None,
                               speed=None)

    def get_configuration_descriptor(self, dev: FakeDevice, config: int):
        return self._parsed[id(dev)].configs[config][0]

    def get_interface_descriptor(self, dev: FakeDevice, intf: int, alt: int, config: int):
        return self._parsed[id(dev)].configs[config][1][intf][alt][0]  # IndexError ends pyusb's alt loop

    def get_endpoint_descriptor(self, dev: FakeDevice, ep: int, intf: int, alt: int, config: int):
        return self._parsed[id(dev)].configs[config][1][intf][alt][1][ep]

    def open_device(self, dev: FakeDevice):
        return dev

    def close_device(self, dev_handle: FakeDevice) -> None:
        pass

    def get_configuration(self, dev_handle: FakeDevice) -> int:
        return self._parsed[id(dev_handle)].configs[0][0].bConfigurationValue

    def set_configuration(self, dev_handle: FakeDevice, config_value: int) -> None:
        pass

    def reset_device(self, dev_handle: FakeDevice) -> None:
        pass

    def claim_interface(self, dev_handle: FakeDevice, intf: int) -> None:
        if intf in dev_handle.bound:
            raise usb.core.USBError("Resource busy", errno=16)  # as libusb, while usblp holds it

    def release_interface(self, dev_handle: FakeDevice, intf: int) -> None:
        pass

    def is_kernel_driver_active(self, dev_handle: FakeDevice, intf: int) -> bool:
        return intf in dev_handle.bound

    def detach_kernel_driver(self, dev_handle: FakeDevice, intf: int) -> None:
        dev_handle.bound.discard(intf)

    def attach_kernel_driver(self, dev_handle: FakeDevice, intf: int) -> None:
        dev_handle.bound.add(intf)

    def bulk_write(self, dev_handle: FakeDevice, ep: int, intf: int, data, timeout: int) -> int:
        dev_handle.written.append((ep, bytes(data)))
        return len(data)

    def bulk_read(self, dev_handle: FakeDevice, ep: int, intf: int, buff, timeout: int) -> int:
        if not dev_handle.replies:
            raise usb.core.USBTimeoutError("Operation timed out", errno=110)
        n = min(len(buff), len(dev_handle.replies))
        buff[:n] = type(buff)(buff.typecode, dev_handle.replies[:n])
        del dev_handle.replies[:n]
        return n

    def ctrl_transfer(self, dev_handle: FakeDevice, bmRequestType, bRequest, wValue, wIndex, data, timeout):
        if bRequest != 0x06 or wValue >> 8 != STRING:
            raise usb.core.USBError("request not supported by this device", errno=32)
        index = wValue & 0xFF
        if index == 0:
            answer = struct.pack("<BBH", 4, STRING, 0x0409)  # the language ids: en-US
        elif index in dev_handle.strings:
            text = dev_handle.strings[index].encode("utf-16-le")
            answer = bytes([2 + len(text), STRING]) + text
        else:
            raise usb.core.USBError("no such string", errno=32)  # a stall, as a real device answers
        n = min(len(answer), len(data))
        data[:n] = type(data)(data.typecode, answer[:n])
        return n
