"""Installation commands for technicians: `edged udev-rules` and `edged doctor`."""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, TextIO

from .. import config
from . import common
from .common import socket_arg

if TYPE_CHECKING:
    from .doctor import Finding

_DOCTOR = f"""\
Check what this till needs to work, in this order, one line each:
  config    --config FILE loads (default {config.DEFAULT_PATH}; no file: all defaults)
  user      the daemon's user _edged and the client group edged exist; you are in group edged
  devices   each configured printer's and scanner's device node is there and _edged may open it
  udev      the packaged udev rules are installed unchanged; site rules cover devices they miss
  socket    the daemon answers `status` on its socket
  journal   every journal record checks out, as `edged journal verify` finds
  printers  each printer is ready (paper, cover, cable), as the daemon reads it now
  scanners  each scanner is online
  disk      free space where the journal is
Each line starts OK, WARN, FAIL or N/A; WARN and FAIL lines are followed by what to do (-> ...).
N/A: on a simulated till (`edged run --simulate`, `edged demo`), which runs as whoever starts it
with emulated devices, the user, devices and udev checks do not apply and say so. The daemon's
status tells doctor it is simulated; --simulated says so when the daemon does not answer.
doctor changes nothing. Run it as root (sudo edged doctor) to read an installed till's journal.
Exit status: 0 when no check FAILs (WARNs and N/As allowed), 1 when any check FAILs.
"""


def register(sub: argparse._SubParsersAction) -> None:
    rules = sub.add_parser(
        "udev-rules", help="print the udev rules that let edged open its devices",
        description="Prints the udev rules edged's package installs as /lib/udev/rules.d/70-edged.rules: "
                    "receipt printers, USB-serial adapters and barcode scanners of the vendors edged knows, "
                    "each node given to group _edged (the daemon) and named /dev/edged/<kind>-<node>-"
                    "<vendor>-<product>[-<serial>][-if<N>]. With --for-config: rules for the printers and "
                    "scanners your "
                    "config names by USB id that those rules miss, for /etc/udev/rules.d/69-edged-site.rules; "
                    "then `udevadm control --reload && udevadm trigger` and replug the device.")
    rules.add_argument("--for-config", nargs="?", const=str(config.DEFAULT_PATH), metavar="FILE",
                       help=f"site rules for the devices configured in FILE (default {config.DEFAULT_PATH})")
    doctor = sub.add_parser(
        "doctor", help="check this till's setup, one line per check: OK, WARN or FAIL with what to do",
        description=_DOCTOR, formatter_class=argparse.RawDescriptionHelpFormatter)
    socket_arg(doctor)
    doctor.add_argument("--state-dir", metavar="DIR", help="edged's state directory, where the journal is "
                                                          "(default: daemon.state_dir from --config)")
    doctor.add_argument("--simulated", action="store_true",
                        help="judge a simulated till (edged run --simulate) even when its daemon does not "
                             "answer; a running daemon's status says so itself")
    doctor.add_argument("--json", action="store_true",
                        help="all findings at the end as one JSON list (level, check, found, hint)")
    rules.set_defaults(func=cmd_udev_rules)
    doctor.set_defaults(func=cmd_doctor)


def cmd_doctor(args: argparse.Namespace) -> int:
    return run_doctor(args.config, lambda: common.socket_path(args), args.state_dir, simulated=args.simulated,
                      as_json=args.json)


def run_doctor(config_path: str | None, socket_path: Callable[[], str], state_dir: str | None, *,
               simulated: bool = False, as_json: bool = False, out: TextIO = sys.stdout) -> int:
    """Run every check in order, printing each line as it is known; the exit code."""
    from ..config import Config
    from . import doctor
    from .doctor_nodes import check_devices, check_udev

    findings: list[Finding] = []

    def report(*new: Finding) -> None:
        if not as_json:
            for f in new:
                print(f, file=out, flush=True)  # as we go: verifying a big journal takes a while
        findings.extend(new)

    shown = config_path or str(config.DEFAULT_PATH)
    first, cfg = doctor.check_config(config_path)
    report(first)
    effective = cfg or Config()  # an invalid config: the daemon may still run on the defaults' paths
    try:
        sock = socket_path()
    except config.ConfigError:
        sock = effective.daemon.socket
    who = doctor.person()
    # Asked before the checks printed above it: whether the till is simulated decides what they judge.
    found, status = doctor.check_socket(sock, who)
    simulated = bool(status["simulated"]) if status else simulated
    if simulated:
        report(doctor.not_simulated("user", "it runs as whoever starts it, not as the package's user _edged"))
    else:
        report(doctor.check_users(who))
    report(*(check_devices(cfg, shown, simulated) if cfg else
             [doctor.Finding("WARN", "devices", "not checked: the config is invalid", "fix the config first")]))
    if simulated:
        report(doctor.not_simulated("udev", "the package's rules give real devices to user _edged"))
    else:
        report(*check_udev(cfg, shown))
    report(found)
    state = state_dir or effective.daemon.state_dir
    report(doctor.check_journal(state))
    report(*doctor.check_printers(status))
    report(*doctor.check_scanners(status))
    report(*doctor.check_sticks(status))
    report(doctor.check_disk(state))
    if as_json:
        print(json.dumps([f.as_dict() for f in findings], indent=2), file=out)
    return doctor.exit_code(findings)


def cmd_udev_rules(args: argparse.Namespace) -> int:
    from ..devices import registry

    if args.for_config is None:
        sys.stdout.write(registry.rules_text())
        return 0
    cfg = config.load(args.for_config)
    sys.stdout.write(registry.site_rules_text(cfg, args.for_config))
    return 0
