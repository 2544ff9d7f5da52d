"""`edged tail CONSUMER` against a running daemon: prints records, acks them, resumes."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

from edged.client import Client
from edged.systemd import NotifyListener


def test_tail_prints_acks_and_resumes(short_dir):
    notify = NotifyListener(short_dir / "notify")
    sock = str(short_dir / "edged.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "JOURNAL_STREAM")}
    daemon = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", os.devnull, "--state-dir",
                               str(short_dir / "state"), "--socket", sock],
                              env=dict(env, NOTIFY_SOCKET=notify.path), stderr=subprocess.DEVNULL)
    try:
        assert notify.wait_for("READY=1", 30)

        async def append(n: int, start: int) -> None:
            async with await Client.connect(sock, "pos") as c:
                await c.request("append", records=[{"kind": "sale", "body": {"n": start + i}} for i in range(n)])
        asyncio.run(append(3, 0))

        def tail(count: int) -> list[dict]:
            proc = subprocess.Popen([sys.executable, "-m", "edged", "tail", "ho", "--json", "--socket", sock],
                                    stdout=subprocess.PIPE, text=True)
            lines = [json.loads(proc.stdout.readline()) for _ in range(count)]
            proc.send_signal(signal.SIGINT)
            assert proc.wait(10) == 0
            return lines

        assert [r["body"]["n"] for r in tail(3)] == [0, 1, 2]
        asyncio.run(append(2, 3))
        assert [r["seq"] for r in tail(2)] == [4, 5]  # resumed after its last ack
        out = subprocess.run([sys.executable, "-m", "edged", "journal", "consumers", "--socket", sock],
                             capture_output=True, text=True, timeout=30).stdout
        assert "ho" in out and "acked          5" in out and "lag 0" in out
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(20)
