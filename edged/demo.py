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
import time
from pathlib import Path

from .cli_status import format_status
from .client import Client
from .systemd import NotifyListener


DEMO_CONFIG = """\
till_id = "demo-till-1"

[numbering.receipt]
first = 3000000
last = 3999999

[sync]
offline_after = 1      # seconds without the sync layer before it counts as offline

[deadlines."order.web"]
consumer = "pos"       # a web order must be picked up by the POS app
within = 2             # seconds (in a shop: minutes)

[export]
exclude_kinds = ["stock.move"]   # stock is managed at head office
"""


def _step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}", flush=True)


def run_demo() -> int:
    with tempfile.TemporaryDirectory(prefix="edged-demo-") as tmp:
        tmpdir = Path(tmp)
        sock_path = tmpdir / "edged.sock"
        notify = NotifyListener(tmpdir / "notify.sock")
        notify.read_always()
        log_path = tmpdir / "edged.log"
        cfg_path = tmpdir / "edged.toml"
        cfg_path.write_text(DEMO_CONFIG)
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
            asyncio.run(_client_steps(str(sock_path), tmpdir / "state" / "sim" / "receipt"))
            _step(14, "a technician checks the journal files, then the whole till (`edged doctor`; "
                      "outside the Debian package its user and udev rules are missing, and say so)")
            print(f"$ edged journal verify --state-dir {tmpdir / 'state'}")
            subprocess.run([sys.executable, "-m", "edged", "journal", "verify", "--state-dir",
                            str(tmpdir / "state")])
            print("$ edged doctor --config edged.toml --socket edged.sock --state-dir state")
            subprocess.run([sys.executable, "-m", "edged", "doctor", "--config", str(cfg_path), "--socket",
                            str(sock_path), "--state-dir", str(tmpdir / "state")])
        finally:
            _step(15, "stop it the way systemd does (SIGTERM)")
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


async def _client_steps(path: str, paper: Path) -> None:
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
        await _print_steps(client, path, paper)
        await _scan_step(path)
        _step(9, "the POS app appends a sale; edged answers after fdatasync, with the next receipt number")
        sale = {"kind": "sale", "body": {"total": 1250, "lines": [["Brot", 450], ["Käse", 800]]},
                "tx_id": "pos-7f3a-0001", "number": "receipt"}
        print(f"  append -> {await client.request('append', records=[sale])}")
        print(f"  the same tx_id again (a retry after a lost answer) -> {await client.request('append', records=[sale])}")
    async with await Client.connect(path, client="demo-sync") as sync:
        _step(10, "the sync layer subscribes from its last ack, receives records, acks them")
        print(f"  subscribe -> {await sync.request('subscribe', consumer='head-office', window=100, **{'from': 'acked'})}")
        last = await sync.request("consumers")
        while True:
            ev = await asyncio.wait_for(sync.events.get(), 5)
            print(f"  record seq {ev['seq']} {ev['kind']:<12} number={ev['number']} chain={ev['chain'].hex()[:16]}...")
            if ev["seq"] == last["last_seq"]:
                break
        print(f"  ack -> {await sync.request('ack', consumer='head-office', seq=ev['seq'])}")
        _step(11, "status now shows the journal, the consumer and who is connected")
        status = await sync.request("status")
        print(f"  journal {status['journal']}\n  consumers {status['consumers']}, lag {status['consumer_lag']}")
        print(format_status(status).split("\n\n")[-1], end="")
        print("  privileged ops (consumer_remove, drawer_open, day_close, export) need root, edged's user, or a")
        print("  user/group from daemon.privileged_users / privileged_groups; others get not_permitted.")
    await _sync_step(path)
    async with await Client.connect(path, client="demo-manager") as manager:
        await _day_step(manager, path, paper.parents[2] / "stick")


