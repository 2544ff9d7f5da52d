"""The `edged` command: the daemon, the technician's tools and the demo.

Each command group is one module with a `register(sub)` that adds its subcommands
and names each one's handler (set_defaults(func=...)); the order of GROUPS is the
order `edged --help` lists them in.

`edged COMMAND` imports only COMMAND's group: all of them together (the printer
stack, MQTT, the archive's database drivers, cryptography) take seconds to import
on a slow till, and a technician's `edged status` or the daemon's own start should
not wait for code it never runs. COMMANDS names the group of every top-level
command; a test checks it against what the groups register.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from types import ModuleType

from .. import __version__, config
from .common import EXIT_USAGE

GROUPS = ("daemon", "status", "demo", "sim", "scan", "day", "journal", "printing", "install", "sync", "fleet",
          "identity", "bench")
COMMANDS = {
    "run": "daemon", "check-config": "daemon", "status": "status", "events": "status", "demo": "demo",
    "sim": "sim", "scan": "scan", "day": "day", "export": "day", "verify": "day", "import": "day",
    "archive": "day", "journal": "journal", "tail": "journal", "print-test": "printing", "print": "printing",
    "jobs": "printing", "reprint": "printing", "drawer": "printing", "udev-rules": "install",
    "doctor": "install", "sync": "sync", "relay": "fleet", "headoffice": "fleet", "identity": "identity",
    "bench": "bench",
}


def group(name: str) -> ModuleType:
    return importlib.import_module("edged.bench.cli" if name == "bench" else f"edged.cli.{name}")

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

At head office:
  edged headoffice status         every till: online, records not yet archived, records waiting for it
  edged headoffice send           a web order, voucher or price list down to one till or to all
  edged headoffice alerts         web orders a till's POS app did not pick up in time
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for COMMAND alone (only its group imported), or for every command."""
    parser = argparse.ArgumentParser(prog="edged", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in [COMMANDS[command]] if command in COMMANDS else GROUPS:
        group(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return args.func(args)
    except config.ConfigError as e:
        print(f"edged: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:
        # Imported here, not above: they would pull their modules into every command's start.
        from ..identity import IdentityError
        from ..journal.statefile import StateFileError

        if not isinstance(e, StateFileError | IdentityError):
            raise
        print(f"edged: {e}", file=sys.stderr)  # one line, never a traceback: the technician reads it in the journal
        return 1
    except KeyboardInterrupt:
        return 130
