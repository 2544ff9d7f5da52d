"""Scanner devices: read on the event loop (non-blocking fds), one per configured scanner.

A keyboard-wedge scanner is an evdev device, grabbed so scans never reach the
console; its key events go through its own Assembler. A serial scanner sends
text ending in CR, LF or CR LF. Either way each scan becomes a `scanner.scan`
event. A read error such as ENODEV (unplugged) marks the scanner offline: it
is a removal, not a crash. A scan whose keys the kernel dropped because edged
read too slowly (SYN_DROPPED) is counted as torn and not delivered.
"""
from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal

import serial
from evdev import ecodes

from ...config import ScannerSettings
from ...relay.protocol import Publish
from .assemble import Assembler
from .decode import decode
from .fixture import RawEvent, open_evdev
from .identity import Identity
from .keymap import REPEAT

log = logging.getLogger("edged.scanner")
ScannerState = Literal["online", "offline"]  # what status and scanner.state events say
SERIAL_SUFFIX = {"cr": b"\r", "lf": b"\n", "crlf": b"\r\n"}
MAX_SCAN = 4096  # bytes without a suffix before a serial scanner's line is cut
RETRY = 2.0  # seconds between attempts to re-open a scanner that is gone


class Scanner:
    kind = "scanner"

    def __init__(self, name: str, settings: ScannerSettings, publish: Publish,
                 opener: Callable[[str], Any] | None = None) -> None:
        self.name = name
        self.settings = settings
        self.publish = publish  # returns how many watchers heard it
        self.opener = opener or (open_evdev if settings.backend == "evdev" else self._open_serial)
        self.identity = Identity(settings.device, settings.vendor, settings.product, settings.serial)
        self.node = ""  # the device node open now (what a udev `remove` names)
        self.kept: collections.deque[dict] = collections.deque(maxlen=settings.keep_unheard)  # 0: keeps none
        self.last_keys: list[RawEvent] = []  # the last scan's key events, for `scan_layouts`
        self._keys: list[RawEvent] = []
        self.state: ScannerState = "offline"
        self.detail, self.since = "not opened yet", time.time()
        self.scans = self.unheard = self.invalid = self.torn = 0
        self._dev: Any = None
        self._asm: Assembler | None = None
        self._buf = bytearray()
        self._idle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None

    def _open_serial(self, path: str) -> serial.Serial:
        return serial.Serial(path, self.settings.baudrate, timeout=0)

    async def start(self) -> None:
        self.open()
        self._task = asyncio.create_task(self._reopen_forever(), name=f"scanner-{self.name}-reopen")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.close("stopped")

    async def _reopen_forever(self) -> None:
        """An unplugged scanner comes back by itself once its device node is there again."""
        while True:
            await asyncio.sleep(RETRY)
            if self._dev is None:
                self.open()

    def healthy(self) -> bool:
        return True  # an unplugged scanner is a device state, not a sick daemon

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "backend": self.settings.backend,
                "state": "ok" if self.state == "online" else "error",
                "reasons": [] if self.state == "online" else ["offline"], "since": self.since, "detail": self.detail,
                "device": str(self.identity), "node": self.node, "scans": self.scans, "unheard": self.unheard,
                "invalid": self.invalid, "torn": self.torn, "kept": len(self.kept)}

    def summary(self) -> str:
        return f"scanner {self.name}: {self.state}"

    def open(self, node: str | None = None) -> bool:
        """Open the device (`node` when hot-plug found it); False, with the reason in `detail`, if it
        is not there."""
        if self._dev is not None:
            return True
        try:
            path = node or self.identity.resolve()
            self._dev = self.opener(path)
        except (OSError, serial.SerialException) as e:
            self._set("offline", e.strerror if isinstance(e, OSError) and e.strerror else str(e))
            return False
        self.node = os.path.realpath(path)
        self._keys.clear()
        s = self.settings
        self._asm = Assembler(s.layout, s.variant, s.suffix, s.timeout) if s.backend == "evdev" else None
        self._buf.clear()
        asyncio.get_running_loop().add_reader(self._fd(), self._readable)
        self._set("online", "")
        return True

    def close(self, why: str) -> None:
        if self._idle:
            self._idle.cancel()
        if self._dev is None:
            return
        asyncio.get_running_loop().remove_reader(self._fd())
        try:
            self._dev.close()
        except OSError:
            pass
        self._dev = None
        self.node = ""
        self._set("offline", why)

    def _fd(self) -> int:
        return self._dev.fd if self.settings.backend == "evdev" else self._dev.fileno()

    def _set(self, state: ScannerState, detail: str) -> None:
        if state != self.state:
            log.log(logging.INFO if state == "online" or detail == "stopped" else logging.WARNING,
                    "scanner %s: %s%s", self.name, state,
                    f" ({detail})" if detail else "")
            self.state, self.since = state, time.time()
            self.publish({"event": "scanner.state", "device": self.name, "state": state, "detail": detail})
        self.detail = detail

    def _readable(self) -> None:
        try:
            if self.settings.backend == "evdev":
                self._read_keys()
            else:
                self._read_serial()
        except (OSError, serial.SerialException) as e:  # ENODEV: unplugged; it comes back by hot-plug
            self.close(f"read failed: {e}")

    def _read_keys(self) -> None:
        assert self._asm is not None
        try:
            events = list(self._dev.read())
        except BlockingIOError:
            return
        if not events:  # readable with nothing to read: the other end is gone (EOF)
            self.close("device gone")
            return
        for ev in events:
            if ev.type == ecodes.EV_SYN and ev.code == ecodes.SYN_DROPPED:
                self._dropped(ev.timestamp())
            elif ev.type == ecodes.EV_KEY:
                for text, ended in self._asm.key(ev.code, ev.value, ev.timestamp()):
                    self._scan(text, ended)
                if ev.value != REPEAT:  # a stuck key repeats forever; they mean nothing
                    self._keys.append((ev.sec, ev.usec, ev.type, ev.code, ev.value))
        if self._asm.pending:  # no suffix yet: the timeout may end it
            if self._idle:
                self._idle.cancel()
            self._idle = asyncio.get_running_loop().call_later(self.settings.timeout * 1.5, self._timed_out)

    def _dropped(self, t: float) -> None:
        """edged read too slowly and the kernel emptied the device's buffer: the scan in progress
        lost keys, so it is thrown away whole rather than delivered as a wrong barcode."""
        assert self._asm is not None
        try:
            pressed = self._dev.active_keys()  # EVIOCGKEY: what is held down now
        except (OSError, SystemError):  # not an event node (python-evdev raises SystemError then)
            pressed = []
        lost = self._asm.dropped(t, pressed)
        self.torn += 1
        self._keys.clear()
        log.warning("scanner %s: the kernel dropped input events (edged read too slowly); the scan in "
                    "progress is torn and not delivered (had %r so far); scan it again", self.name, lost)

    def _timed_out(self) -> None:
        self._idle = None
        if self._asm is not None:
            done = self._asm.idle(float("inf"))
            if done:
                self._scan(*done)

    def _read_serial(self) -> None:
        data = self._dev.read(4096)
        if not data:
            return
        self._buf += data
        suffix = SERIAL_SUFFIX[self.settings.suffix]
        while (end := self._buf.find(suffix)) >= 0:
            line, self._buf = bytes(self._buf[:end]), self._buf[end + len(suffix):]
            if line:
                try:  # QR codes carry UTF-8; older scanners send Latin-1
                    text = line.decode("utf-8")
                except UnicodeDecodeError:
                    text = line.decode("latin-1")
                self._scan(text, "suffix")
        if len(self._buf) > MAX_SCAN:
            log.warning("scanner %s: %d bytes without a %s; dropped", self.name, len(self._buf), self.settings.suffix)
            self._buf.clear()

    def _scan(self, text: str, ended: str) -> None:
        fields = decode(text)
        self.scans += 1
        self.invalid += not fields["valid"]
        if self._keys:  # the key events up to the one that ended this scan
            self.last_keys, self._keys = self._keys, []
        event = {"event": "scanner.scan", "device": self.name, **fields, "ended": ended}
        if not self.publish(event):
            self.unheard += 1
            log.info("scanner %s: scan with nobody watching: %r", self.name, fields["code"])
            self.kept.append({**event, "kept": True, "at": time.time()})

    def take_kept(self) -> list[dict]:
        """Scans kept while nobody watched, oldest first; handed over once."""
        kept = list(self.kept)
        self.kept.clear()
        return kept
