"""Log output: `<N>` syslog-priority lines for the journal, readable lines on a terminal."""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping

from .printable import printable, printable_lines

_PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}


class EscapingFormatter(logging.Formatter):
    """Control characters in a message (a client's name, say) are written escaped, never raw; so
    are newlines, unless the call says the message has lines of its own (extra={"multiline": True})."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        multiline = getattr(record, "multiline", False)
        record.message = printable_lines(record.message) if multiline else printable(record.message)
        return super().formatMessage(record)


class JournalFormatter(EscapingFormatter):
    """One line per message (journald splits on newlines), priority as a `<N>` prefix."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).replace("\n", " | ")
        prio = _PRIORITY.get(record.levelno, 6 if record.levelno < logging.WARNING else 3)
        return f"<{prio}>{text}"


def stderr_is_journal(env: Mapping[str, str] = os.environ) -> bool:
    """JOURNAL_STREAM names the device:inode of the journal stream; check it is our stderr."""
    value = env.get("JOURNAL_STREAM", "")
    if not value:
        return False
    try:
        st = os.fstat(sys.stderr.fileno())
        dev, ino = (int(x) for x in value.split(":"))
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def _quiet_escpos(record: logging.LogRecord) -> bool:
    # python-escpos logs "printer enabled" chatter on the root logger at INFO.
    return not (record.name == "root" and record.levelno < logging.WARNING and "escpos" in record.pathname)


def setup(level: str = "info", env: Mapping[str, str] = os.environ) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if stderr_is_journal(env):
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(EscapingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(_quiet_escpos)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
