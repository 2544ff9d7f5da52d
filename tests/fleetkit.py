"""The fleet the online tests run: one till (edged + relay) and head office (ingest + archive)
around a real Mosquitto, the archive in SQLite or a real PostgreSQL (tests/conftest.py). The
`fleet` fixture is registered in conftest.py, for tests/test_fleet.py and tests/test_downstream.py."""
from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from brokers import FLEET_ACL, Mosquitto, Pki, need_mosquitto
from edged.bench.common import edged_run
from edged.client import Client
from edged.day import archive

REPO = Path(__file__).resolve().parents[1]
TILL = "shop1-till1"


def _edged(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "edged", *args], env=env, stdout=kw.pop("stdout", None),
                            stderr=subprocess.STDOUT, start_new_session=True, **kw)


class Fleet:
    """One till (edged + relay) and head office (ingest + archive) around one broker."""

    def __init__(self, base: Path, archive: str, tls: bool = False, extra: str = "") -> None:
        self.base, self.archive = base, archive  # a directory (SQLite) or a postgresql:// URL
        self.state, self.sock = base / "state", str(base / "s.sock")
        self.cfg = base / "edged.toml"
        # ack_timeout: a batch whose ack an ingest killed mid-way never sent comes again after 2 s, not 10
        self.relay_state = base / "relay-state"
        self.cfg.write_text(f'till_id = "{TILL}"\n[relay]\nack_timeout = 2\nstate_dir = "{self.relay_state}"\n{extra}')
        self.pki = Pki(base / "pki") if tls else None
        self.broker = Mosquitto(base / "broker", acl=FLEET_ACL if tls else None, pki=self.pki)
        self.procs: dict[str, subprocess.Popen] = {}

    def creds(self, cn: str) -> list[str]:
        """--ca/--cert/--key for a client whose certificate says CN (nothing without TLS)."""
        if self.pki is None:
            return []
        cert, key = self.pki.issue(cn)
        return ["--ca", self.pki.ca, "--cert", cert, "--key", key]

    def logs(self, name: str) -> str:
        try:
            return (self.base / f"{name}.log").read_text()[-20000:]
        except FileNotFoundError:
            return ""

    def start(self, name: str, *args: str) -> subprocess.Popen:
        proc = _edged(*args, stdout=open(self.base / f"{name}.log", "ab"))
        self.procs[name] = proc
        return proc

    def relay(self) -> subprocess.Popen:
        return self.start("relay", "relay", "--config", str(self.cfg), "--broker", self.broker.url, "--socket", self.sock,
                          *self.creds(TILL))

    def ingest(self, name: str = "ingest") -> subprocess.Popen:
        """An ingest, returned once it is subscribed (what the relay publishes before is not lost,
        but comes again only when the relay tries again)."""
        seen = self.logs(name).count("mqtt: subscribed")
        settings = self.base / "headoffice.toml"  # as the package's edged-ingest.service reads it
        settings.write_text(f'[ingest]\narchive = "{self.archive}"\nbroker = "{self.broker.url}"\n')
        proc = self.start(name, "headoffice", "ingest", "--config", str(settings),
                          "--client-id", "ingest" if self.pki else name, *self.creds("ingest"))
        deadline = time.monotonic() + 30
        while self.logs(name).count("mqtt: subscribed") <= seen:
            assert proc.poll() is None and time.monotonic() < deadline, self.logs(name)
            time.sleep(0.05)
        return proc

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
        out = subprocess.run([sys.executable, "-m", "edged", "archive", "enroll", self.archive, TILL,
                              ident["public_key"]], capture_output=True, text=True, env={**os.environ,
                                                                                          "PYTHONPATH": str(REPO)})
        assert out.returncode == 0, out.stdout + out.stderr

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        """Rows of the archive, read as head office's commands read it (SQLite's file or PostgreSQL)."""
        db = archive.open_archive(self.archive)
        try:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in db.execute(sql, params).fetchall()]
        finally:
            db.close()

    def archived(self) -> list[tuple[int, bytes]]:
        return [(s, bytes(f)) for s, f in self.query("SELECT seq, frame FROM records WHERE till=? ORDER BY seq",
                                                      (TILL,))]

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


async def _append(sock: str, n: int, start: int = 0, pause: float = 0) -> int:
    """n sales, 200 per request (`pause` s between requests); the last seq."""
    async with await Client.connect(sock, "pos") as pos:
        last = 0
        for i in range(start, start + n, 200):
            r = await pos.request("append", records=[{"kind": "sale", "tx_id": f"s{j}", "body": {"n": j, "pad": "x" * 150}}
                                                     for j in range(i, min(i + 200, start + n))])
            last = r["records"][-1]["seq"]
            await asyncio.sleep(pause)
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
def fleet(short_dir, request):
    """param: {"tls": True} for mutual TLS and the per-till ACL, {"archive": "postgresql"} for a
    PostgreSQL archive (else a directory: SQLite)."""
    need_mosquitto()
    param = getattr(request, "param", {})
    where = str(short_dir / "archive")
    if param.get("archive") == "postgresql":
        where = request.getfixturevalue("postgres").create_database(f"fleet{next(_databases)}")
    f = Fleet(short_dir, where, tls=param.get("tls", False), extra=param.get("config", ""))
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


_databases = iter(range(1, 1_000_000))
BOTH = pytest.mark.parametrize("fleet", [{}, {"archive": "postgresql"}], indirect=True, ids=["sqlite", "postgresql"])
POSTGRES = pytest.mark.parametrize("fleet", [{"archive": "postgresql"}], indirect=True, ids=["postgresql"])
