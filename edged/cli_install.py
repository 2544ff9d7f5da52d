"""Installation commands for technicians: `edged udev-rules` (and `edged doctor`)."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import config

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
Each line starts OK, WARN or FAIL; WARN and FAIL lines are followed by what to do (-> ...).
doctor changes nothing. Run it as root (sudo edged doctor) to read an installed till's journal.
Exit status: 0 when no check FAILs (WARNs allowed), 1 when any check FAILs.
"""


def add_parsers(sub: argparse._SubParsersAction, socket_arg: Callable) -> None:
    rules = sub.add_parser(
        "udev-rules", help="print the udev rules that let edged open its devices",
        description="Prints the udev rules edged's package installs as /lib/udev/rules.d/70-edged.rules: "
                    "receipt printers, USB-serial adapters and barcode scanners of the vendors edged knows, "
                    "each node given to group _edged (the daemon) and named /dev/edged/<kind>-<node>-"
                    "<vendor>-<product>[-<serial>][-if<N>]. With --for-config: rules for the printers and scanners your "
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


def cmd_doctor(args: argparse.Namespace, socket_path: Callable[[argparse.Namespace], str]) -> int:
    from . import doctor

    return doctor.run(args.config, lambda: socket_path(args), args.state_dir)


def cmd_udev_rules(args: argparse.Namespace) -> int:
    from .devices import registry

    if args.for_config is None:
        sys.stdout.write(registry.rules_text())
        return 0
    cfg = config.load(args.for_config)
    sys.stdout.write(registry.site_rules_text(cfg, args.for_config))
    return 0
