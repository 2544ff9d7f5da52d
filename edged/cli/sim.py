"""`edged sim ...`: the simulated till's printer emulator, its state, its USB sticks."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import EXIT_USAGE, call, socket_arg


def register(sub: argparse._SubParsersAction) -> None:
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
    sim.set_defaults(func=cmd_sim)


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
