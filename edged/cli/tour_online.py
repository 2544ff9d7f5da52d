"""`edged demo`, step 16: the till online to head office (docs/FLEET.md). A Mosquitto the demo
starts on loopback, head office's ingest into the archive of step 14, and `edged relay`: a sale
reaches head office in milliseconds; with the broker stopped, sales go on and wait in the journal;
the broker back, the archive catches up and equals the till's journal.
"""
from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time

from ..client import Client
from ..fleet.localbroker import MOSQUITTO, LocalBroker, stop_process
from .tour_steps import DemoTill, step

TILL = "demo-till-1"


def _until(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _archived(till: DemoTill) -> tuple[int, int]:
    """(records, highest seq) of the demo till in head office's archive."""
    db = sqlite3.connect(till.root / "head-office" / "archive.sqlite", timeout=10)
    try:
        n, top = db.execute("SELECT count(*), max(seq) FROM records WHERE till=?", (TILL,)).fetchone()
        return n, top or 0
    finally:
        db.close()


async def _sales(till: DemoTill, n: int) -> int:
    async with await Client.connect(till.socket, client="pos") as pos:
        last = 0
        for i in range(n):
            r = await pos.request("append", records=[{"kind": "sale", "body": {"total": 450 + i}}])
            last = r["records"][0]["seq"]
        return last


async def _lag(till: DemoTill) -> tuple[int, int]:
    async with await Client.connect(till.socket, client="demo-check") as c:
        r = await c.request("consumers")
        ho = r["consumers"].get("head-office", {})
        return ho.get("acked", 0), ho.get("lag", 0)


def online_steps(till: DemoTill) -> None:
    step(16, "online to head office: edged relay over MQTT (docs/FLEET.md); edged's cursor moves only when "
             "head office has the records in its archive")
    if not os.path.exists(MOSQUITTO):
        print(f"  skipped: no MQTT broker here ({MOSQUITTO}: the Debian package mosquitto, which `make demo` "
              "installs)")
        return
    broker = LocalBroker(till.root / "broker")
    procs: list[subprocess.Popen] = []
    try:
        with till.held():  # a stop signal meanwhile would leave it running unowned
            broker.start()
        till.check_stop()
        url = broker.url
        print(f"  a Mosquitto on {url} (loopback only; in a shop: mqtts:// with the till's certificate)")
        log = open(till.root / "online.log", "w")
        for argv in (["headoffice", "ingest", "--archive", "head-office", "--broker", url],
                     ["relay", "--config", "edged.toml", "--broker", url, "--socket", "edged.sock", "--state",
                      "relay-state"]):
            print("$ edged " + " ".join(argv) + " &")
            procs.append(till.spawn([sys.executable, "-m", "edged", *argv], stdout=log, stderr=subprocess.STDOUT))
            till.check_stop()
            if argv[0] == "headoffice":  # listening before the relay sends
                _until(lambda: "mqtt: subscribed" in (till.root / "online.log").read_text(), 15)
        before = asyncio.run(_lag(till))
        _until(lambda: asyncio.run(_lag(till))[1] == 0, 30)
        print(f"  the relay caught up from edged's cursor {before[0]} (lag {before[1]}): head office has "
              f"{_archived(till)[0]} records of {TILL}")
        t0 = time.monotonic()
        seq = asyncio.run(_sales(till, 1))
        _until(lambda: _archived(till)[1] >= seq, 10)
        print(f"  a sale (seq {seq}) reached head office's archive {1000 * (time.monotonic() - t0):.0f} ms after the "
              "POS app appended it")
        _until(lambda: asyncio.run(_lag(till))[1] == 0, 10)  # its ack back at edged too, or it would wait below
        broker.stop()
        print("  the broker stopped (the network gone): sales go on, edged acks each one once it is on disk")
        seq = asyncio.run(_sales(till, 50))
        acked, lag = asyncio.run(_lag(till))
        print(f"  50 sales later (last seq {seq}): head-office acked through {acked}, {lag} records wait in "
              "the journal")
        with till.held():
            broker.start()
        till.check_stop()
        t0 = time.monotonic()
        _until(lambda: asyncio.run(_lag(till))[1] == 0, 60)
        n, top = _archived(till)
        print(f"  the broker back: caught up in {time.monotonic() - t0:.1f} s; head office holds {n} records of "
              f"{TILL} through seq {top}, the till's journal ends at seq {seq}")
        till.cli("archive", "status", "head-office")
        _talks_back(till)
    finally:
        for proc in procs:
            stop_process(proc)
        broker.stop()


async def _pos_takes(till: DemoTill, pos: Client) -> tuple[list[dict], int]:
    """The POS app: a consumer of head office's kinds; what it gets until it has the order and price
    list 2 (list 1 too when it went out before list 2 was queued; else it was superseded), and the
    last seq it got: it acks nothing yet (acks go by seq: the cashier has not taken the order over)."""
    await pos.request("subscribe", consumer="pos", kinds=["order.web", "prices.list"], **{"from": "acked"})
    got: list[dict] = []

    def wanted(e: dict) -> object:
        return e["body"].get("order") if e["kind"] == "order.web" else e["body"].get("version")

    while not {"W-1001", 2} <= {wanted(e) for e in got}:
        ev = await pos.next_event(30)
        if ev.get("event") == "record":
            got.append(ev)
    return got, max(e["seq"] for e in got)


def _alerts(till: DemoTill) -> tuple[int, int]:
    """(open, cleared) alerts of the demo till in head office's archive."""
    db = sqlite3.connect(till.root / "head-office" / "archive.sqlite", timeout=10)
    try:
        return db.execute("SELECT count(*) FILTER (WHERE cleared_seq IS NULL AND overdue_seq > 0), "
                          "count(*) FILTER (WHERE cleared_seq IS NOT NULL) FROM alerts WHERE till=?",
                          (TILL,)).fetchone()
    except sqlite3.OperationalError:  # no alerts table yet
        return 0, 0
    finally:
        db.close()


def _talks_back(till: DemoTill) -> None:
    """Head office's outbox down to the till: a web order for this till, two price lists for every till
    (the second supersedes the first), each once in the journal, read by the POS app by kind; the
    order taken over late, so head office sees the alert come and go."""
    print("  head office talks back: records queued in its outbox go down to the till, once each, in order")
    (till.root / "order.json").write_text('{"order": "W-1001", "pickup": "16:30", "lines": [["Brot", 1]]}')
    (till.root / "prices-1.json").write_text('{"version": 1, "Brot": 450}')
    (till.root / "prices-2.json").write_text('{"version": 2, "Brot": 480}')
    till.cli("headoffice", "send", "--till", TILL, "order.web", "order.json", "--expires-in", "30d",
             "--archive", "head-office")
    for n in (1, 2):
        till.cli("headoffice", "send", "--all", "prices.list", f"prices-{n}.json", "--collapse", "prices",
                 "--archive", "head-office")

    async def pos_app() -> tuple[list[dict], int]:
        async with await Client.connect(till.socket, client="pos") as pos:
            return await asyncio.wait_for(_pos_takes(till, pos), 30)

    try:
        got, last = asyncio.run(pos_app())
    except TimeoutError:
        print("  the POS app did not get the order and price list 2 within 30 s (see online.log)")
        return
    for ev in got:
        print(f"  the POS app got seq {ev['seq']}: {ev['kind']} (tx_id {ev['tx_id']}) "
              f"{json.dumps(ev['body'], ensure_ascii=False)}")
    till.cli("headoffice", "status", "--archive", "head-office")
    print("  the cashier is busy: the order is not taken over within its deadline (2 s here), so the till "
          "raises journal.overdue, and head office hears it with the journal")
    _until(lambda: _alerts(till)[0] > 0, 15)
    till.cli("headoffice", "alerts", "--archive", "head-office")

    async def pick_up() -> None:
        async with await Client.connect(till.socket, client="pos") as pos:
            await pos.request("ack", consumer="pos", seq=last)

    asyncio.run(pick_up())
    _until(lambda: _alerts(till) == (0, 1), 15)
    print("  picked up now: journal.overdue_cleared goes up too")
    till.cli("headoffice", "alerts", "--all", "--archive", "head-office")
