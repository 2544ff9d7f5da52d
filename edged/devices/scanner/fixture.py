"""Recorded scanner input: raw `input_event` structs kept in a JSON fixture file.

`edged scan record` writes one; tests replay every fixture through a real
Scanner, and `edged scan layouts --file` reads one under each common layout.
The file keeps each event's raw fields (seconds, microseconds, type, code,
value, SYN and MSC included), the settings it was recorded under, and the
scans edged read from it then, which a bug report corrects if they are wrong.
"""
from __future__ import annotations

import json
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import evdev
from evdev import ecodes

from .assemble import Assembler

EVENT = struct.Struct("llHHi")  # struct input_event on 64-bit Linux: timeval, type, code, value
FORMAT = "edged-scan-fixture/1"
# Layouts scanners are commonly programmed for, in the order `edged scan layouts` lists them.
COMMON_LAYOUTS = ("us", "gb", "de", "ch", "at", "fr", "be", "es", "it", "pt", "br", "nl",
                  "no", "se", "dk", "fi", "is", "pl", "cz", "hu", "tr")

RawEvent = tuple[int, int, int, int, int]  # sec, usec, type, code, value


def unpack(data: bytes) -> list[RawEvent]:
    """Whole input_event structs from bytes (as read from an event node)."""
    return [EVENT.unpack_from(data, i) for i in range(0, len(data) - len(data) % EVENT.size, EVENT.size)]


def pack(events: Iterable[RawEvent]) -> bytes:
    return b"".join(EVENT.pack(*e) for e in events)


def read_scans(events: Iterable[RawEvent], layout: str = "us", variant: str = "", suffix: str = "enter",
               timeout: float = 0.05) -> list[str]:
    """The scans edged reads from these events under a layout (the Assembler a Scanner uses)."""
    asm = Assembler(layout, variant, suffix, timeout)
    scans = []
    for sec, usec, etype, code, value in events:
        if etype == ecodes.EV_SYN and code == ecodes.SYN_DROPPED:  # the reader fell behind: a torn scan
            asm.dropped(sec + usec / 1e6)
        elif etype == ecodes.EV_KEY:
            scans += [text for text, _ in asm.key(code, value, sec + usec / 1e6)]
    end = asm.idle(float("inf"))
    return scans + [end[0]] if end else scans


def save(path: Path, events: list[RawEvent], *, device: str, layout: str, variant: str = "",
         suffix: str = "enter", timeout: float = 0.05) -> list[str]:
    scans = read_scans(events, layout, variant, suffix, timeout)
    doc = {"format": FORMAT, "device": device, "layout": layout, "variant": variant, "suffix": suffix,
           "timeout": timeout, "scans": scans}
    # One event per line: diffs and bug reports stay readable.
    body = json.dumps(doc, ensure_ascii=False, indent=1)[:-2]
    lines = ",\n".join("  " + json.dumps(list(e)) for e in events)
    path.write_text(f'{body},\n "events": [\n{lines}\n ]\n}}\n', encoding="utf-8")
    return scans


def load(path: Path) -> dict[str, Any]:
    """A fixture; ValueError naming the file and what is wrong."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read a scan fixture: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f"{path}: not a scan fixture (no \"format\": \"{FORMAT}\")")
    events = doc.get("events")
    if not isinstance(events, list) or not all(
            isinstance(e, list) and len(e) == 5 and all(type(v) is int for v in e) for e in events):
        raise ValueError(f"{path}: \"events\" must be a list of [sec, usec, type, code, value] integers")
    for key, kind in (("layout", str), ("variant", str), ("suffix", str), ("timeout", (int, float)),
                      ("scans", list)):
        if not isinstance(doc.get(key), kind):
            raise ValueError(f"{path}: {key!r} missing or of the wrong type")
    doc["events"] = [tuple(e) for e in events]
    return doc


def under_layouts(events: list[RawEvent], suffix: str = "enter", timeout: float = 0.05,
                  layouts: Iterable[str] = COMMON_LAYOUTS) -> dict[str, str]:
    """What the same key events read as under each layout (scans joined by newlines)."""
    return {layout: "\n".join(read_scans(events, layout, "", suffix, timeout)) for layout in layouts}


def open_evdev(path: str) -> evdev.InputDevice:
    """The real transport: open the node and grab it, so scans never reach a console. Here, not
    in device.py, so `edged scan record` opens a scanner without importing the daemon's scanner
    (asyncio, pyserial, the GS1 parser: seconds on a slow till)."""
    dev = evdev.InputDevice(path)
    try:
        dev.grab()
    except OSError:
        dev.close()
        raise
    return dev
