"""ESC/POS byte stream -> commands, for the printer emulator.

A pure, incremental tokenizer: `next_command(buf, pos)` returns one command
and the position after it, or None when the buffer ends inside a command.
It knows the length of every command python-escpos sends, plus the common
ones other drivers send, so binary payloads (images, barcodes, 2D codes) are
skipped whole and never misread as commands.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

ESC, GS, FS, DLE = 0x1B, 0x1D, 0x1C, 0x10
# The emulator parses each connection's bytearray in place; tests hand in bytes.
Buf = bytes | bytearray
_TEXT = re.compile(rb"[\x20-\xff]+")


@dataclass(frozen=True)
class Command:
    name: str  # e.g. "text", "ESC E", "GS v 0", "DLE EOT"
    args: tuple[int, ...] = ()
    data: bytes = b""

    @property
    def realtime(self) -> bool:
        """Real-time commands are executed on arrival, even while the printer is offline."""
        return self.name.startswith("DLE")


# ESC / GS / FS commands of fixed length: second byte -> number of argument bytes.
_ESC_FIXED = {
    "@": 0, "2": 0, "L": 0, "S": 0, "i": 0, "m": 0, "<": 0,
    "t": 1, "?": 1, "E": 1, "-": 1, "!": 1, "a": 1, "M": 1, "{": 1, "r": 1, "d": 1, "J": 1, "e": 1,
    "3": 1, "A": 1, "+": 1, "G": 1, "V": 1, " ": 1, "U": 1, "R": 1, "%": 1, "=": 1, "K": 1,
    "B": 2, "$": 2, "\\": 2, "p": 3, "c": 2,
}
_GS_FIXED = {
    "!": 1, "B": 1, "b": 1, "h": 1, "w": 1, "f": 1, "H": 1, "|": 1, "a": 1, "r": 1, "I": 1,
    "L": 2, "W": 2, "P": 2, "$": 2, "\\": 2, "^": 3,
}
_FS_FIXED = {".": 0, "&": 0, "C": 1, "W": 1, "!": 1, "-": 1, "p": 2, "S": 2}
FIXED = {"ESC": (ESC, _ESC_FIXED), "GS": (GS, _GS_FIXED), "FS": (FS, _FS_FIXED)}  # for fast scanners


def next_command(buf: Buf, pos: int) -> tuple[Command, int] | None:
    """Parse the command starting at buf[pos]; None means "need more bytes"."""
    b = buf[pos]
    if b >= 0x20:
        end = _TEXT.match(buf, pos).end()  # type: ignore[union-attr]
        return Command("text", data=bytes(buf[pos:end])), end
    if b == ESC:
        return _prefixed(buf, pos, "ESC", _ESC_FIXED, _esc_variable)
    if b == GS:
        return _prefixed(buf, pos, "GS", _GS_FIXED, _gs_variable)
    if b == FS:
        return _prefixed(buf, pos, "FS", _FS_FIXED, None)
    if b == DLE:
        return _dle(buf, pos)
    names = {0x0A: "LF", 0x0D: "CR", 0x09: "HT", 0x0C: "FF", 0x07: "BEL", 0x00: "NUL"}
    return Command(names.get(b, f"CTL {b:02x}")), pos + 1


def _need(buf: Buf, end: int) -> bool:
    return end <= len(buf)


def _prefixed(buf: Buf, pos: int, prefix: str, fixed: dict, variable) -> tuple[Command, int] | None:
    if pos + 1 >= len(buf):
        return None
    c = chr(buf[pos + 1])
    if c in fixed:
        end = pos + 2 + fixed[c]
        if not _need(buf, end):
            return None
        return Command(f"{prefix} {c}", tuple(buf[pos + 2:end])), end
    if variable is not None:
        found = variable(buf, pos, c)
        if found is not False:
            return found
    return Command(f"unknown {prefix} {c!r}"), pos + 2


def _esc_variable(buf: Buf, pos: int, c: str):
    if c == "*":  # ESC * m nL nH d1..dk : column bit image
        if not _need(buf, pos + 5):
            return None
        m, nl, nh = buf[pos + 2], buf[pos + 3], buf[pos + 4]
        width = nl + 256 * nh
        end = pos + 5 + width * (3 if m in (32, 33) else 1)
        if not _need(buf, end):
            return None
        return Command("ESC *", (m, width, 24 if m in (32, 33) else 8), bytes(buf[pos + 5:end])), end
    if c == "D":  # ESC D n1..nk NUL : tab stops
        end = buf.find(b"\x00", pos + 2)
        if end < 0:
            return None
        return Command("ESC D", tuple(buf[pos + 2:end])), end + 1
    return False


def _gs_variable(buf: Buf, pos: int, c: str):
    if c == "V":  # GS V m [n]
        if not _need(buf, pos + 3):
            return None
        m = buf[pos + 2]
        end = pos + 4 if m in (65, 66, 97, 98, 103, 104) else pos + 3
        if not _need(buf, end):
            return None
        return Command("GS V", tuple(buf[pos + 2:end])), end
    if c == "k":  # GS k m d1..dk NUL  |  GS k m n d1..dn
        if not _need(buf, pos + 3):
            return None
        m = buf[pos + 2]
        if m <= 6:
            end = buf.find(b"\x00", pos + 3)
            if end < 0:
                return None
            return Command("GS k", (m,), bytes(buf[pos + 3:end])), end + 1
        if not _need(buf, pos + 4):
            return None
        end = pos + 4 + buf[pos + 3]
        if not _need(buf, end):
            return None
        return Command("GS k", (m,), bytes(buf[pos + 4:end])), end
    if c == "(":  # GS ( fn pL pH d1..dp
        if not _need(buf, pos + 5):
            return None
        fn = chr(buf[pos + 2])
        end = pos + 5 + buf[pos + 3] + 256 * buf[pos + 4]
        if not _need(buf, end):
            return None
        return Command(f"GS ( {fn}", (), bytes(buf[pos + 5:end])), end
    if c == "8":  # GS 8 L p1..p4 m fn ... : large graphics data
        if not _need(buf, pos + 3):
            return None
        if buf[pos + 2] != 0x4C:  # not L: a command of unknown length
            return False
        if not _need(buf, pos + 7):
            return None
        end = pos + 7 + int.from_bytes(buf[pos + 3:pos + 7], "little")
        if not _need(buf, end):
            return None
        return Command("GS ( L", (), bytes(buf[pos + 7:end])), end
    if c == "v":  # GS v 0 m xL xH yL yH d1..dk : raster bit image
        if not _need(buf, pos + 3):
            return None
        if buf[pos + 2] != 0x30:  # not GS v 0: a command of unknown length
            return False
        if not _need(buf, pos + 8):
            return None
        xbytes = buf[pos + 4] + 256 * buf[pos + 5]
        height = buf[pos + 6] + 256 * buf[pos + 7]
        end = pos + 8 + xbytes * height
        if not _need(buf, end):
            return None
        return Command("GS v 0", (xbytes * 8, height), bytes(buf[pos + 8:end])), end
    return False


def _dle(buf: Buf, pos: int) -> tuple[Command, int] | None:
    if pos + 1 >= len(buf):
        return None
    kind = buf[pos + 1]
    sizes = {0x04: 3, 0x05: 3, 0x14: 5}  # DLE EOT n, DLE ENQ n, DLE DC4 fn m t
    if kind not in sizes:
        return Command(f"CTL {DLE:02x}"), pos + 1
    end = pos + sizes[kind]
    if not _need(buf, end):
        return None
    name = {0x04: "DLE EOT", 0x05: "DLE ENQ", 0x14: "DLE DC4"}[kind]
    return Command(name, tuple(buf[pos + 2:end])), end
