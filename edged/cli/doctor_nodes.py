"""`edged doctor`'s device checks: the configured device nodes, who may open them, udev rules.

These are the parts a Debian package install brings (user _edged, /lib/udev/rules.d/70-edged.rules);
a simulated till has none of them to check, which `edged doctor` says (N/A) instead of failing.
"""
from __future__ import annotations

import os
import pwd
import re
from collections.abc import Iterable
from pathlib import Path

import pyudev

from ..config import Config
from ..devices import registry
from ..devices.scanner.identity import Identity, NotFound
from .doctor import DAEMON_USER, Finding, lookup, not_simulated, package_hint

RULES_DIRS = (Path("/lib/udev/rules.d"), Path("/usr/lib/udev/rules.d"))
# Nodes the kernel numbers in plug order: unplug two USB-serial adapters and plug them back the
# other way round, and /dev/ttyUSB0 is the other device (seen on a real kernel: tests/till/test_serial.py).
PLUG_ORDER_NODE = re.compile(r"/dev/(ttyUSB|ttyACM|input/event|usb/lp)[0-9]+")
STABLE_PREFIXES = ("/dev/edged/", "/dev/serial/by-id/", "/dev/input/by-id/")
SITE_RULES_DIR = Path("/etc/udev/rules.d")


def opens_read_write(path: str, uid: int, gids: Iterable[int]) -> bool:
    """Would a process of this uid and these groups be allowed to open path read-write?

    Mode bits only: the kernel uses the first class that fits (owner, else group, else
    other). ACLs are not looked at: edged's udev rules grant by group."""
    st = os.stat(path)  # follows /dev/edged/... links to the node; FileNotFoundError if absent
    if uid == 0:
        return True  # CAP_DAC_OVERRIDE
    bits = st.st_mode >> 6 if st.st_uid == uid else st.st_mode >> 3 if st.st_gid in set(gids) else st.st_mode
    return bits & 0o6 == 0o6


def check_devices(cfg: Config, config_path: str, simulated: bool = False) -> list[Finding]:
    """Each configured device node: there, and may the daemon's user open it? A simulated till
    replaces every printer by an emulator (its scanners only when none are configured)."""
    pw = lookup(pwd.getpwnam, DAEMON_USER)
    if pw is not None:
        uid, gids, judged = pw.pw_uid, set(os.getgrouplist(pw.pw_name, pw.pw_gid)), f"user {DAEMON_USER}"
    else:  # still useful on a bench: can *this* process, e.g. `edged run` by hand, open them?
        uid, gids = os.getuid(), set(os.getgroups()) | {os.getgid()}
        judged = f"this process, uid {uid} (no user {DAEMON_USER})"
    out, plug = [], "plugged in and switched on? ls /dev/edged/"
    uncovered = {m.name for _, m in registry.configured_uncovered(cfg)}
    nodes = [n for n in _nodes(cfg) if not (simulated and n[0].startswith("printer "))]
    if simulated and not nodes:
        return [not_simulated("devices", "its printer and scanners are emulated, no device nodes")]
    for what, node, problem, named in nodes:
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
        if PLUG_ORDER_NODE.fullmatch(named):
            out.append(plug_order_finding(what, named, _links(named)))
    return out or [Finding("OK", "devices", "no device nodes configured (network printers are checked below)")]


def plug_order_finding(what: str, node: str, links: Iterable[str]) -> Finding:
    """WHAT is configured by a node name the kernel gives in plug order; LINKS: udev's links to
    the node there now, among which the stable name to use instead."""
    stable = next((link for prefix in STABLE_PREFIXES for link in sorted(links) if link.startswith(prefix)), None)
    table = "printers" if what.startswith("printer ") else "scanners"
    hint = (f'{table}.{what.split(" ", 1)[1]}.device = "{stable}" (the device there now)' if stable else
            "name it by its link in /dev/edged/ or /dev/serial/by-id/ (ls -l /dev/edged/ /dev/serial/by-id/)")
    return Finding("WARN", "devices", f"{what}: {node} is numbered in plug order: after a replug, or with "
                   "another adapter plugged first, it is another device", hint)


def _links(node: str) -> list[str]:
    try:
        return list(pyudev.Devices.from_device_file(pyudev.Context(), node).device_links)
    except (pyudev.DeviceNotFoundError, OSError, ValueError):  # gone meanwhile, or no udev here
        return []


