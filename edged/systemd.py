"""systemd integration: sd_notify through sdnotify (READY, STATUS, WATCHDOG, STOPPING) and
the listening socket handed over by edged.socket.

WATCHDOG=1 is only sent while every part reports healthy (the daemon decides,
this module only speaks), so a wedged part gets the service restarted.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping
from pathlib import Path

import sdnotify

log = logging.getLogger("edged.systemd")


class Notifier:
    def __init__(self, env: Mapping[str, str] = os.environ) -> None:
        self._sd = _connect(env.get("NOTIFY_SOCKET", ""))
        self.enabled = self._sd is not None
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


SD_LISTEN_FDS_START = 3


def listen_socket(env: Mapping[str, str] = os.environ) -> socket.socket | None:
    """The unix stream socket systemd passed us (edged.socket), or None when started without one.

    With socket activation systemd keeps the socket open across restarts, so a client that
    connects while a hung edged is being replaced waits in the backlog instead of being refused.
    """
    count = int(env.get("LISTEN_FDS") or 0)
    if env.get("LISTEN_PID") != str(os.getpid()) or count == 0:
        return None
    if count != 1:
        raise RuntimeError(f"systemd passed {count} sockets; edged.socket must listen on exactly one")
    sock = socket.socket(fileno=SD_LISTEN_FDS_START)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        raise RuntimeError("the socket systemd passed is not a unix stream socket (see edged.socket)")
    os.set_inheritable(sock.fileno(), False)  # printers' helper processes must not hold it
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    return sock


def _connect(address: str) -> sdnotify.SystemdNotifier | None:
    """sdnotify reads os.environ itself; point its socket at the address we were given."""
    if not address:
        return None
    notifier = sdnotify.SystemdNotifier()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.connect("\0" + address[1:] if address.startswith("@") else address)
    except OSError as e:
        log.warning("cannot reach NOTIFY_SOCKET %s: %s; systemd will not hear from edged", address, e)
        sock.close()
        return None
    # Never let a full notify queue stall the event loop: a dropped ping is the lesser harm.
    sock.setblocking(False)
    notifier.socket = sock
    return notifier


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


class NotifyListener:
    """The systemd side of sd_notify, for the demo and the tests: collects READY=1, STATUS=..."""

    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.1)
        self.messages: list[str] = []
        self._reader: threading.Thread | None = None

    def read_always(self) -> None:
        """Read in a background thread from now on, as systemd does. Unread, the kernel queues only
        a few datagrams (net.unix.max_dgram_qlen, 10 here) and edged drops what does not fit."""
        def loop() -> None:
            while True:
                try:
                    self.messages.extend(self.sock.recv(4096).decode().split("\n"))
                except TimeoutError:
                    pass
                except OSError:
                    return
        self._reader = threading.Thread(target=loop, name="notify-listener", daemon=True)
        self._reader.start()

    def collect(self, until: str, timeout: float = 20) -> list[str]:
        """Gather messages until one starts with `until` or the time is up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not any(m.startswith(until) for m in self.messages):
            if self._reader is not None:
                time.sleep(0.05)
                continue
            try:
                self.messages.extend(self.sock.recv(4096).decode().split("\n"))
            except TimeoutError:
                pass
        return self.messages

    def wait_for(self, prefix: str, timeout: float) -> str | None:
        """The first message starting with `prefix`, or None."""
        self.collect(prefix, timeout)
        return next((m for m in self.messages if m.startswith(prefix)), None)
