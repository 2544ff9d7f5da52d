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
from .client import Client
from .systemd import NotifyListener


def _step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}", flush=True)


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="edged-demo-") as tmp:
        tmpdir = Path(tmp)
        sock_path = tmpdir / "edged.sock"
        notify = NotifyListener(tmpdir / "notify.sock")
        log_path = tmpdir / "edged.log"
        cfg_path = tmpdir / "edged.toml"
        cfg_path.write_text('till_id = "demo-till-1"\n\n[numbering.receipt]\nfirst = 3000000\nlast = 3999999\n')
        cmd = [sys.executable, "-m", "edged", "run", "--simulate", "--config", str(cfg_path),
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
            _step(9, "a technician checks the journal files")
            print(f"$ edged journal verify --state-dir {tmpdir / 'state'}")
            subprocess.run([sys.executable, "-m", "edged", "journal", "verify", "--state-dir",
                            str(tmpdir / "state")])
        finally:
            _step(10, "stop it the way systemd does (SIGTERM)")
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
        _step(4, "the printer runs out of paper: edged reads it from the printer (DLE EOT), "
                 "and a client watching `printer` hears it at once (`edged events printer`)")
        async with await Client.connect(path, client="demo-watcher") as watcher:
            print(f"  watch -> {await watcher.request('watch', topics=['printer'])}")
            answer = await client.request("sim", set={"paper_out": True})
            print(f"  simulated printer now: {', '.join(k for k, v in answer['state'].items() if v)}")
            print(f"  event: {await watcher.next_event(5)}")
            print(format_status(await client.request("status")), end="")
            _step(5, "paper refilled")
            await client.request("sim", set={"paper_out": False})
            print(f"  event: {await watcher.next_event(5)}")
        print(format_status(await client.request("status")), end="")
        _step(6, "the POS app appends a sale; edged answers after fdatasync, with the next receipt number")
        sale = {"kind": "sale", "body": {"total": 1250, "lines": [["Brot", 450], ["Käse", 800]]},
                "tx_id": "pos-7f3a-0001", "number": "receipt"}
        print(f"  append -> {await client.request('append', records=[sale])}")
        print(f"  the same tx_id again (a retry after a lost answer) -> {await client.request('append', records=[sale])}")
        await client.request("append", records=[{"kind": "drawer.opened", "body": {"reason": "sale"}}])
    async with await Client.connect(path, client="demo-sync") as sync:
        _step(7, "the sync layer subscribes from its last ack, receives records, acks them")
        print(f"  subscribe -> {await sync.request('subscribe', consumer='head-office', window=100, **{'from': 'acked'})}")
        for _ in range(2):
            ev = await asyncio.wait_for(sync.events.get(), 5)
            print(f"  record seq {ev['seq']} {ev['kind']} number={ev['number']} chain={ev['chain'].hex()[:16]}...")
            print(f"  ack -> {await sync.request('ack', consumer='head-office', seq=ev['seq'])}")
        _step(8, "status now shows the journal, the consumer and who is connected")
        status = await sync.request("status")
        print(f"  journal {status['journal']}\n  consumers {status['consumers']}, lag {status['consumer_lag']}")
        print(format_status(status).split("\n\n")[-1], end="")
        print("  privileged ops (consumer_remove, drawer_open, day_close, export) need root, edged's user, or a")
        print("  user/group from daemon.privileged_users / privileged_groups; others get not_permitted.")
