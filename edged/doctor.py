"""`edged doctor`: is this till set up to work? One line per check, for the technician.

It reads the config, the user database, device nodes, udev rules, the journal and
free space, and asks the running daemon for `status`; it changes nothing. Every
WARN or FAIL line says what to do next; the exit code is 1 when any check FAILs.
"""
from __future__ import annotations

import grp
import os
import pwd
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, TextIO

import pyudev

from . import cli_journal, config
from .client import BlockingClient, ClientError
from .config import Config
from .devices import registry
from .devices.scanner.identity import Identity, NotFound
from .journal.verify import verify

DAEMON_USER = "_edged"   # the daemon runs as this user; registry.DAEMON_GROUP is its group
CLIENT_GROUP = "edged"   # members may use the socket
RULES_DIRS = (Path("/lib/udev/rules.d"), Path("/usr/lib/udev/rules.d"))
SITE_RULES_DIR = Path("/etc/udev/rules.d")
REINSTALL = "the edged package installs it: sudo apt install --reinstall edged"
MB, GB = 10**6, 10**9


@dataclass(frozen=True)
class Finding:
    level: str   # OK | WARN | FAIL
    check: str
    found: str
    hint: str = ""

    def __str__(self) -> str:
        line = f"{self.level:<4}  {self.check:<8}  {self.found}"
        return line + (f"\n{'':16}-> {self.hint}" if self.hint and self.level != "OK" else "")


def exit_code(findings: Iterable[Finding]) -> int:
    """0 when nothing FAILed: a WARN is worth a look, not a broken till."""
    return 1 if any(f.level == "FAIL" for f in findings) else 0


def check_config(path: str | None) -> tuple[Finding, Config | None]:
    shown = path or str(config.DEFAULT_PATH)
    try:
        cfg = config.load(path)
    except config.ConfigError as e:
        return Finding("FAIL", "config", str(e), f"fix it, then: edged check-config {shown}"), None
    where = shown if path or config.DEFAULT_PATH.exists() else f"no file {shown}: all defaults"
    return Finding("OK", "config", f"{where}; {_count(cfg.printers, 'printer')}, "
                                   f"{_count(cfg.scanners, 'scanner')}"), cfg


def person() -> str | None:
    """Who runs doctor: the user behind sudo, else this user; None for root, who needs no group."""
    pw = None if os.getuid() == 0 else _lookup(pwd.getpwuid, os.getuid())
    name = os.environ.get("SUDO_USER") or (pw.pw_name if pw else None)
    return None if name in (None, "root") else name


def check_users(who: str | None, daemon_user: str = DAEMON_USER, client_group: str = CLIENT_GROUP) -> Finding:
    group = _lookup(grp.getgrnam, client_group)
    missing = [f"no {what} {name}" for what, name, found in
               (("user", daemon_user, _lookup(pwd.getpwnam, daemon_user)), ("group", client_group, group))
               if found is None]
    if missing:
        return Finding("FAIL", "user", ", ".join(missing), "the edged package creates them: "
                                                           "sudo apt install --reinstall edged")
    found = f"user {daemon_user} and group {client_group} exist"
    if who is None:
        return Finding("OK", "user", found)
    pw = _lookup(pwd.getpwnam, who)
    if pw is None or (who not in group.gr_mem and pw.pw_gid != group.gr_gid):
        return Finding("WARN", "user", f"{who} is not in group {client_group}, so may not use edged's socket",
                       f"sudo usermod -aG {client_group} {who}, then log in again")
    return Finding("OK", "user", f"{found}; {who} is a member of {client_group}")


def opens_read_write(path: str, uid: int, gids: Iterable[int]) -> bool:
    """Would a process of this uid and these groups be allowed to open path read-write?

    Mode bits only: the kernel uses the first class that fits (owner, else group, else
    other). ACLs are not looked at: edged's udev rules grant by group."""
    st = os.stat(path)  # follows /dev/edged/... links to the node; FileNotFoundError if absent
    if uid == 0:
        return True  # CAP_DAC_OVERRIDE
    bits = st.st_mode >> 6 if st.st_uid == uid else st.st_mode >> 3 if st.st_gid in set(gids) else st.st_mode
    return bits & 0o6 == 0o6


