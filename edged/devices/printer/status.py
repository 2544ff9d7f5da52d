"""ESC/POS real-time status (DLE EOT n, n = 1..4): reply bytes <-> a verdict.

Pure codec, used by the printer device (decode) and the emulator (encode).
Silence or a byte outside the 0xx1xx10 pattern gives `unknown`, never `ok`:
python-escpos reads silence as "paper adequate", which a till must not trust.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

QUERIES = (1, 2, 3, 4)
_FIXED_MASK, _FIXED_BITS = 0x93, 0x12  # bits 0,1,4,7 are fixed in every reply

# (query, bit mask, reason) -- bit meanings from the ESC/POS reference (FACTS.md)
_BITS = (
    (1, 0x08, "offline"),
    (2, 0x04, "cover_open"),
    (2, 0x20, "paper_out"),
    (2, 0x40, "error"),
    (3, 0x08, "cutter_error"),
    (3, 0x20, "unrecoverable_error"),
    (3, 0x40, "recoverable_error"),
    (4, 0x0C, "paper_near_end"),
    (4, 0x60, "paper_out"),
)
_WARNINGS = {"paper_near_end"}
DRAWER_PIN3 = (1, 0x04)


def query(n: int) -> bytes:
    """The DLE EOT request for status n."""
    return b"\x10\x04" + bytes([n])


# GS r 1 (transmit paper sensor status) is queued behind print data: its answer
# arrives only once everything sent before it has been printed. That answer is
# edged's proof that a job is on paper. Its replies have bit 4 clear, DLE EOT
# replies have it set, so both can share one return channel.
CONFIRM = b"\x1dr\x01"


def is_confirmation(byte: int) -> bool:
    # Bits 0-3 report the paper sensors (0x03: roll near its end); 4 and 7 are fixed 0.
    return byte & 0x90 == 0x00


Verdict = Literal["ok", "warn", "error", "unknown"]


@dataclass(frozen=True)
class PrinterStatus:
    state: Verdict
    reasons: tuple[str, ...] = ()
    drawer_pin3: bool | None = None  # sensor level; whether high means open is per site
    raw: dict[int, int] = field(default_factory=dict, compare=False)

    @classmethod
    def unknown(cls, reason: str) -> PrinterStatus:
        return cls("unknown", (reason,))

    @classmethod
    def unreachable(cls) -> PrinterStatus:
        # We could not even reach the transport (unplugged, switched off, TCP refused):
        # the printer is offline as far as any job is concerned; `detail` says why.
        return cls("error", ("offline",))

    @property
    def printable(self) -> bool:
        """May a job be sent? An `unknown` printer is tried (a broken return channel
        must not stop the shop's receipts); its jobs then end `unknown`, not `done`."""
        return self.state != "error"

    def as_dict(self) -> dict:
        return {"state": self.state, "reasons": list(self.reasons), "drawer_pin3": self.drawer_pin3}


def valid_reply(byte: int) -> bool:
    return byte & _FIXED_MASK == _FIXED_BITS


def decode(replies: dict[int, bytes | None]) -> PrinterStatus:
    """Turn the replies to DLE EOT 1..4 into a verdict."""
    raw: dict[int, int] = {}
    for n in QUERIES:
        reply = replies.get(n)
        if not reply:
            return PrinterStatus("unknown", ("no_answer",), raw=raw)
        if len(reply) != 1 or not valid_reply(reply[0]):
            return PrinterStatus("unknown", ("malformed_reply",), raw=raw)
        raw[n] = reply[0]
    reasons: list[str] = []
    for n, mask, reason in _BITS:
        if raw[n] & mask and reason not in reasons:
            reasons.append(reason)
    if "paper_out" in reasons and "paper_near_end" in reasons:
        reasons.remove("paper_near_end")  # the near-end sensor trips too once the roll is out
    if "error" in reasons and len(reasons) > 1:
        reasons.remove("error")  # the generic bit only repeats a specific reason
    state: Verdict
    if any(r not in _WARNINGS for r in reasons):
        state = "error"
    elif reasons:
        state = "warn"
    else:
        state = "ok"
    pin, mask = DRAWER_PIN3
    return PrinterStatus(state, tuple(reasons), bool(raw[pin] & mask), raw)


def confirmation(*, paper_near_end: bool = False) -> bytes:
    """The emulator's answer to GS r 1 once the data before it is printed."""
    return bytes([0x03 if paper_near_end else 0x00])


def encode(
    *,
    offline: bool = False,
    cover_open: bool = False,
    paper_near_end: bool = False,
    paper_out: bool = False,
    cutter_error: bool = False,
    drawer_pin3: bool = False,
) -> dict[int, bytes]:
    """The reply bytes a printer in this condition sends (the emulator's side)."""
    # A real printer goes offline by itself with the cover open, paper out or a cutter error.
    offline = offline or cover_open or paper_out or cutter_error
    b1 = _FIXED_BITS | (0x04 if drawer_pin3 else 0) | (0x08 if offline else 0)
    b2 = _FIXED_BITS | (0x04 if cover_open else 0) | (0x20 if paper_out else 0)
    b2 |= 0x40 if cutter_error else 0
    b3 = _FIXED_BITS | (0x08 | 0x40 if cutter_error else 0)
    b4 = _FIXED_BITS | (0x0C if paper_near_end or paper_out else 0) | (0x60 if paper_out else 0)
    return {1: bytes([b1]), 2: bytes([b2]), 3: bytes([b3]), 4: bytes([b4])}
