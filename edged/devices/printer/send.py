"""One print job on the wire: sent with GS r 1 behind it, then confirmed, or not.

Runs in the printer's worker thread, on its Link (link.py). A job is
`done` only on a well-formed confirmation: the status read before the job was
well-formed, nothing but status replies came before the confirmation byte,
and a status read right after it is well-formed again, with nothing else in
between. A device that echoes what it is sent, or garbles, or a serial line
that reads a 0x00 as its cable is pulled, cannot pass that: its jobs end
`unknown`, never `done`.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal

from . import status as st
from .link import EXCHANGE_MAX, Flooding, Link, PartlySent, Stopped

# What became of a job sent: printed, sent but not confirmed, or never sent (it can wait and go again).
Outcome = Literal["done", "unknown", "unsent"]
Sent = tuple[Outcome, str]  # and why, for the job's record

Report = Callable[[st.PrinterStatus], None]


def send_job(link: Link, data: bytes, report: Report) -> Sent:
    """Send one job and wait for the printer to confirm it.

    Returns (outcome, detail): `unsent` (nothing went out, or the connection
    failed before the job's last piece did: the job may be tried again),
    `done` (confirmed on paper; for a write-only device: written),
    or `unknown` (bytes went out, the printer never confirmed them)."""
    fresh = link.escpos is None  # a connection this job opens: nothing read on it yet
    if not link.ensure_open():
        report(st.PrinterStatus.unreachable())
        return "unsent", link.detail
    if link.can_read:
        try:
            link.drain()
            if fresh:
                # The spooler's reading was on a connection since closed (seen on real USB: a
                # printer unplugged and back): one on this one. Not well-formed: the job goes all
                # the same (a broken return channel must not stop receipts) and ends `unknown`,
                # never `done`.
                status, confirmed = link.read_status()
                report(status)
                if status.state == "error":  # offline, paper out: it waits, unsent
                    return "unsent", f"the printer reports {', '.join(status.reasons)}"
                if confirmed:  # a confirmation nobody asked for here: owed to an old connection
                    link.replies_ok = False
        except Flooding as e:
            report(link.flooded(e))
            return "unsent", link.detail
        except Stopped:
            return "unsent", "edged is stopping"
        except Exception as e:  # a stale connection: nothing of this job went out yet
            report(link.lost(e))
            return "unsent", link.detail
    trusted = link.replies_ok  # the reading just before the job
    try:
        link.write(data + (st.CONFIRM if link.can_read else b""))
    except PartlySent as e:  # its end never went out: not printed whole, so it waits and goes again whole
        report(link.lost(e))
        return "unsent", link.detail
    except Exception as e:  # how much went out is not known
        report(link.lost(e))
        return "unknown", link.detail
    if not link.can_read:
        return "done", "written to a device that cannot confirm"
    try:
        return _await_confirmation(link, trusted, report)
    except Flooding as e:
        report(link.flooded(e))
        return "unknown", link.detail
    except Exception as e:
        if link.stopping:
            return "unknown", "edged stopped while the printer held the job"
        report(link.lost(e))
        return "unknown", link.detail


def _await_confirmation(link: Link, trusted: bool, report: Report) -> Sent:
    s = link.settings
    link.budget(EXCHANGE_MAX)
    deadline = time.monotonic() + s.confirm_timeout
    next_poll = time.monotonic() + s.status_interval
    while not link.stopping:
        byte = link.next_byte()
        if byte is not None:
            if st.is_confirmation(byte):
                return _confirmed(link, trusted)
            if not st.valid_reply(byte):
                return _garbled(link, f"0x{byte:02x} is neither a status reply nor a confirmation")
            if time.monotonic() < next_poll:
                continue  # a late status reply
        status, confirmed = link.read_status()
        next_poll = time.monotonic() + s.status_interval
        report(status)
        if confirmed:
            return _confirmed(link, trusted)
        if "malformed_reply" in status.reasons:
            return _garbled(link, "a malformed status reply")
        if status.state == "error":
            # The printer holds the job (paper out, cover open) and prints it once
            # fixed; it must not be sent again. Wait as long as that takes.
            deadline = time.monotonic() + s.confirm_timeout
        elif time.monotonic() > deadline:
            # Its confirmation may still come; on this connection it would pass
            # for the next job's. A new connection starts with nothing owed.
            link.close()
            return "unknown", f"no confirmation within {s.confirm_timeout:g} s"
    return "unknown", "edged stopped while the printer held the job"


def _confirmed(link: Link, trusted: bool) -> Sent:
    """A confirmation byte came: `done` only if the replies around it are well-formed."""
    if not trusted:
        return _garbled(link, "its status replies before the job were not well-formed")
    # Only a proof, not reported: listeners (the drawer) hear of the printer after the job is done.
    _, again = link.read_status()
    if again or not link.replies_ok or link.pending:
        return _garbled(link, "no clean status reply right after its confirmation")
    return "done", ""


def _garbled(link: Link, why: str) -> Sent:
    link.close()  # whatever it still sends must not pass for the next job's confirmation
    return "unknown", f"the printer's replies are not well-formed ({why}), so it did not confirm the job"
