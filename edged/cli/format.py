"""How the CLI and the demo show values: local clock times, journal ranges, counts, events.

One place, so `edged events`, `edged status` and `edged demo` say a time, a range or an
event the same way. The socket carries unix times and lists (docs/PROTOCOL.md); people
read clock times and words, never an epoch float or a Python repr. Scripts use --json.
"""
from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from ..printable import printable

# Event and status fields holding unix times (docs/PROTOCOL.md, "Device events").
TIME_KEYS = frozenset({"at", "since", "created", "updated", "opened_at", "appended_at", "due_at",
                       "acked_at", "last_ack", "first_at", "exported_at"})
# ... and durations in seconds.
DURATION_KEYS = frozenset({"within", "late_by", "lag_age", "open_for", "open_alert_after", "uptime"})
# Control characters a barcode can carry: GS separates GS1 fields.
_CONTROL = {0x1D: "<GS>", 0x1E: "<RS>", 0x04: "<EOT>", 0x09: "<TAB>", 0x0A: "<LF>", 0x0D: "<CR>"}


def clock(t: float, now: float | None = None) -> str:
    """14:03:22 on the day it is now; 2026-12-03 14:03:22 on any other day, where the date matters."""
    here = time.localtime(t)
    today = time.localtime(time.time() if now is None else now)
    same_day = (here.tm_year, here.tm_yday) == (today.tm_year, today.tm_yday)
    return time.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S", here)


def when(t: float) -> str:
    """Date and local time, for what is read days later (logs, the sync log)."""
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def seq_range(first: int, last: int) -> str:
    """A journal range: "empty" (a new journal reports first 1, last 0) or "1..12"."""
    return "empty" if last < first else f"{first}..{last}"


def plural(n: int, noun: str, nouns: str | None = None) -> str:
    """"1 day", "2 days", "0 days"."""
    return f"{n} {noun if n == 1 else nouns or noun + 's'}"


def seconds(v: float) -> str:
    """A duration: "2s", "1.0s", "75s"; tenths only where they say something."""
    return f"{v:.0f}s" if v >= 10 or float(v).is_integer() else f"{v:.1f}s"


def text(s: str) -> str:
    """Scanned or typed text as it reads, control characters named (<GS> between GS1 fields)."""
    return "".join(_CONTROL.get(ord(c), f"<0x{ord(c):02x}>") if ord(c) < 0x20 or ord(c) == 0x7F
                   else c if c.isprintable() else printable(c)  # C1 controls, bidi overrides: escaped
                   for c in s)


def gs1(fields: dict[str, str]) -> str:
    """GS1 application identifiers as printed under a barcode: (01)09506000134352 (17)211231."""
    return " ".join(f"({ai}){value}" for ai, value in fields.items())


def value(key: str, v: Any) -> str:
    """One field of an event or an answer, readable."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if key in TIME_KEYS and isinstance(v, (int, float)):
        return clock(v)
    if key in DURATION_KEYS and isinstance(v, (int, float)):
        return seconds(v)
    if key == "gs1" and isinstance(v, dict):
        return gs1(v)
    if isinstance(v, bytes):
        return v.hex()[:16] + "..."
    if isinstance(v, (list, tuple)):
        return ",".join(value(key, x) for x in v) or "none"
    if isinstance(v, dict):
        return ",".join(f"{printable(k)}:{value(k, x)}" for k, x in v.items()) or "none"
    if isinstance(v, float):
        return f"{v:g}"
    return text(v) if isinstance(v, str) else str(v)


def fields(ev: dict[str, Any], skip: Iterable[str] = ()) -> str:
    """key=value pairs, two spaces apart; empty values are left out."""
    left_out = {"event", *skip}
    shown = ((k, v) for k, v in ev.items() if k not in left_out and v not in (None, ""))
    return "  ".join(f"{printable(k)}={value(k, v)}" for k, v in shown)


def event(ev: dict[str, Any], skip: Iterable[str] = ()) -> str:
    """An event as `edged events` prints it: its name, then its fields."""
    return f"{printable(ev['event']):<18} {fields(ev, skip)}".rstrip()


def table(rows: Sequence[Sequence[str]], indent: str = "") -> list[str]:
    """Columns aligned to their widest cell; no trailing spaces."""
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(max(map(len, rows)))]
    return [(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths))).rstrip() for r in rows]


def key_values(pairs: Iterable[tuple[str, str]], indent: str = "  ") -> list[str]:
    """`key: value` lines, the values aligned."""
    pairs = list(pairs)
    width = max((len(k) for k, _ in pairs), default=0) + 1
    return [f"{indent}{(k + ':').ljust(width)} {v}".rstrip() for k, v in pairs]
