"""systemd integration through sdnotify: READY, STATUS, WATCHDOG, STOPPING.

WATCHDOG=1 is only sent while every part reports healthy (the daemon decides,
this module only speaks), so a wedged part gets the service restarted.
"""
from __future__ import annotations

import os
from typing import Mapping

import sdnotify


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self.enabled = bool(env.get("NOTIFY_SOCKET"))
        self._sd = sdnotify.SystemdNotifier() if self.enabled else None
        self.watchdog_interval = _watchdog_interval(env)
        self._last_status: str | None = None

    def _send(self, text: str) -> None:
        if self._sd is not None:
            self._sd.notify(text)

    def ready(self) -> None:
        self._send("READY=1")

    def status(self, line: str) -> None:
        """Send STATUS= only when the line changed; sdnotify encodes latin-1, keep ASCII."""
        line = line.encode("ascii", "replace").decode().replace("\n", " ")
        if line != self._last_status:
            self._last_status = line
            self._send(f"STATUS={line}")

    def watchdog(self) -> None:
        self._send("WATCHDOG=1")

    def stopping(self) -> None:
        self._send("STOPPING=1")


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    """Seconds between pings (half of WATCHDOG_USEC), or None when not asked for."""
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None
