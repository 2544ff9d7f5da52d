"""Key events of one scanner -> whole scans.

A scan ends at the configured suffix key (Enter, Tab) or when no key came for
`timeout` seconds (default 50 ms: scanners type a character every few ms,
people far slower), which also splits a scan from typing that follows it.
Times are the events' own timestamps, so a busy loop cannot split a scan.
Control characters other than GS (the GS1 separator) are not scan data.

When the reader falls behind, the kernel empties the device's event buffer
(64 events for a keyboard: about ten characters) and says so with SYN_DROPPED.
The scan in progress is then torn: its start is gone, so neither what came
before the drop nor what follows up to its end (suffix or timeout) is a scan.
"""
from __future__ import annotations

from collections.abc import Iterable

from evdev import ecodes

from .keymap import PRESS, KeyDecoder

SUFFIX_KEYS = {"enter": {ecodes.KEY_ENTER, ecodes.KEY_KPENTER}, "tab": {ecodes.KEY_TAB}, "none": set()}
GS = "\x1d"


class Assembler:
    def __init__(self, layout: str = "us", variant: str = "", suffix: str = "enter", timeout: float = 0.05) -> None:
        self.keys = KeyDecoder(layout, variant)
        self.suffix_keys = SUFFIX_KEYS[suffix]
        self.timeout = timeout
        self._buf: list[str] = []
        self._last = 0.0
        self._torn = False  # since a SYN_DROPPED: keys are read, not kept, until the scan ends

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def key(self, code: int, value: int, t: float) -> list[tuple[str, str]]:
        """One EV_KEY event at time t; the scans it completed, as (text, how it ended)."""
        done = []
        if t - self._last > self.timeout:
            self._torn = False  # quiet long enough: a torn scan is over
            if self._buf:
                done.append(self._flush("timeout"))
        if code in self.suffix_keys:
            self.keys.key(code, value)  # keep the keyboard state right
            if value == PRESS:
                if self._buf:
                    done.append(self._flush("suffix"))
                self._torn = False
            return done
        text = "".join(c for c in self.keys.key(code, value) if c >= " " or c == GS)
        if text:
            if not self._torn:
                self._buf.append(text)
            self._last = t
        return done

    def dropped(self, t: float, pressed: Iterable[int] = ()) -> str:
        """The kernel dropped events at time t (SYN_DROPPED); `pressed`: the keys down now, if the
        device can say (EVIOCGKEY). Returns the torn scan's text thrown away."""
        lost, self._buf = "".join(self._buf), []
        self._torn, self._last = True, t
        self.keys.reset(pressed)
        return lost

    def idle(self, t: float) -> tuple[str, str] | None:
        """Called when no key came for a while: the scan the timeout ended, if any."""
        if t - self._last >= self.timeout:
            self._torn = False
        if self._buf and t - self._last >= self.timeout:
            return self._flush("timeout")
        return None

    def _flush(self, how: str) -> tuple[str, str]:
        text, self._buf = "".join(self._buf), []
        return text, how
