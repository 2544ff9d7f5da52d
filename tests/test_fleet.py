"""The journal online to head office (docs/FLEET.md), with real processes: edged (`run --simulate`),
a real Mosquitto on loopback, `edged relay` and `edged headoffice ingest` as the CLI starts them,
the archive in SQLite. What head office holds is compared byte for byte with the till's journal."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brokers import Mosquitto, need_mosquitto
from edged.bench.common import edged_run
from edged.client import Client

REPO = Path(__file__).resolve().parents[1]
TILL = "shop1-till1"


def _edged(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "edged", *args], env=env, stdout=kw.pop("stdout", None),
                            stderr=subprocess.STDOUT, start_new_session=True, **kw)


class Fleet:
    """One till (edged + relay) and head office (ingest + archive) around one broker."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.state, self.sock, self.archive = base / "state", str(base / "s.sock"), base / "archive"
        self.cfg = base / "edged.toml"
        self.cfg.write_text(f'till_id = "{TILL}"\n')
        self.broker = Mosquitto(base / "broker")
        self.procs: dict[str, subprocess.Popen] = {}

    def logs(self, name: str) -> str:
        try:
            return (self.base / f"{name}.log").read_text()[-3000:]
        except FileNotFoundError:
            return ""

    def start(self, name: str, *args: str) -> subprocess.Popen:
        proc = _edged(*args, stdout=open(self.base / f"{name}.log", "ab"))
        self.procs[name] = proc
        return proc

    def relay(self) -> subprocess.Popen:
        return self.start("relay", "relay", "--broker", self.broker.url, "--socket", self.sock)

    def ingest(self, name: str = "ingest") -> subprocess.Popen:
        return self.start(name, "headoffice", "ingest", "--archive", str(self.archive), "--broker", self.broker.url,
                          "--client-id", name)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(10)

    def stop_all(self) -> None:
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)

    def enroll(self) -> None:
        ident = json.loads((self.state / "identity" / "identity.json").read_text())
        out = subprocess.run([sys.executable, "-m", "edged", "archive", "enroll", str(self.archive), TILL,
                              ident["public_key"]], capture_output=True, text=True, env={**os.environ,
                                                                                          "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stdout + out.stderr

    def archived(self) -> list[tuple[int, bytes]]:
        if not (self.archive / "archive.sqlite").exists():
            return []
        db = sqlite3.connect(self.archive / "archive.sqlite", timeout=30)
        try:
            return [(s, bytes(f)) for s, f in db.execute("SELECT seq, frame FROM records WHERE till=? ORDER BY seq",
                                                         (TILL,))]
        except sqlite3.OperationalError:  # the ingest has not made the tables yet
            return []
        finally:
            db.close()

    def wait_archived(self, last_seq: int, timeout: float = 120) -> list[tuple[int, bytes]]:
        deadline = time.monotonic() + timeout
        while True:
            rows = self.archived()
            if rows and rows[-1][0] >= last_seq and len(rows) >= last_seq:
                return rows
            if time.monotonic() > deadline:
                raise AssertionError(f"archived {len(rows)} records (last {rows[-1][0] if rows else None}), "
                                     f"expected through {last_seq}\nrelay: {self.logs('relay')}\n"
                                     f"ingest: {self.logs('ingest')}")
            time.sleep(0.2)


async def _append(sock: str, n: int, start: int = 0) -> int:
    """n sales, 200 per request; the last seq."""
    async with await Client.connect(sock, "pos") as pos:
        last = 0
        for i in range(start, start + n, 200):
            r = await pos.request("append", records=[{"kind": "sale", "tx_id": f"s{j}", "body": {"n": j, "pad": "x" * 150}}
                                                     for j in range(i, min(i + 200, start + n))])
            last = r["records"][-1]["seq"]
        return last


async def _journal(sock: str) -> list[tuple[int, bytes]]:
    """Every frame of the journal, read as a frames subscriber of its own."""
    async with await Client.connect(sock, "check") as c:
        info = await c.request("hello", protocol=1, client="check")
        last = info["journal"]["last_seq"]
        await c.request("subscribe", consumer="test-check", **{"from": 1}, frames=True, window=100_000, batch=5000)
        out: list[tuple[int, bytes]] = []
        while not out or out[-1][0] < last:
            ev = await c.next_event()
            if ev.get("event") == "frames":
                out += list(zip(range(ev["first_seq"], ev["last_seq"] + 1), ev["frames"]))
        return out


async def _acked(sock: str) -> int:
    async with await Client.connect(sock, "check") as c:
        return (await c.request("consumers"))["consumers"].get("head-office", {}).get("acked", 0)


@pytest.fixture
def fleet(short_dir):
    need_mosquitto()
    f = Fleet(short_dir)
    f.broker.start()
    try:
        with edged_run(str(f.cfg), str(f.state), f.sock, simulate=True):
            deadline = time.monotonic() + 60
            while not os.path.exists(f.sock) or not (f.state / "identity" / "identity.json").exists():
                assert time.monotonic() < deadline, "edged did not start"
                time.sleep(0.1)
            f.enroll()
            yield f
    finally:
        f.stop_all()
        f.broker.stop()


def test_sales_reach_head_office_byte_for_byte_and_edged_is_acked_after_the_commit(fleet):
    fleet.ingest()
    fleet.relay()
    last = asyncio.run(_append(fleet.sock, 1000))
    rows = fleet.wait_archived(last)
    journal = asyncio.run(_journal(fleet.sock))
    assert rows == journal[:len(rows)] and [s for s, _ in rows] == list(range(1, len(rows) + 1))
    deadline = time.monotonic() + 30
    while asyncio.run(_acked(fleet.sock)) < last:  # edged's cursor follows head office's archive
        assert time.monotonic() < deadline, fleet.logs("relay")
        time.sleep(0.2)


def test_broker_down_sales_go_on_and_head_office_catches_up_without_loss(fleet):
    fleet.ingest()
    fleet.relay()
    first = asyncio.run(_append(fleet.sock, 400))
    fleet.wait_archived(first)
    fleet.broker.stop()
    last = asyncio.run(_append(fleet.sock, 3000, start=400))  # edged acks every sale while the broker is gone
    assert asyncio.run(_acked(fleet.sock)) <= first
    time.sleep(1)
    fleet.broker.start()  # same port, nothing persisted: the till's journal was the buffer
    rows = fleet.wait_archived(last)
    assert [s for s, _ in rows] == list(range(1, last + 1))
    assert rows == asyncio.run(_journal(fleet.sock))[:last]


def test_killed_relay_and_ingest_lose_nothing_and_store_nothing_twice(fleet):
    fleet.ingest()
    fleet.relay()
    total = 0
    for round_ in range(3):
        total = asyncio.run(_append(fleet.sock, 1500, start=round_ * 1500))
        time.sleep(0.3 + 0.2 * round_)
        fleet.kill("relay")
        fleet.kill("ingest")
        fleet.ingest()
        fleet.relay()
    rows = fleet.wait_archived(total)
    assert [s for s, _ in rows] == list(range(1, total + 1))  # the key (till, seq): nothing twice
    assert rows == asyncio.run(_journal(fleet.sock))[:total]