def _nodes(cfg: Config) -> list[tuple[str, str | None, str, str]]:
    """(device, its node or None, why none, the node path as configured or "") for every configured
    printer and scanner not on the network."""
    out: list[tuple[str, str | None, str, str]] = []
    context = pyudev.Context() if any(p.backend == "usb" for p in cfg.printers.values()) or any(
        s.vendor for s in cfg.scanners.values()) else None
    for name, p in sorted(cfg.printers.items()):
        if p.backend in ("serial", "usblp", "file"):
            out.append((f"printer {name}", p.device, "", p.device))
        elif p.backend == "usb":
            assert context is not None  # made above whenever a printer is on USB
            ids = (f"{p.vendor_id:04x}", f"{p.product_id:04x}")
            found = sorted(d.device_node for d in context.list_devices(subsystem="usb", DEVTYPE="usb_device")
                           if (d.properties.get("ID_VENDOR_ID", "").lower(),
                               d.properties.get("ID_MODEL_ID", "").lower()) == ids and d.device_node
                           and (not p.serial_number or d.properties.get("ID_SERIAL_SHORT") == p.serial_number))
            wanted = f"USB {ids[0]}:{ids[1]}" + (f" serial {p.serial_number}" if p.serial_number else "")
            problem = (f"no {wanted} device" if not found else
                       f"{len(found)} devices are {wanted}; set printers.{name}.serial_number")
            out.append((f"printer {name}", found[0] if len(found) == 1 else None, problem, ""))
    for name, s in sorted(cfg.scanners.items()):
        try:  # the daemon's own lookup, so doctor finds exactly the node edged would open
            node: str | None = Identity(s.device, s.vendor, s.product, s.serial).resolve(context)
            problem = ""
        except NotFound as e:
            node, problem = None, e.strerror or ""  # NotFound always has its message
        out.append((f"scanner {name}", node, problem, s.device))
    return out


def check_udev(cfg: Config | None, config_path: str, rules_dirs: Iterable[Path] = RULES_DIRS,
               site_dir: Path = SITE_RULES_DIR) -> list[Finding]:
    rules_dirs = list(rules_dirs)
    installed = next((d / registry.RULES_NAME for d in rules_dirs if (d / registry.RULES_NAME).exists()), None)
    if installed is None:
        where = " or ".join(str(d) for d in rules_dirs)
        out = [Finding("FAIL", "udev", f"no {registry.RULES_NAME} in {where}: edged cannot open its devices",
                       package_hint("installs it"))]
    elif installed.read_text() != registry.rules_text():
        out = [Finding("WARN", "udev", f"{installed} differs from this edged's rules",
                       f"{package_hint('installs it')} (local edits there are overwritten; site rules belong in "
                       f"{site_dir / registry.SITE_RULES_NAME})")]
    else:
        out = [Finding("OK", "udev", f"{installed} matches this edged")]
    missing = registry.configured_uncovered(cfg) if cfg else []
    if missing:
        assert cfg is not None  # nothing is missing without a config
        site, names = site_dir / registry.SITE_RULES_NAME, ", ".join(m.name for _, m in missing)
        hint = _site_hint(config_path, site)
        if not site.exists():
            # Epson-like: granted while the printer shows its printer interface, not if it is ever
            # set to a vendor-defined class; the technician should not read that as "missed".
            partly = [m.name for _, m in missing
                      if m.name.startswith("printer ") and registry.printer_class_only(m.vendor)]
            rest = [m.name for _, m in missing if m.name not in partly]
            what = "; ".join(
                ([f"the packaged rules miss {', '.join(rest)}"] if rest else [])
                + [f"the packaged rules cover {p} only while it shows its USB printer interface" for p in partly])
            out.append(Finding("WARN", "udev", f"no {site}, and {what}", hint))
        # Rule lines only: the header names the config file as it was typed when it was made.
        elif _rule_lines(site.read_text()) != _rule_lines(registry.site_rules_text(cfg, config_path)):
            out.append(Finding("WARN", "udev", f"{site} does not match the config's {names}", hint))
        else:
            out.append(Finding("OK", "udev", f"{site} covers {names}"))
    return out



def _rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def _site_hint(config_path: str, site: Path) -> str:
    return (f"sudo sh -c 'edged udev-rules --for-config {config_path} > {site}' "
            "&& sudo udevadm control --reload && sudo udevadm trigger")
