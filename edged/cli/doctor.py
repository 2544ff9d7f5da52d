"""`edged doctor`: is this till set up to work? One line per check, for the technician.

It reads the config, the user database, device nodes, udev rules, the journal and
free space, and asks the running daemon for `status`; it changes nothing. Every
WARN or FAIL line says what to do next; the exit code is 1 when any check FAILs.
A simulated till (`edged run --simulate`, as `edged demo` runs it) has no user, device
nodes or udev rules of its own: those checks say N/A and why, rather than FAIL.
"""
from __future__ import annotations

import grp
import os
import pwd
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import config
from ..client import BlockingClient, ClientError
from ..config import Config
from ..journal.verify import verify
from ..printable import printable
from . import journal as cli_journal
from .format import plural

DAEMON_USER = "_edged"   # the daemon runs as this user; registry.DAEMON_GROUP is its group
CLIENT_GROUP = "edged"   # members may use the socket
PACKAGE_LIB = Path("/usr/lib/edged")  # where the Debian package puts edged's code (debian/rules)
LEVELS = ("OK", "WARN", "FAIL", "N/A")
MB, GB = 10**6, 10**9


@dataclass(frozen=True)
class Finding:
    level: str   # one of LEVELS; N/A: the check does not apply to this till
    check: str
    found: str
    hint: str = ""

    def __str__(self) -> str:
        line = f"{self.level:<4}  {self.check:<8}  {self.found}"
        return line + (f"\n{'':16}-> {self.hint}" if self.hint and self.level in ("WARN", "FAIL") else "")

    def as_dict(self) -> dict[str, str]:
        return {"level": self.level, "check": self.check, "found": self.found, "hint": self.hint}


def exit_code(findings: Iterable[Finding]) -> int:
    """0 when nothing FAILed: a WARN is worth a look, not a broken till; N/A is neither."""
    return 1 if any(f.level == "FAIL" for f in findings) else 0


def packaged(module_file: str | None = None) -> bool:
    """Does this edged run from the Debian package (not from a checkout or a virtualenv)?"""
    here = Path(module_file or __file__).resolve()
    return PACKAGE_LIB in here.parents


def package_hint(what: str, module_file: str | None = None) -> str:
    """How to get what the package brings: reinstalling it, or, from a checkout, installing it."""
    if packaged(module_file):
        return f"the edged package {what}: sudo apt install --reinstall edged"
    return (f"the edged package {what}; this edged runs from a checkout: install the package on the till "
            "(README, Install on a till), or try it here with edged demo")


def not_simulated(check: str, why: str) -> Finding:
    """A check that does not apply to a simulated till, saying why."""
    return Finding("N/A", check, f"not part of a simulated till: {why}")


def check_config(path: str | None) -> tuple[Finding, Config | None]:
    shown = path or str(config.DEFAULT_PATH)
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        return Finding("FAIL", "config", str(e), f"fix it, then: edged check-config {shown}"), None
    # Its printers and scanners are not counted here: a simulated till adds its own, and the
    # printers and scanners lines list what the daemon really runs.
    where = shown if path or config.DEFAULT_PATH.exists() else f"no file {shown}: all defaults"
    return Finding("OK", "config", f"{where} (till {cfg.till_id})"), cfg


def person() -> str | None:
    """Who runs doctor: the user behind sudo, else this user; None for root, who needs no group."""
    pw = None if os.getuid() == 0 else lookup(pwd.getpwuid, os.getuid())
    name = os.environ.get("SUDO_USER") or (pw.pw_name if pw else None)
    return None if name in (None, "root") else name


