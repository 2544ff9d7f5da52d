"""Key events of one scanner -> whole scans.

A scan ends at the configured suffix key (Enter, Tab) or when no key came for
`timeout` seconds (default 50 ms: scanners type a character every few ms,
people far slower), which also splits a scan from typing that follows it.
Times are the events' own timestamps, so a busy loop cannot split a scan.
Control characters other than GS (the GS1 separator) are not scan data.
"""
from __future__ import annotations

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

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def key(self, code: int, value: int, t: float) -> list[tuple[str, str]]:
        """One EV_KEY event at time t; the scans it completed, as (text, how it ended)."""
        done = []
        if self._buf and t - self._last > self.timeout:
            done.append(self._flush("timeout"))
        if code in self.suffix_keys:
            self.keys.key(code, value)  # keep the keyboard state right
            if value == PRESS and self._buf:
                done.append(self._flush("suffix"))
            return done
        text = "".join(c for c in self.keys.key(code, value) if c >= " " or c == GS)
        if text:
            self._buf.append(text)
            self._last = t
        return done

    def idle(self, t: float) -> tuple[str, str] | None:
        """Called when no key came for a while: the scan the timeout ended, if any."""
        if self._buf and t - self._last >= self.timeout:
            return self._flush("timeout")
        return None

    def _flush(self, how: str) -> tuple[str, str]:
        text, self._buf = "".join(self._buf), []
        return text, how
