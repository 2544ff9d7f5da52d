"""Replay udev events into pyudev monitors: as root, a message in udevd's own format
multicast on the uevent netlink socket, which every `source="udev"` monitor receives
exactly as it would from udevd (there is no udevd on the test machines, FACTS.md)."""
from __future__ import annotations

import itertools
import os
import socket
import struct

import pytest

NETLINK_KOBJECT_UEVENT = 15
UDEV_GROUP = 2
# libudev's monitor header: "libudev\0", magic, header size, properties offset/length,
# subsystem and devtype hashes, tag bloom filter (two words).
HEADER = struct.Struct("8sIIIIIIII")
_seq = itertools.count(90_000)


def _murmur2(data: bytes) -> int:
    """MurmurHash2, seed 0: libudev's subsystem hash, which monitors filter on in the kernel (BPF)."""
    m, h, i = 0x5BD1E995, len(data), 0
    while len(data) - i >= 4:
        k = (struct.unpack_from("<I", data, i)[0] * m) & 0xFFFFFFFF
        k = ((k ^ (k >> 24)) * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
        i += 4
    rest = data[i:]
    for shift in range(len(rest) - 1, 0, -1):
        h ^= rest[shift] << (8 * shift)
    if rest:
        h = ((h ^ rest[0]) * m) & 0xFFFFFFFF
    h = ((h ^ (h >> 13)) * m) & 0xFFFFFFFF
    return h ^ (h >> 15)


def input_event(action: str, number: int, vendor: str = "05e0", product: str = "1200", serial: str = "S123",
                links: tuple[str, ...] = ()) -> dict[str, str]:
    """The properties udevd sends for a USB keyboard-wedge scanner's event node."""
    return {"ACTION": action, "DEVPATH": f"/devices/pci0000:00/usb1/1-1/1-1:1.0/input/input{number}/event{number}",
            "SUBSYSTEM": "input", "DEVNAME": f"/dev/input/event{number}", "MAJOR": "13", "MINOR": str(64 + number),
            "SEQNUM": str(next(_seq)), "USEC_INITIALIZED": "1", "ID_INPUT": "1", "ID_INPUT_KEY": "1",
            "ID_INPUT_KEYBOARD": "1", "ID_BUS": "usb", "ID_VENDOR_ID": vendor, "ID_MODEL_ID": product,
            "ID_SERIAL": f"Scanner_{serial}", "ID_SERIAL_SHORT": serial, "DEVLINKS": " ".join(links)}


def send(props: dict[str, str]) -> None:
    body = b"".join(f"{k}={v}".encode() + b"\0" for k, v in props.items())
    header = HEADER.pack(b"libudev\0", socket.htonl(0xFEEDCAFE), HEADER.size, HEADER.size, len(body),
                         socket.htonl(_murmur2(props["SUBSYSTEM"].encode())), 0, 0, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_KOBJECT_UEVENT) as s:
        s.bind((0, 0))
        s.sendto(header + body, (0, UDEV_GROUP))


def require_netlink() -> None:
    """Skip (saying why) where uevents cannot be multicast: not root, or no netlink here."""
    try:
        send({"ACTION": "change", "SUBSYSTEM": "edged-test", "DEVPATH": "/devices/virtual/edged-test"})
    except OSError as e:
        who = "as root" if os.geteuid() == 0 else f"as uid {os.geteuid()}: sending needs root (CI runs as root)"
        pytest.skip(f"sending a uevent to netlink group {UDEV_GROUP} (NETLINK_KOBJECT_UEVENT) failed {who}: {e}")