def check_devices(cfg: Config, config_path: str) -> list[Finding]:
    pw = _lookup(pwd.getpwnam, DAEMON_USER)
    if pw is not None:
        uid, gids, judged = pw.pw_uid, set(os.getgrouplist(pw.pw_name, pw.pw_gid)), f"user {DAEMON_USER}"
    else:  # still useful on a bench: can *this* process, e.g. `edged run` by hand, open them?
        uid, gids = os.getuid(), set(os.getgroups()) | {os.getgid()}
        judged = f"this process, uid {uid} (no user {DAEMON_USER})"
    out, plug = [], "plugged in and switched on? ls /dev/edged/"
    uncovered = {m.name for _, m in registry.configured_uncovered(cfg)}
    for what, node, problem in _nodes(cfg):
        if node is None:  # none fits, or several do and the config must say which
            out.append(Finding("FAIL", "devices", f"{what}: {problem}", plug if problem.startswith("no ") else
                               "each one's serial: udevadm info --query=property NODE | grep ID_SERIAL_SHORT"))
        elif not os.path.exists(node):
            out.append(Finding("FAIL", "devices", f"{what}: no {node}", plug))
        elif not opens_read_write(node, uid, gids):
            # Site rules help only a device the packaged rules miss; for the others the rules
            # have not been applied to the node yet (installed while it was plugged in, say).
            hint = (_site_hint(config_path, SITE_RULES_DIR / registry.SITE_RULES_NAME) if what in uncovered else
                    "apply edged's udev rules to it: sudo udevadm control --reload && sudo udevadm trigger, "
                    "or replug it; a device of a vendor edged does not know: configure it by USB id")
            out.append(Finding("FAIL", "devices", f"{what}: {judged} may not open {node} read-write", hint))
        else:
            out.append(Finding("OK", "devices", f"{what}: {node}, {judged} may open it"))
    return out or [Finding("OK", "devices", "no device nodes configured (network printers are checked below)")]


def _nodes(cfg: Config) -> list[tuple[str, str | None, str]]:
    """(device, its node or None, why none) for every configured printer and scanner not on the network."""
    out: list[tuple[str, str | None, str]] = []
    context = pyudev.Context() if any(p.backend == "usb" for p in cfg.printers.values()) or any(
        s.vendor for s in cfg.scanners.values()) else None
    for name, p in sorted(cfg.printers.items()):
        if p.backend in ("serial", "file"):
            out.append((f"printer {name}", p.device, ""))
        elif p.backend == "usb":
            ids = (f"{p.vendor_id:04x}", f"{p.product_id:04x}")
            found = sorted(d.device_node for d in context.list_devices(subsystem="usb", DEVTYPE="usb_device")
                           if (d.properties.get("ID_VENDOR_ID", "").lower(),
                               d.properties.get("ID_MODEL_ID", "").lower()) == ids and d.device_node
                           and (not p.serial_number or d.properties.get("ID_SERIAL_SHORT") == p.serial_number))
            wanted = f"USB {ids[0]}:{ids[1]}" + (f" serial {p.serial_number}" if p.serial_number else "")
            problem = (f"no {wanted} device" if not found else
                       f"{len(found)} devices are {wanted}; set printers.{name}.serial_number")
            out.append((f"printer {name}", found[0] if len(found) == 1 else None, problem))
    for name, s in sorted(cfg.scanners.items()):
        try:  # the daemon's own lookup, so doctor finds exactly the node edged would open
            node: str | None = Identity(s.device, s.vendor, s.product, s.serial).resolve(context)
            problem = ""
        except NotFound as e:
            node, problem = None, e.strerror
        out.append((f"scanner {name}", node, problem))
    return out