async def _sync_step(path: str) -> None:
    _step(12, "head office talks back: the network drops, a web order comes down to the POS app, one is "
              "picked up late (journal.overdue, then cleared), the sync layer catches up (`edged sync log`)")
    async with await Client.connect(path, client="demo-screen") as screen, \
            await Client.connect(path, client="demo-pos") as pos:
        await screen.request("watch", topics=["sync", "journal"])
        print(f"  the sync layer disconnected: event {_brief(await _next(screen, 'sync.state'))}")
        await pos.request("append", records=[{"kind": "stock.move", "body": {"item": "Brot", "qty": -1}},
                                             {"kind": "stock.move", "body": {"item": "Käse", "qty": -1}}])
        print("  the POS app journals two stock movements (stock.move: left out of exports, see step 13)")
        await pos.request("subscribe", consumer="pos", kinds=["order.web"], **{"from": "acked"})
        async with await Client.connect(path, client="demo-sync") as relay:
            for order in ("W-1001", "W-1002"):
                await relay.request("append", records=[{"kind": "order.web", "tx_id": f"web:{order}",
                                                        "body": {"order": order, "pickup": "16:30"}}])
            print("  the sync layer (back for a moment) appends web orders W-1001 and W-1002 (kind order.web)")
        first = await _next(pos, "record")
        print(f"  the POS app hears {first['body']['order']} (seq {first['seq']}) and acks it at once")
        await pos.request("ack", consumer="pos", seq=first["seq"])
        second = await _next(pos, "record")
        print(f"  it hears {second['body']['order']} (seq {second['seq']}) but the cashier is busy...")
        print(f"  event {_brief(await _next(screen, 'journal.overdue', 10))}")
        await pos.request("ack", consumer="pos", seq=second["seq"])
        print(f"  picked up: event {_brief(await _next(screen, 'journal.overdue_cleared'))}")
        _sync_lines(await pos.request("status"))
        async with await Client.connect(path, client="demo-sync") as relay:
            await relay.request("subscribe", consumer="head-office", **{"from": "acked"})
            print(f"  the sync layer is back: event {_brief(await _next(screen, 'sync.state'))}")
            last = (await relay.request("consumers"))["last_seq"]
            while (rec := await _next(relay, "record"))["seq"] < last:
                pass
            await relay.request("ack", consumer="head-office", seq=last)
            print(f"  relayed and acked up to seq {last}:")
            _sync_lines(await relay.request("status"))
    print("$ edged sync log", flush=True)
    subprocess.run([sys.executable, "-m", "edged", "sync", "log", "--socket", path])


def _sync_lines(status: dict) -> None:
    """`edged status`'s sync and deadline lines (systemd's STATUS= says the same in short)."""
    for line in format_status(status).splitlines():
        if line.startswith(("sync", "deadline")):
            print(f"  {line}")


async def _next(client: Client, name: str, timeout: float = 5) -> dict:
    while True:
        ev = await client.next_event(timeout)
        if ev["event"] == name:
            return ev


async def _day_step(client: Client, path: str, stick: Path) -> None:
    _step(13, "closing time: the day is closed, written to a USB stick (here a directory plugged in "
             "with `edged sim stick DIR`), verified and imported at head office")
    stick.mkdir()
    day = time.strftime("%Y-%m-%d")
    closed = await client.request("day_close", business_day=day)
    print(f"  day_close -> records {closed['first_seq']}..{closed['last_seq']}, counts {closed['counts']}, "
          f"numbers {closed['numbers']}, chain {closed['chain'][:16]}...")
    again = await client.request("day_close", business_day=day)
    print(f"  closing it again answers the same record: seq {again['seq']}, duplicate {again['duplicate']}")
    async with await Client.connect(path, client="demo-cashier-screen") as screen:
        await screen.request("watch", topics=["usb"])
        asked = await client.request("export", business_day=day)  # `edged export DATE`: onto a stick
        print(f"  export {day} -> queued {asked['queued']}, stick now {asked['stick'] or 'none'}")
        print(f"  event {_brief(await screen.next_event(5))}")
        plugged = await client.request("sim", stick=str(stick))
        print(f"  the cashier plugs in a stick: {plugged['plugged']['device']} ({plugged['plugged']['node']})")
        while True:
            ev = await screen.next_event(30)
            print(f"  event {_brief(ev)}")
            if ev.get("state") in ("done", "failed"):
                break
    for dirpath, _dirs, files in sorted(os.walk(stick)):
        for name in sorted(files):
            print(f"    {os.path.relpath(os.path.join(dirpath, name), stick)}")
    print(f"$ edged verify {stick}", flush=True)
    subprocess.run([sys.executable, "-m", "edged", "verify", str(stick)])
    archive = stick.parent / "head-office"
    for n in (1, 2):
        print(f"$ edged import {stick} --archive {archive}" + ("   # the same stick again: nothing added" if n == 2 else ""),
              flush=True)
        subprocess.run([sys.executable, "-m", "edged", "import", str(stick), "--archive", str(archive)])
    print(f"$ edged archive status {archive}", flush=True)
    subprocess.run([sys.executable, "-m", "edged", "archive", "status", str(archive)])


