"""A Mosquitto on loopback for the demo, the bench and the tests: started with a config of its own
on a free port, nothing persisted, stopped by its PID (terminate, then kill). Never a service:
nothing of it outlives the program that started it."""
from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's package mosquitto


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def stop_process(proc: subprocess.Popen | None, grace: float = 10) -> None:
    """SIGTERM, and SIGKILL after `grace` seconds; waited for either way (no zombie)."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class LocalBroker:
    def __init__(self, workdir: Path, settings: list[str] | None = None, tls: bool = False) -> None:
        """settings: lines of mosquitto.conf for its one listener (TLS, passwords, ACL); none: anonymous."""
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.tls = tls
        self.proc: subprocess.Popen | None = None
        # set_tcp_nodelay: batches and acks are small messages in a row; with Nagle each would wait for
        # the TCP ACK of the last (docs/FLEET.md, "The broker").
        lines = ["persistence false", "set_tcp_nodelay true", "log_dest stdout", "log_type error", "log_type warning",
                 "log_type notice"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to user mosquitto, who cannot read our files
        self.settings = lines + (settings if settings is not None else ["allow_anonymous true"])

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    @property
    def log(self) -> Path:
        return self.dir / "mosquitto.log"

    def start(self, timeout: float = 10) -> LocalBroker:
        """Start (again: on the same port when it ran before); returns once it accepts connections."""
        self.port = self.port or free_port()
        conf = self.dir / "mosquitto.conf"
        # per_listener_settings must come before any listener's settings
        first = [s for s in self.settings if s.startswith("per_listener_settings")]
        rest = [s for s in self.settings if s not in first]
        conf.write_text("\n".join([*first, f"listener {self.port} 127.0.0.1", *rest]) + "\n")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not start: {self.log.read_text()[-2000:]}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        stop_process(proc, 5)

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
