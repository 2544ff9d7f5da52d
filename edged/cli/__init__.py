"""The `edged` command: the daemon, the technician's tools and the demo.

Each command group is one module with a `register(sub)` that adds its subcommands
and names each one's handler (set_defaults(func=...)); the order of the calls in
build_parser is the order `edged --help` lists them in.
"""
from __future__ import annotations

import argparse
import sys

from .. import __version__, config
from ..bench import cli as bench
from ..identity import IdentityError
from ..journal.statefile import StateFileError
from . import daemon, day, demo, fleet, identity, install, journal, printing, scan, sim, status, sync
from .common import EXIT_USAGE

_DESCRIPTION = """\
edged runs the till's hardware (receipt printer, cash drawer, scanners, USB
sticks) and its crash-safe journal, and serves local clients on a unix socket.

Start here:
  edged demo                      see it work on a simulated till (no hardware)
  edged doctor                    is this till set up right? one line per check, with what to do
  edged check-config FILE         validate a config file and print the result
  edged status                    what the running daemon sees
  edged print-test                print a test receipt (and see that it printed)
  edged jobs                      recent print jobs and why any is held
  edged drawer calibrate          set up the cash drawer's sensor
  edged journal verify            check every journal record (exit 1 on any problem)
  edged sync log                  has head office got this till's data? who acked what, and when
  edged identity                  this till's signing key, and how head office enrolls it
  edged relay --check             can this till reach head office's MQTT broker?
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in (daemon, status, demo, sim, scan, day, journal, printing, install, sync, fleet, identity, bench):
        group.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except config.ConfigError as e:
        print(f"edged: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (StateFileError, IdentityError) as e:  # one line, never a traceback: the technician reads it in the journal
        print(f"edged: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
