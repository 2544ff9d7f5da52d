"""`edged demo`: the real daemon on the simulated till, seen through a client.

It starts `edged run --simulate` in a temporary directory with a real
sd_notify socket, talks to it as a client, and stops it with SIGTERM. Every
capability adds its step here.
"""
from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from .cli import format_status
from .relay.client import Client
from .systemd import NotifyListener


def _step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}", flush=True)


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="edged-demo-") as tmp:
        tmpdir = Path(tmp)
        sock_path = tmpdir / "edged.sock"
        notify = NotifyListener(tmpdir / "notify.sock")
        log_path = tmpdir / "edged.log"
        cmd = [sys.executable, "-m", "edged", "run", "--simulate", "--config", os.devnull,
               "--state-dir", str(tmpdir / "state"), "--socket", str(sock_path)]
        _step(1, "start the daemon on the simulated till")
        print("$ " + " ".join(["edged"] + cmd[3:]))
        env = dict(os.environ, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="2000000")
        with open(log_path, "w") as log:
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            ready = notify.wait_for("READY=1", 30)
            if not ready:
                print("edged did not report READY=1 within 30 s; its log:\n" + log_path.read_text())
                return 1
            print(f"systemd would hear: READY=1, then {notify.wait_for('STATUS=', 5)}")
            print(f"watchdog ping (sent only while every part is healthy): {notify.wait_for('WATCHDOG=1', 5)}")
            asyncio.run(_client_steps(str(sock_path)))
        finally:
            _step(6, "stop it the way systemd does (SIGTERM)")
            proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
            print(f"systemd would hear: {notify.wait_for('STOPPING=1', 2)}; exit code {code}")
            print("\n-- the daemon's log --")
            print(log_path.read_text().rstrip())
        return 0 if code == 0 else 1


async def _client_steps(path: str) -> None:
    async with await Client.connect(path, client="edged-demo") as client:
        _step(2, "connect as a client and say hello")
        for key, value in client.server_info.items():
            print(f"  {key:10} {value}")
        _step(3, "ask for status")
        print(format_status(await client.request("status")), end="")
        _step(4, "the printer runs out of paper: edged reads it from the printer (DLE EOT)")
        answer = await client.request("sim", set={"paper_out": True})
        print(f"  simulated printer now: {', '.join(k for k, v in answer['state'].items() if v)}")
        print(format_status(await client.request("status")), end="")
        _step(5, "paper refilled")
        await client.request("sim", set={"paper_out": False})
        print(format_status(await client.request("status")), end="")
