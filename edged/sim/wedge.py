"""A keyboard-wedge scanner without hardware: packed `input_event` structs in a pipe
behind an evdev.InputDevice. Used by `edged bench scan` and the tests.

There is no /dev/uinput on these machines (FACTS.md). evdev's read calls work
on any fd that yields input_event structs, so the device object is given a
pipe's read end; only the ioctls of opening (name, capabilities, grab) are skipped.
"""
from __future__ import annotations

import os

import evdev
from evdev import ecodes

from ..devices.scanner.fixture import pack


def pipe_device(name: str = "fake scanner") -> tuple[evdev.InputDevice, int]:
    """(an InputDevice reading a pipe, the pipe's write end)."""
    r, w = os.pipe()
    os.set_blocking(r, False)
    dev = object.__new__(evdev.InputDevice)
    dev.fd, dev.path, dev.name = r, f"pipe:{name}", name
    return dev, w


def packed(events: list[tuple[float, int, int, int]]) -> bytes:
    """(time, type, code, value) tuples as the kernel writes them, each key followed by SYN."""
    return pack(raw(events))


def raw(events: list[tuple[float, int, int, int]]) -> list[tuple[int, int, int, int, int]]:
    """(time, type, code, value) tuples as raw input_event fields, each followed by its SYN_REPORT."""
    out = []
    for t, etype, code, value in events:
        sec, usec = int(t), int(round((t - int(t)) * 1e6))
        out += [(sec, usec, etype, code, value), (sec, usec, ecodes.EV_SYN, ecodes.SYN_REPORT, 0)]
    return out
