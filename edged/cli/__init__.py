"""The `edged` command: the daemon, the technician's tools and the demo."""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from .. import __version__, config
from . import day as cli_day
from . import format as cli_format
from . import identity as cli_identity
from . import install as cli_install
from . import journal as cli_journal
from . import printing as cli_print
from . import scan as cli_scan
from . import status as cli_status
from . import sync as cli_sync
from ..bench import cli as cli_bench
from .common import EXIT_USAGE, call, connected, socket_arg
from ..identity import IdentityError
from ..journal.statefile import StateFileError


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
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="edged", description=_DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground (what systemd starts)",
                         description="Run the daemon in the foreground. Stops cleanly on SIGTERM or Ctrl+C.")
    run.add_argument("--config", metavar="FILE", help=f"config file (default {config.DEFAULT_PATH}; "
                                                      "absent means all defaults)")
    run.add_argument("--simulate", action="store_true",
                     help="use the simulated till: every printer becomes an emulator on loopback "
                          "(receipts land as text files under STATE_DIR/sim/)")
    run.add_argument("--state-dir", metavar="DIR", help="override daemon.state_dir (journal and state)")
    run.add_argument("--socket", metavar="PATH", help="override daemon.socket (where clients connect)")

    check = sub.add_parser("check-config", help="validate a config file and print the effective config",
                           description="Validate a config file. Prints the effective config (defaults "
                                       "filled in) and exits 0, or prints one line naming the bad key "
                                       "and exits 2.")
    check.add_argument("file", nargs="?", default=str(config.DEFAULT_PATH), metavar="FILE")

    status = sub.add_parser("status", help="show what the running daemon sees (devices, journal, clients)")
    socket_arg(status)
    status.add_argument("--json", action="store_true", help="print the raw status result as JSON")

    events = sub.add_parser("events", help="print live events (printer, drawer, scanner, usb, day, journal, sync)",
                            description="Watch the running daemon's device events as they happen, one per "
                                        "line, e.g. `edged events printer drawer`. Ctrl+C stops.")
    events.add_argument("topics", nargs="*", metavar="TOPIC",
                        help="scanner, printer, drawer, usb, day, journal or sync (default: all)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    socket_arg(events)

    demo = sub.add_parser("demo", help="start edged on a simulated till in a temporary directory, "
                                       "show what a client and the technician's commands see, stop it",
                          description="A guided tour on the simulated till: edged runs in a temporary "
                                      "directory, removed at the end; nothing is installed. The daemon's log "
                                      "is kept in --log FILE, whose path and last warnings the tour prints "
                                      "at its end.")
    demo.add_argument("--log", metavar="FILE", type=Path,
                      help="where to keep the daemon's log, overwritten each run (default: demo.log in "
                           "the virtualenv edged runs from, e.g. .venv/demo.log in a checkout; else "
                           "./edged-demo.log)")

    sim = sub.add_parser("sim", help="the simulated till: run the printer emulator, change its state, plug in a stick")
    simsub = sim.add_subparsers(dest="sim_command", metavar="SIMCOMMAND", required=True)
    simp = simsub.add_parser("printer", help="run the ESC/POS printer emulator alone (receipts to stdout)",
                             description="Run the ESC/POS printer+drawer emulator on loopback TCP and a pty. "
                                         "Type state changes on stdin, e.g. 'paper_out on', 'drawer_open off', "
                                         "'state', 'quit'.")
    simp.add_argument("--port", type=int, default=0, help="TCP port (default 0: any free port, printed)")
    simp.add_argument("--columns", type=int, default=42, help="characters per line (default 42)")
    sims = simsub.add_parser("set", help="change the simulated printer of a daemon started with --simulate",
                             description="Change the state of the simulated printer of a running "
                                         "`edged run --simulate`, e.g. `edged sim set paper_out=on`. Keys: "
                                         "offline, cover_open, paper_near_end, paper_out, cutter_error, "
                                         "drawer_open, mute.")
    sims.add_argument("changes", nargs="+", metavar="KEY=on|off")
    sims.add_argument("--printer", help="printer name (default: the first)")
    socket_arg(sims)
    stick = simsub.add_parser("stick", help="plug a directory into a simulated till as a USB stick, or pull one",
                              description="The simulated till's USB sticks are directories: `edged sim stick "
                                          "DIR` plugs DIR in (usb.inserted; a pending export starts), "
                                          "`edged sim stick --unplug DEVICE` pulls it (DEVICE as shown: sim1...).")
    stick.add_argument("dir", nargs="?", type=Path, metavar="DIR", help="an existing directory")
    stick.add_argument("--unplug", metavar="DEVICE", help="pull this simulated stick instead")
    socket_arg(stick)
    cli_scan.add_parsers(sub)
    cli_day.add_parsers(sub)
    cli_day.add_archive_parsers(sub)
    cli_journal.add_parsers(sub)
    cli_print.add_parsers(sub)
    cli_install.add_parsers(sub)
    cli_sync.add_parsers(sub)
    cli_identity.add_parsers(sub)
    cli_bench.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return _COMMANDS[args.command](args)
    except config.ConfigError as e:
        print(f"edged: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (StateFileError, IdentityError) as e:  # one line, never a traceback: the technician reads it in the journal
        print(f"edged: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def cmd_run(args: argparse.Namespace) -> int:
    import logging

    from .. import cpu, logs
    from ..daemon import Daemon
    from ..journal.highwater import HighWaterError
    from ..journal.owners import OwnersFileError
    from ..relay.server import SocketBusy

    cfg = config.load(args.config)
    if args.state_dir:
        cfg.daemon.state_dir = args.state_dir
    if args.socket:
        cfg.daemon.socket = args.socket
    logs.setup(cfg.daemon.log_level)
    logging.getLogger("edged").info("%s", cpu.place(cfg.daemon.cpu))
    try:
        return asyncio.run(Daemon(cfg, simulate=args.simulate).run())
    except (SocketBusy, HighWaterError, OwnersFileError) as e:
        print(f"edged: {e}", file=sys.stderr)
        return 1
    except PermissionError as e:
        print(f"edged: {e.filename}: permission denied ({e.strerror}); use --state-dir/--socket "
              "or run as the edged user", file=sys.stderr)
        return 1


def cmd_check_config(args: argparse.Namespace) -> int:
    cfg = config.load(args.file)
    print(f"# {args.file}: valid; effective config (defaults filled in):")
    print(config.to_toml(cfg), end="")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from ..relay.watch import TOPICS

    unknown = [t for t in args.topics if t not in TOPICS]
    if unknown:
        print(f"edged: unknown topic {unknown[0]!r}; topics: {', '.join(TOPICS)}", file=sys.stderr)
        return EXIT_USAGE
    with connected(args, timeout=None) as client:  # events may be hours apart
        client.request("watch", topics=args.topics or list(TOPICS))
        try:
            for event in client.iter_events():
                if args.json:
                    print(json.dumps(event, default=repr), flush=True)
                else:
                    print(f"{time.strftime('%H:%M:%S')}  {cli_format.event(event)}", flush=True)
        except KeyboardInterrupt:
            pass
    return 0



def cmd_status(args: argparse.Namespace) -> int:
    result = call(args, "status")
    if args.json:
        print(json.dumps(result, indent=2, default=repr))
    else:
        print(cli_status.format_status(result), end="")
    return 0


def cmd_sim(args: argparse.Namespace) -> int:
    if args.sim_command == "printer":
        from ..sim.console import run_printer

        return run_printer(args.port, args.columns)
    if args.sim_command == "stick":
        if args.unplug:
            print(f"simulated stick {call(args, 'sim', unplug=args.unplug)['unplugged']} pulled")
        elif args.dir:
            plugged = call(args, "sim", stick=str(args.dir.resolve()))["plugged"]
            print(f"simulated stick {plugged['device']} plugged in: {plugged['node']}")
        else:
            print("edged: give DIR, or --unplug DEVICE", file=sys.stderr)
            return EXIT_USAGE
        return 0
    changes = {}
    for item in args.changes:
        key, _, value = item.partition("=")
        if value.lower() not in ("on", "off", "true", "false", "1", "0"):
            print(f"edged: {item!r}: write KEY=on or KEY=off", file=sys.stderr)
            return EXIT_USAGE
        changes[key] = value.lower() in ("on", "true", "1")
    params: dict[str, Any] = {"set": changes}
    if args.printer:
        params["printer"] = args.printer
    result = call(args, "sim", **params)
    st = result["status"]
    print(f"simulated printer {result['printer']}: "
          f"{', '.join(k for k, v in result['state'].items() if v) or 'ready'}; "
          f"edged reads it as {st['state']} {', '.join(st['reasons'])}".rstrip())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import run_demo

    return run_demo(args.log)


_COMMANDS = {"run": cmd_run, "check-config": cmd_check_config, "status": cmd_status,
             "demo": cmd_demo, "sim": cmd_sim, "events": cmd_events,
             "journal": cli_journal.cmd_journal, "bench": cli_bench.cmd_bench, "tail": cli_journal.cmd_tail,
             "print-test": cli_print.cmd_print, "print": cli_print.cmd_print, "reprint": cli_print.cmd_reprint,
             "jobs": cli_print.cmd_jobs, "drawer": cli_print.cmd_drawer, "scan": cli_scan.cmd_scan,
             "day": cli_day.cmd_day, "export": cli_day.cmd_export,
             "verify": cli_day.cmd_verify, "import": cli_day.cmd_import, "archive": cli_day.cmd_archive,
             "udev-rules": cli_install.cmd_udev_rules, "identity": cli_identity.cmd_identity,
             "sync": cli_sync.cmd_sync, "doctor": cli_install.cmd_doctor}
