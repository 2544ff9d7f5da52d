"""Raw ESC/POS from clients: does it kick the cash drawer, and the same bytes without the kicks.

A drawer opens on ESC p m t1 t2 (executed in turn, like printing) and on
DLE DC4 1 m t (real-time: executed on arrival). Looking for those bytes alone
would refuse logos whose pixels happen to spell ESC p, so the bytes are split
into commands by the tokenizer the emulator executes (sim/escpos_codec.py),
which knows where image data starts and ends. What it cannot place is refused
rather than guessed at, so the parse can be trusted where it matters:

- A command edged does not know is refused: its length is unknown, so the
  bytes after it could be data or commands.
- ESC p bytes anywhere but inside image data count as a kick, also inside
  another command's arguments or a barcode's data: a printer that finds a
  value out of range ends that command and runs the rest as commands.
- DLE DC4 1 counts as a kick anywhere, image data included: a printer looks
  for real-time commands in every byte it receives (Epson's DLE DC4 notes).
- Commands that make the printer send bytes back (DLE EOT, DLE ENQ, GS r,
  GS I, GS a, ...) are refused: edged reads that channel to know a job is on
  paper (link.py), and a second GS r answer would confirm a job early.
- So are the commands whose effect outlives the job in ways edged cannot see:
  GS ^ (runs a macro defined earlier), ESC = (can switch the printer off for
  every later job), DLE DC4 other than the drawer pulse (power off, clear the
  buffer), and GS ( functions other than graphics (L) and 2D codes (k).
"""
from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from ...sim.escpos_codec import DLE, FIXED, Command, next_command

T = TypeVar("T")
KICK_NAMES = ("ESC p", "DLE DC4")
OFF_LOOP = 64 * 1024  # bytes above which a scan runs in a thread: a hostile megabyte takes ~0.5 s
_HIDDEN_ESC_P = re.compile(rb"\x1bp")
_HIDDEN_DLE_DC4 = re.compile(rb"\x10\x14\x01")
_TALKS_BACK = {"DLE EOT", "DLE ENQ", "GS r", "GS I", "GS a"}
_GS_PAREN_OK = {"GS ( L", "GS ( k"}
_ESC_STAR_MODES = (0, 1, 32, 33)
_RASTER_MODES = (0, 1, 2, 3, 48, 49, 50, 51)
_CUT_MODES = (0, 1, 48, 49, 65, 66, 97, 98, 103, 104)


@dataclass(frozen=True)
class Scan:
    """What a raw job holds: its drawer kicks, and whether edged understood all of it."""

    kicks: tuple[tuple[int, int], ...] = ()  # (start, end) of each kick that is a command of its own
    hidden: tuple[int, ...] = ()  # offsets of kick bytes elsewhere (inside another command, or unparsed)
    problem: str = ""  # why edged cannot check these bytes ("" when it can)

    @property
    def kicks_drawer(self) -> bool:
        return bool(self.kicks or self.hidden)

    def first_kick(self) -> int:
        return min([start for start, _ in self.kicks] + list(self.hidden))


def _refused(cmd: Command, raw: bytes, pos: int) -> str:
    """Why edged will not pass this command on from a client ("" when it will)."""
    name = cmd.name
    if name.startswith("unknown"):
        shown = " ".join(f"0x{b:02x}" for b in raw[pos:pos + 2])
        return f"{shown} is not a command edged knows, so it cannot tell whether the bytes after it are data " \
               "or commands"
    if name in _TALKS_BACK or name.startswith("GS ( H"):
        return f"{name} makes the printer send bytes back; edged reads that channel itself"
    if name == "GS ^":
        return "GS ^ runs a macro stored in the printer"
    if name == "ESC =":
        return "ESC = can switch the printer off for every later job"
    if name == "DLE DC4" and cmd.args[0] != 1:
        return f"DLE DC4 {cmd.args[0]} (power off, clear the buffer, ...) acts on the printer, not on this job"
    if name.startswith("GS (") and name not in _GS_PAREN_OK:
        return f"{name} is not graphics (GS ( L) or a 2D code (GS ( k)"
    if name == "ESC *" and cmd.args[0] not in _ESC_STAR_MODES:
        return f"ESC * with mode {cmd.args[0]} has no defined length"
    if name == "GS v 0" and raw[pos + 3] not in _RASTER_MODES:
        return f"GS v 0 with mode {raw[pos + 3]} is not defined"
    if name == "GS k" and not (cmd.args[0] <= 6 or 65 <= cmd.args[0] <= 79):
        return f"GS k with barcode system {cmd.args[0]} has no defined length"
    if name == "GS V" and cmd.args[0] not in _CUT_MODES:
        return f"GS V with mode {cmd.args[0]} has no defined length"
    return ""


