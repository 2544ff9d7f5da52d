"""What every command that talks to the daemon shares: the --socket/--config options and the connection.

A refusal or an absent daemon ends the command with one line naming what to do,
never a traceback: the technician reads it at the till or in the journal.
"""
from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from typing import Any

from .. import config

EXIT_USAGE = 2  # a bad option value, like argparse's own usage errors


def socket_arg(p: argparse.ArgumentParser) -> None:
    """--socket and --config, for a command that connects to the running daemon."""
    p.add_argument("--socket", metavar="PATH",
                   help="edged's socket (default: $EDGED_SOCKET, else daemon.socket from --config, "
                        f"else {config.DaemonSettings.socket})")
    p.add_argument("--config", metavar="FILE", help=f"config file to take the socket path from "
                                                    f"(default {config.DEFAULT_PATH})")


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return args.socket
    if os.environ.get("EDGED_SOCKET"):
        return os.environ["EDGED_SOCKET"]
    return config.load(args.config).daemon.socket


def call(args: argparse.Namespace, op: str, **params: Any) -> dict[str, Any]:
    """One request on a connection of its own."""
    with connected(args) as client:
        return client.request(op, **params)


@contextlib.contextmanager
def connected(args: argparse.Namespace, timeout: float | None = 30.0) -> Iterator[Any]:
    """A BlockingClient; connection problems and refusals become one-line exits."""
    from ..client import BlockingClient, ClientError

    path = socket_path(args)
    try:
        with BlockingClient.connect(path, client="edged-cli", timeout=timeout) as client:
            yield client
    except (FileNotFoundError, ConnectionRefusedError):
        raise SystemExit(f"edged: no daemon answers on {path} (is edged running? --socket?)") from None
    except PermissionError:
        raise SystemExit(f"edged: not allowed to connect to {path} ({_who_may(path)})") from None
    except ClientError as e:
        raise SystemExit(f"edged: {e}") from None


def _who_may(path: str) -> str:
    """Name the socket's group, so the refusal says what to do about it."""
    import grp

    try:
        group = grp.getgrgid(os.stat(path).st_gid).gr_name
    except (OSError, KeyError):
        return "join the group of edged's socket"
    return f"members of group {group} may: usermod -aG {group} $USER, then log in again"
