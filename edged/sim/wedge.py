"""A keyboard-wedge scanner without hardware: packed `input_event` structs in a pipe
behind an evdev.InputDevice. Used by the simulated till, `edged bench scan` and the tests.

There is no /dev/uinput on these machines (FACTS.md). evdev's read calls work
on any fd that yields input_event structs, so the device object is given a
pipe's read end; only the ioctls of opening (name, capabilities, grab) are skipped.
"""
from __future__ import annotations

import functools
import os

import evdev
from evdev import ecodes
from xkbcommon import xkb

from ..devices.scanner.fixture import pack


def pipe_device(name: str = "fake scanner") -> tuple[evdev.InputDevice, int]:
    """(an InputDevice reading a pipe, the pipe's write end). Close it with dev.close(), never
    os.close(dev.fd): the InputDevice closes its fd number again when collected."""
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


def typing(text: str, layout: str, start: float = 1000.0, gap: float = 0.004, suffix: int | None = ecodes.KEY_ENTER,
           ) -> list[tuple[float, int, int, int]]:
    """The key events a scanner programmed for `layout` sends for `text` (found by asking
    libxkbcommon which key and modifiers produce each character); KeyError for a character
    the layout has no key for."""
    table = _reverse(layout)
    events, t = [], start
    for ch in text:
        code, mods = table[ch]
        for m in mods:
            events.append((t, ecodes.EV_KEY, m, 1))
        events += [(t, ecodes.EV_KEY, code, 1), (t + gap / 2, ecodes.EV_KEY, code, 0)]
        for m in reversed(mods):
            events.append((t + gap / 2, ecodes.EV_KEY, m, 0))
        t += gap
    if suffix is not None:
        events += [(t, ecodes.EV_KEY, suffix, 1), (t + gap / 2, ecodes.EV_KEY, suffix, 0)]
    return events


_MOD_SETS = ((), (ecodes.KEY_LEFTSHIFT,), (ecodes.KEY_RIGHTALT,), (ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTALT),
             (ecodes.KEY_LEFTCTRL,))


@functools.lru_cache(maxsize=8)
def _reverse(layout: str) -> dict[str, tuple[int, tuple[int, ...]]]:
    keymap = xkb.Context().keymap_new_from_names(layout=layout)
    # Scanners send GS as Ctrl+] (the key right of P), whatever else might produce 0x1D.
    table: dict[str, tuple[int, tuple[int, ...]]] = {"\x1d": (ecodes.KEY_RIGHTBRACE, (ecodes.KEY_LEFTCTRL,))}
    for mods in _MOD_SETS:
        for code in range(1, 120):
            state = keymap.state_new()
            for m in mods:
                state.update_key(m + 8, xkb.XKB_KEY_DOWN)
            ch = state.key_get_string(code + 8)
            if len(ch) == 1 and ch not in table and code not in (ecodes.KEY_ENTER, ecodes.KEY_TAB):
                table[ch] = (code, mods)
    return table
