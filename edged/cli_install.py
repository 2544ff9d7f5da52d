"""Installation commands for technicians: `edged udev-rules` (and `edged doctor`)."""
from __future__ import annotations

import argparse
import sys
from typing import Callable

from . import config


def add_parsers(sub: argparse._SubParsersAction, socket_arg: Callable) -> None:
    rules = sub.add_parser(
        "udev-rules", help="print the udev rules that let edged open its devices",
        description="Prints the udev rules edged's package installs as /lib/udev/rules.d/70-edged.rules: "
                    "receipt printers, USB-serial adapters and barcode scanners of the vendors edged knows, "
                    "each node given to group _edged (the daemon) and named /dev/edged/<kind>-<vendor>-"
                    "<product>[-<serial>]. With --for-config: rules for the printers and scanners your "
                    "config names by USB id that those rules miss, for /etc/udev/rules.d/69-edged-site.rules; "
                    "then `udevadm control --reload && udevadm trigger` and replug the device.")
    rules.add_argument("--for-config", nargs="?", const=str(config.DEFAULT_PATH), metavar="FILE",
                       help=f"site rules for the devices configured in FILE (default {config.DEFAULT_PATH})")


def cmd_udev_rules(args: argparse.Namespace) -> int:
    from .devices import registry

    if args.for_config is None:
        sys.stdout.write(registry.rules_text())
        return 0
    cfg = config.load(args.for_config)
    sys.stdout.write(registry.site_rules_text(cfg, args.for_config))
    return 0