def check_users(who: str | None, daemon_user: str = DAEMON_USER, client_group: str = CLIENT_GROUP) -> Finding:
    group = lookup(grp.getgrnam, client_group)
    missing = [f"no {what} {name}" for what, name, found in
               (("user", daemon_user, lookup(pwd.getpwnam, daemon_user)), ("group", client_group, group))
               if found is None]
    if missing:
        return Finding("FAIL", "user", ", ".join(missing), package_hint("creates them"))
    found = f"user {daemon_user} and group {client_group} exist"
    if who is None:
        return Finding("OK", "user", found)
    pw = lookup(pwd.getpwnam, who)
    if pw is None or (who not in group.gr_mem and pw.pw_gid != group.gr_gid):
        return Finding("WARN", "user", f"{who} is not in group {client_group}, so may not use edged's socket",
                       f"sudo usermod -aG {client_group} {who}, then log in again")
    return Finding("OK", "user", f"{found}; {who} is a member of {client_group}")


def check_socket(path: str, who: str | None) -> tuple[Finding, dict[str, Any] | None]:
    try:
        with BlockingClient.connect(path, client="edged-doctor", timeout=30) as client:
            status = client.request("status", refresh=True)  # read the printers now, not the last poll
    except PermissionError as e:
        return Finding("FAIL", "socket", f"{path}: not allowed to connect ({e.strerror})",
                       f"sudo usermod -aG {CLIENT_GROUP} {who or '$USER'}, then log in again "
                       "(or: sudo edged doctor)"), None
    except (OSError, ClientError) as e:
        return Finding("FAIL", "socket", f"{path}: cannot connect ({getattr(e, 'strerror', None) or e})",
                       "systemctl status edged; journalctl -u edged -e"), None
    # Counted from the same status as the printers and scanners lines below list them.
    devices = ", ".join(plural(len(_devices(status, kind)), kind) for kind in ("printer", "scanner"))
    return Finding("OK", "socket", f"{path}: {status['server']} on till {status['till_id']}"
                                   f"{' (simulated)' if status.get('simulated') else ''}, up {status['uptime']:.0f} s; "
                                   f"{devices}"), status


def check_journal(state_dir: str) -> Finding:
    try:
        report = verify(cli_journal.journal_disk(state_dir))
    except PermissionError as e:
        return Finding("WARN", "journal", f"{e.filename or state_dir}: not readable by this user",
                       "run as root (sudo edged doctor)")
    except (FileNotFoundError, NotADirectoryError):
        return Finding("WARN", "journal", f"no journal in {state_dir}",
                       "edged makes it on first start; else daemon.state_dir (or --state-dir) is wrong")
    if report.ok:
        return Finding("OK", "journal", f"{cli_journal.describe(report)} in {state_dir}")
    more = f" (and {len(report.problems) - 1} more)" if len(report.problems) > 1 else ""
    return Finding("FAIL", "journal", report.problems[0] + more,
                   f"edged journal verify --state-dir {state_dir}   (every problem, in detail)")


# The first reason present picks the hint: a printer reports itself offline for most of these too.
_PRINTER_HINTS = (
    ("cover_open", "close the printer's cover"),
    ("paper_out", "load a new paper roll and close the cover"),
    ("cutter_error", "open the cover, clear the paper at the cutter, close it"),
    ("paper_near_end", "the paper roll is nearly used up: have a new one ready"),
    ("unrecoverable_error", "switch the printer off and on; if that does not help, it needs service"),
    ("recoverable_error", "switch the printer off and on"),
    ("error", "switch the printer off and on"),
    ("cannot_read_status", "a device file cannot report the printer's state: backend = \"usblp\" reads it "
                           "from the same /dev/usb/lp node (or use backend usb or serial)"),
    ("malformed_reply", "check the cable and printers.NAME.baudrate"),
    ("not_checked", "edged has not read it yet: run edged doctor again"),
)


