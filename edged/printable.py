"""Text from clients, made safe to show on a terminal or in a log line.

Client names, consumer names, kinds, job ids and scanned codes come from
whoever can reach the socket (or a barcode). Written raw, an escape sequence
in one moves the cursor, recolours or retitles the technician's terminal,
and a newline fakes a line of `edged status` or of the log.
"""
from __future__ import annotations


def printable(text: object) -> str:
    """`text` with every non-printing character (C0 and C1 controls, DEL, bidi overrides, line
    separators...) written as its Python escape: ESC as \\x1b, a newline as \\n, U+202E as \\u202e."""
    s = text if isinstance(text, str) else str(text)
    if s.isprintable():  # nearly always: one C-level scan, no copy
        return s
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in s)


def printable_lines(text: str) -> str:
    """The same, keeping the newlines a multi-line message means to have."""
    return "\n".join(printable(line) for line in text.split("\n"))