def _image_data(cmd: Command, end: int) -> tuple[int, int] | None:
    """The bytes a printer surely takes as pixels: (start, end), or None."""
    if cmd.name in ("ESC *", "GS v 0"):
        return end - len(cmd.data), end
    if cmd.name == "GS ( L":
        # Only "store raster graphics" (m=48, fn=112) with one tone, and only when its declared
        # length matches its width and height: anything else is looked through for kicks.
        d = cmd.data
        if len(d) >= 10 and d[0] == 48 and d[1] == 112 and d[2] == 48:
            width, height = d[6] + 256 * d[7], d[8] + 256 * d[9]
            if len(d) == 10 + (width + 7) // 8 * height:
                return end - len(d) + 10, end
    return None


def scan(raw: bytes) -> Scan:
    """Parse raw ESC/POS; every drawer kick in it, and the first thing edged cannot check."""
    kicks: list[tuple[int, int]] = []
    images: list[tuple[int, int]] = []
    problem = ""
    pos = 0
    while pos < len(raw):
        plain = _PLAIN.match(raw, pos)
        if plain:
            pos = plain.end()
            continue
        found = next_command(raw, pos)
        if found is None:
            problem = f"byte {pos}: the data ends inside a command"
            break
        cmd, end = found
        why = _refused(cmd, raw, pos)
        if why:
            problem = f"byte {pos}: {why}"
            break
        if cmd.name in KICK_NAMES:
            kicks.append((pos, end))
        image = _image_data(cmd, end)
        if image:
            images.append(image)
        pos = end
    if problem:  # nothing is known about the bytes: every kick sequence in them counts
        kicks, images = [], []
    starts = {start for start, _ in kicks}
    hidden = {m.start() for m in _HIDDEN_DLE_DC4.finditer(raw)} - starts
    outside, last = [], 0
    for start, stop in images:
        outside.append((last, start))
        last = stop
    outside.append((last, len(raw)))
    for start, stop in outside:
        hidden |= {m.start() for m in _HIDDEN_ESC_P.finditer(raw, start, stop)} - starts
    return Scan(tuple(kicks), tuple(sorted(hidden)), problem)


def _plain_run() -> re.Pattern[bytes]:
    """Runs of text and of fixed-length commands that are neither kicks nor refused, matched in C:
    a megabyte of them would take the tokenizer a second of the event loop."""
    singles = bytes(b for b in range(0x20) if b not in (DLE,) + tuple(p for p, _ in FIXED.values()))
    alternatives = [rb"[\x20-\xff]+", b"[" + re.escape(singles) + b"]", rb"\x10(?=[^\x04\x05\x14])",
                    rb"\x1dV[\x00\x01\x30\x31]", rb"\x1dV[\x41\x42\x61\x62\x67\x68]."]
    for name, (prefix, table) in FIXED.items():
        for char, args in table.items():
            if not _refused(Command(f"{name} {char}", (1,) * args), b"", 0) and f"{name} {char}" not in KICK_NAMES:
                alternatives.append(re.escape(bytes([prefix, ord(char)])) + (b".{%d}" % args if args else b""))
    return re.compile(b"(?:" + b"|".join(alternatives) + b")+", re.DOTALL)


_PLAIN = _plain_run()


def without_kicks(raw: bytes) -> bytes:
    """The same bytes with every drawer kick command taken out (for a reprint).

    ValueError when a kick cannot be taken out: it hides inside another command,
    or edged cannot parse the bytes (then only bytes without any kick pass)."""
    found = scan(raw)
    if found.hidden:
        where = found.problem or f"byte {found.hidden[0]}: drawer kick bytes inside another command"
        raise ValueError(f"the raw bytes may kick the drawer and edged cannot take that out ({where})")
    out, last = bytearray(), 0
    for start, end in found.kicks:
        out += raw[last:start]
        last = end
    out += raw[last:]
    stripped = bytes(out)
    if scan(stripped).kicks_drawer:  # taking a command out joined bytes into a new one
        raise ValueError("the raw bytes may kick the drawer and edged cannot take that out")
    return stripped


async def off_loop(check: Callable[[bytes], T], raw: bytes) -> T:
    """`scan` or `without_kicks`, in a thread when the bytes are many, so the loop keeps serving."""
    if len(raw) <= OFF_LOOP:
        return check(raw)
    return await asyncio.to_thread(check, raw)