def check_udev(cfg: Config | None, config_path: str, rules_dirs: Iterable[Path] = RULES_DIRS,
               site_dir: Path = SITE_RULES_DIR) -> list[Finding]:
    rules_dirs = list(rules_dirs)
    installed = next((d / registry.RULES_NAME for d in rules_dirs if (d / registry.RULES_NAME).exists()), None)
    if installed is None:
        where = " or ".join(str(d) for d in rules_dirs)
        out = [Finding("FAIL", "udev", f"no {registry.RULES_NAME} in {where}: edged cannot open its devices",
                       REINSTALL)]
    elif installed.read_text() != registry.rules_text():
        out = [Finding("WARN", "udev", f"{installed} differs from this edged's rules",
                       f"{REINSTALL} (local edits there are overwritten; site rules belong in "
                       f"{site_dir / registry.SITE_RULES_NAME})")]
    else:
        out = [Finding("OK", "udev", f"{installed} matches this edged")]
    missing = registry.configured_uncovered(cfg) if cfg else []
    if missing:
        site, names = site_dir / registry.SITE_RULES_NAME, ", ".join(m.name for _, m in missing)
        hint = _site_hint(config_path, site)
        if not site.exists():
            out.append(Finding("WARN", "udev", f"no {site}, and the packaged rules miss {names}", hint))
        # Rule lines only: the header names the config file as it was typed when it was made.
        elif _rule_lines(site.read_text()) != _rule_lines(registry.site_rules_text(cfg, config_path)):
            out.append(Finding("WARN", "udev", f"{site} does not match the config's {names}", hint))
        else:
            out.append(Finding("OK", "udev", f"{site} covers {names}"))
    return out


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
    return Finding("OK", "socket", f"{path}: {status['server']} on till {status['till_id']}, "
                                   f"up {status['uptime']:.0f} s"), status


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
    ("cannot_read_status", "a device file cannot report the printer's state: use backend usb or serial"),
    ("malformed_reply", "check the cable and printers.NAME.baudrate"),
    ("not_checked", "edged has not read it yet: run edged doctor again"),
)


def check_printers(status: dict[str, Any] | None) -> list[Finding]:
    out = []
    for name, d in _devices(status, "printer"):
        reasons = d.get("reasons") or []
        level = {"ok": "OK", "error": "FAIL"}.get(d["state"], "WARN")
        found = f"{name} ({d['backend']}): " + ("ready" if d["state"] == "ok" else
                                                f"{d['state']}: {', '.join(reasons) or '-'}")
        found += f" - {d['detail']}" if d.get("detail") else ""
        connect = ("switched on? network cable in? is printers.NAME.host its address?" if d["backend"] == "network"
                   else "switched on? cable plugged in? ls /dev/edged/")
        hint = next((h for r, h in _PRINTER_HINTS if r in reasons), connect)
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


def run(config_path: str | None, socket_path: Callable[[], str], state_dir: str | None,
        out: TextIO = sys.stdout) -> int:
    """Run every check in order, printing each line as it is known; the exit code."""
    findings: list[Finding] = []

    def report(*new: Finding) -> None:
        for f in new:
            print(f, file=out, flush=True)  # as we go: verifying a big journal takes a while
        findings.extend(new)

    shown = config_path or str(config.DEFAULT_PATH)
    first, cfg = check_config(config_path)
    report(first)
    who = person()
    report(check_users(who))
    report(*(check_devices(cfg, shown) if cfg else
             [Finding("WARN", "devices", "not checked: the config is invalid", "fix the config first")]))
    report(*check_udev(cfg, shown))
    effective = cfg or Config()  # an invalid config: the daemon may still run on the defaults' paths
    try:
        sock = socket_path()
    except config.ConfigError:
        sock = effective.daemon.socket
    found, status = check_socket(sock, who)
    report(found)
    state = state_dir or effective.daemon.state_dir
    report(check_journal(state))
    report(*check_printers(status))
    report(*check_scanners(status))
    report(check_disk(state))
    return exit_code(findings)


def _devices(status: dict[str, Any] | None, kind: str) -> list[tuple[str, dict[str, Any]]]:
    return sorted((n, d) for n, d in (status or {}).get("devices", {}).items() if d["kind"] == kind)


def _none(status: dict[str, Any] | None, check: str) -> list[Finding]:
    if status is None:
        return [Finding("WARN", check, "not checked: daemon not reachable", "see the socket line above")]
    return [Finding("OK", check, "none configured")]


def _rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _site_hint(config_path: str, site: Path) -> str:
    return (f"sudo sh -c 'edged udev-rules --for-config {config_path} > {site}' "
            "&& sudo udevadm control --reload && sudo udevadm trigger")


def _lookup(getter: Callable[[Any], Any], key: str | int) -> Any:
    """A passwd or group entry, None when there is none."""
    try:
        return getter(key)
    except KeyError:
        return None


def _count(items: dict, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _size(n: int) -> str:
    return f"{n / GB:.1f} GB" if n >= GB else f"{n // MB} MB"
