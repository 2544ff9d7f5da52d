"""`edged run` (the daemon in the foreground, what systemd starts) and `edged check-config`."""
from __future__ import annotations

import argparse
import asyncio
import sys

from .. import config


def register(sub: argparse._SubParsersAction) -> None:
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
    run.set_defaults(func=cmd_run)
    check.set_defaults(func=cmd_check_config)


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