def _brief(ev: dict) -> str:
    return ev["event"] + " " + " ".join(f"{k}={v}" for k, v in ev.items()
                                        if k not in ("event", "export_id") and v not in (None, ""))


SAMPLE = {"blocks": [
    {"text": "Bäckerei Müller", "align": "center", "size": "double", "bold": True},
    {"text": "Hauptstraße 1 · 12345 Musterstadt", "align": "center"},
    {"rule": "-"},
    {"row": ["Roggenbrot 750 g", "4,50 €"]}, {"row": ["Smørrebrød (æ ø å)", "3,20 €"]},
    {"row": ["Käsekuchen, ein Stück mit Sahne und Früchten der Saison", "3,80 €"]},
    {"rule": "="}, {"row": ["SUMME", "11,50 €"]}, {"text": "bar 20,00 €  zurück 8,50 €", "align": "right"},
    {"barcode": "4006381333931", "type": "EAN13"},
    {"qr": "https://example.test/r/3000001?sum=11,50", "size": 4},
    {"text": "Vielen Dank!", "align": "center"}, {"cut": "partial"}],
    "open_drawer": True}


async def _print_steps(client: Client, path: str, paper: Path) -> None:
    _step(6, "the POS app prints a receipt that opens the drawer: journaled before the answer, "
             "done once the printer confirms it (GS r)")
    async with await Client.connect(path, client="demo-watcher") as watcher:
        await watcher.request("watch", topics=["printer", "drawer"])
        answer = await client.request("print", job_id="sale-3000001", document=SAMPLE)
        print(f"  print -> {answer}")
        while True:
            ev = await watcher.next_event(10)
            print(f"  event: {ev}")
            if ev["event"] == "drawer.state":
                break
        again = await client.request("print", job_id="sale-3000001", document=SAMPLE)
        print(f"  the same job_id again (a retry) -> state {again['state']}, duplicate {again['duplicate']}")
        print(f"\n  the simulated printer printed ({paper / '00001.txt'}):")
        for line in (paper / "00001.txt").read_text(encoding="utf-8").rstrip().splitlines():
            print(f"  | {line}")
        _step(7, "the cashier shuts the drawer; later a manager opens it (`edged drawer open`: privileged, "
                 "journaled with the reason and who asked)")
        await client.request("sim", set={"drawer_open": False})
        print(f"  event: {await _drawer_event(watcher)}")
        answer = await client.request("drawer_open", reason="change for the float")
        print(f"  drawer_open -> {answer}")
        print(f"  event: {await _drawer_event(watcher)}")
        await client.request("sim", set={"drawer_open": False})
        print(f"  event: {await _drawer_event(watcher)}")


async def _drawer_event(watcher: Client) -> dict:
    while True:
        ev = await watcher.next_event(10)
        if ev["event"].startswith("drawer."):
            return ev


async def _scan_step(path: str) -> None:
    _step(8, "the cashier scans two items; the POS app hears them (`edged scan send CODE` feeds the "
             "simulated scanners)")
    async with await Client.connect(path, client="demo-pos") as pos:
        await pos.request("watch", topics=["scanner"], kept=True)
        for code in ("]E04006381333931", "]C1010950600013435217211231\x1d10AB123"):
            await pos.request("sim", scan=code)
            ev = await pos.next_event(10)
            print(f"  scanner.scan: code {ev['code']!r} symbology {ev['symbology']} gs1 {ev['gs1']} valid {ev['valid']}")
        print("  the keyboard-wedge scanner (programmed German, QWERTZ) types key codes; edged reads them "
              "with libxkbcommon's de layout:")
        await pos.request("sim", scan="Zoo@Straße-42", device="wedge")
        ev = await pos.next_event(10)
        print(f"  scanner.scan: device {ev['device']} code {ev['code']!r}")
        answer = await pos.request("scan_layouts", device="wedge", layouts=["us", "gb", "de", "fr", "no"])
        print("  a technician unsure of the setting runs `edged scan layouts`: the same keys under other layouts")
        for layout, text in answer["read_as"].items():
            print(f"    {layout:<3} {text!r}" + ("   <- configured" if layout == answer["layout"] else ""))