def check_printers(status: dict[str, Any] | None) -> list[Finding]:
    out = []
    for name, d in _devices(status, "printer"):
        reasons = d.get("reasons") or []
        level = {"ok": "OK", "error": "FAIL"}.get(d["state"], "WARN")
        # A simulated till's printers are emulators on loopback, whatever the config says.
        backend = "simulated" if (status or {}).get("simulated") else d["backend"]
        found = f"{name} ({backend}): " + ("ready" if d["state"] == "ok" else
                                           f"{d['state']}: {', '.join(reasons) or '-'}")
        found += f" - {d['detail']}" if d.get("detail") else ""
        if d.get("endpoints") and backend == "usb":
            found += f"; endpoints {d['endpoints']}"
        connect = ("switched on? network cable in? is printers.NAME.host its address?" if d["backend"] == "network"
                   else "switched on? cable plugged in? ls /dev/edged/")
        hint = next((h for r, h in _PRINTER_HINTS if r in reasons), connect)
        if "cannot_read_status" in reasons and d["backend"] != "file":
            # usblp's node or a USB printer without a bulk IN endpoint: the printer itself cannot answer.
            hint = "this printer cannot answer (a one-way printer): jobs count as printed once sent"
        out.append(Finding(level, "printers", found, hint.replace("NAME", name)))
    return out or _none(status, "printers")


def check_scanners(status: dict[str, Any] | None) -> list[Finding]:
    out = []
    for name, d in _devices(status, "scanner"):
        if d["state"] == "ok":
            out.append(Finding("OK", "scanners", f"{name}: online ({d.get('node') or d.get('device')})"))
        else:
            why = d.get("detail") or ", ".join(d.get("reasons") or []) or d["state"]
            out.append(Finding("WARN", "scanners", f"{name}: offline: {why}",
                               "plugged in? ls /dev/edged/; if it is there, see the devices and udev lines"))
    return out or _none(status, "scanners")


def check_sticks(status: dict[str, Any] | None) -> list[Finding]:
    """USB sticks edged sees now: what a technician checks before carrying a day on one."""
    if status is None:
        return _none(status, "sticks")
    usb = status.get("usb") or {}
    if not usb:
        return [Finding("N/A", "sticks", "edged does not watch for USB sticks on this till")]
    if usb.get("watching") is False:
        return [Finding("WARN", "sticks", "edged cannot watch for USB sticks (no udev monitor)",
                        "journalctl -u edged -e says why; is this a container?")]
    sticks = usb.get("sticks") or []
    if not sticks:
        # Sticks it cannot use (ext4, unformatted) are not listed: edged's log says why each was left.
        return [Finding("OK", "sticks", "no stick edged can use is plugged in")]
    return [Finding("OK", "sticks", printable(f"{s.get('device')} ({s.get('fs_type')}"
                                              f"{', ' + s['label'] if s.get('label') else ''}, {s.get('bus')}): "
                                              f"{'mounted' if s.get('mounted') else 'plugged in'}"))
            for s in sticks]


def judge_space(free: int, total: int) -> str:
    """Below 100 MB the journal is about to refuse appends; below 1 GB or 10 % it soon may."""
    if free < 100 * MB:
        return "FAIL"
    return "WARN" if free < GB or free < total // 10 else "OK"


def check_disk(state_dir: str) -> Finding:
    path = Path(state_dir)
    while not path.exists() and path != path.parent:  # before the first start: where it will be made
        path = path.parent
    st = os.statvfs(path)
    free, total = st.f_bavail * st.f_frsize, st.f_blocks * st.f_frsize
    return Finding(judge_space(free, total), "disk",
                   f"{_size(free)} free of {_size(total)} ({free * 100 // max(total, 1)} %) on {path}",
                   "make room on that filesystem: a full disk stops the journal, and with it the till")


def _devices(status: dict[str, Any] | None, kind: str) -> list[tuple[str, dict[str, Any]]]:
    return sorted((n, d) for n, d in (status or {}).get("devices", {}).items() if d["kind"] == kind)


def _none(status: dict[str, Any] | None, check: str) -> list[Finding]:
    if status is None:
        return [Finding("WARN", check, "not checked: daemon not reachable", "see the socket line above")]
    return [Finding("OK", check, "none configured")]


def lookup(getter: Callable[[Any], Any], key: str | int) -> Any:
    """A passwd or group entry, None when there is none."""
    try:
        return getter(key)
    except KeyError:
        return None


def _size(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n // MB} MB"
