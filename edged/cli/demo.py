"""`edged demo`: the guided tour on a simulated till (the tour itself is edged/cli/tour.py)."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
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
    demo.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from .tour import run_demo

    return run_demo(args.log)
