"""edged's kinds are edged's: clients cannot forge them, and a malformed one already in a journal
(an older edged let clients write them) never stops a start: logged, counted, skipped by its reader."""
from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged import config
from edged.client import BlockingClient, Client, ClientError
from edged.daemon import Daemon
from edged.journal import kinds
from edged.journal.disk import RealDisk
from edged.journal.store import Entry, Store
from edged.journal.verify import read_all
from other_user import answer
from other_user import as_user_async as as_user

DEADLINES = {"order.web": {"consumer": "pos", "within": 300}}


def _cfg(d: Path) -> config.Config:
    return config.from_dict({"till_id": "till-1", "deadlines": DEADLINES, "export": {"exclude_kinds": ["stock.move"]},
                             "daemon": {"socket": str(d / "s.sock"), "state_dir": str(d / "st")}})


FORGED = [*kinds.BODIES, "usb.inserted", "edged.anything", "day.", "print.job.x", "journal.lost"]


def test_a_client_cannot_append_any_of_edgeds_kinds(short_dir):
    async def scenario():
        async with Daemon(_cfg(short_dir)).parts() as daemon:
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:  # even root
                for kind in FORGED:
                    with pytest.raises(ClientError) as e:
                        await c.request("append", records=[{"kind": "sale", "body": 1},
                                                           {"kind": kind, "body": {"business_day": "2099-01-01"}}])
                    assert e.value.code == "bad_request" and repr(kind) in e.value.message, kind
                assert daemon.till.journal.last_seq == 0  # all or nothing: not even the sale
                # Kinds that only look like edged's are the clients'.
                for kind in ("day", "Day.close", "dayclose", "printer.status", "journal", "sale", "usb"):
                    r = await c.request("append", records=[{"kind": kind, "body": "x"}])
                    assert r["records"][0]["duplicate"] is False
                assert (await c.request("days"))["days"] == []
                with pytest.raises(ClientError) as e:  # head office's PostgreSQL archive cannot hold it
                    await c.request("append", records=[{"kind": "sa\0le", "body": 1}])
                assert e.value.code == "bad_request" and "NUL" in e.value.message
    asyncio.run(scenario())


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client under another uid")
def test_an_unprivileged_client_cannot_stop_edged_from_starting_again(short_dir):
    """The review's first finding: one append of day.exported with a non-map body killed every later start."""
    os.chmod(short_dir, 0o755)
    cfg = config.from_dict({"till_id": "till-1", "daemon": {"socket": str(short_dir / "s.sock"),
                                                            "state_dir": str(short_dir / "st"),
                                                            "socket_group": "nogroup"}})

    def forge(c):
        return [answer(c, "append", records=[{"kind": kind, "body": "not a map"}]) for kind in FORGED]

    async def scenario():
        async with Daemon(cfg).parts() as daemon:
            answers = await as_user(str(short_dir / "s.sock"), forge)
            assert {a.get("error") for a in answers} == {"bad_request"}
            assert daemon.till.journal.last_seq == 0
        async with Daemon(cfg).parts():  # and it starts again
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                assert (await c.request("status"))["degraded"]["skipped_records"] == 0
    asyncio.run(scenario())


def _plant(journal_dir: Path) -> dict[int, str]:
    """Records of edged's kinds that edged never wrote, written with the journal's own writer (as an
    older edged did when a client appended them). Returns seq -> the reader that must skip it."""
    store = Store(RealDisk(str(journal_dir)))
    store.open()
    close_2099 = {"business_day": "2099-12-31", "till_id": "till-1", "first_seq": 1, "last_seq": 2,
                  "counts": {}, "numbers": {}, "chain": bytes(32), "closed_at": 1.0}
    kick = {"blocks": [{"text": "free cash"}], "open_drawer": True}
    planted = [
        (Entry("sale", {"total": 1}), None),
        (Entry("day.exported", "not a map"), "days"),  # once made every later start die
        (Entry("day.close", close_2099), "days"),  # no tx_id: not what edged writes
        (Entry("print.job", {"job_id": "kick", "printer": "receipt", "document": kick}), "print jobs"),
        (Entry("print.job", {"job_id": "both", "printer": "receipt", "document": kick, "raw": b"x"},
               tx_id="print:both"), "print jobs"),
        (Entry("print.job", {"job_id": "bad", "printer": "receipt", "document": {"blocks": "x"}},
               tx_id="print:bad"), "print jobs"),
        (Entry("print.state", ["not", "a", "map"]), "print jobs"),
        (Entry("print.state", {"job_id": "bad", "state": "exploded"}), "print jobs"),
        (Entry("journal.overdue", 42), "deadlines"),
        (Entry("journal.overdue_cleared", {"seq": "x"}), "deadlines"),
        (Entry("drawer.open", None), None),  # nothing reads it back
        (Entry("day.exported", {"business_day": "2026-11-18", "path": "/made/up", "manifest_sha256": "0",
                                "first_seq": 1, "last_seq": 2, "export_id": "x"}), "days"),  # never closed
        (Entry("usb.inserted", {"device": 1}), None),
    ]
    results = store.append([[entry for entry, _ in planted]])[0]
    store.close()
    return {a.seq: reader for a, (_, reader) in zip(results, planted) if reader}


def _start(state: Path, sock: Path, cfg: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--simulate", "--config", str(cfg),
                             "--state-dir", str(state), "--socket", str(sock)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return proc
        except OSError:
            assert proc.poll() is None, f"edged did not start:\n{proc.stderr.read()}"
            assert time.monotonic() < deadline, "edged did not start in 30 s"
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> str:
    proc.terminate()
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_malformed_records_of_edgeds_kinds_never_stop_a_start(short_dir):
    skipped = _plant(short_dir / "st" / "journal")
    cfg = short_dir / "edged.toml"
    cfg.write_text('till_id = "till-1"\n[deadlines."order.web"]\nconsumer = "pos"\nwithin = 300\n')
    out = short_dir / "out"
    out.mkdir()
    proc = _start(short_dir / "st", short_dir / "s.sock", cfg)
    try:
        with BlockingClient.connect(str(short_dir / "s.sock"), "pos") as c:
            status = c.request("status")
            found = status["degraded"]["records"]
            assert status["degraded"]["skipped_records"] == len(skipped)
            assert {r["seq"]: r["reader"] for r in found} == skipped
            assert next(r for r in found if r["seq"] == 2)["problem"] == "body is str, not a map"
            # It serves: appends, closes a day (the forged 2099 close does not count), exports, prints.
            c.request("append", records=[{"kind": "sale", "body": {"total": 2}}])
            closed = c.request("day_close", business_day="2026-11-19")
            assert closed["duplicate"] is False
            c.request("export", business_day="2026-11-19", target=str(out))
            days = c.request("days")["days"]
            assert [(d["business_day"], d["exported"]["path"]) for d in days] == [
                ("2026-11-19", str(out / "EDGED" / "till-1" / "20261119"))]
            c.request("print", job_id="real", raw=b"real\n\x1dV\x00")
            while c.request("job", job_id="real")["state"] != "done":
                time.sleep(0.05)
            with pytest.raises(ClientError) as e:  # the malformed job is not a job
                c.request("job", job_id="both")
            assert e.value.code == "not_found"
            assert c.request("jobs")["counts"] == {"done": 1}
    finally:
        err = _stop(proc)
    for seq, reader in skipped.items():
        assert f"journal record {seq} (" in err and f"skipped by {reader}" in err
    assert "Traceback" not in err
    receipts = os.listdir(short_dir / "st" / "sim" / "receipt")
    assert len(receipts) == 1  # the forged kick job never printed
    kinds_written = [r.kind for r in read_all(RealDisk(str(short_dir / "st" / "journal"))) if r.seq > 13]
    assert "drawer.open" not in kinds_written


# Kinds a client may write: edged's readers never look into them, whatever their bodies hold.
_WRITABLE = st.one_of(st.sampled_from(["sale", "order.web", "stock.move", "day", "Day.close", "printer.status",
                                       "journal", "usb", "print", "dayexported", "drawer"]),
                      st.text(min_size=1, max_size=12).filter(lambda k: not kinds.reserved(k) and "\0" not in k))
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**64 - 1) | st.floats() | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12)
_RECORDS = st.lists(st.tuples(_WRITABLE, _VALUES, st.none() | st.text(min_size=1, max_size=16)),
                    min_size=1, max_size=12)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(records=_RECORDS)
def test_random_bodies_of_client_kinds_never_stop_a_start(records):
    d = Path(tempfile.mkdtemp(prefix="edged-hk-", dir="/tmp"))
    try:
        asyncio.run(_append_restart_serve(d, records))
    finally:
        shutil.rmtree(d, ignore_errors=True)


async def _append_restart_serve(d: Path, records: list) -> None:
    path = str(d / "s.sock")
    (d / "out").mkdir()
    async with Daemon(_cfg(d)).parts():
        async with await Client.connect(path, "pos") as c:
            await c.request("subscribe", consumer="pos", kinds=["order.web"], **{"from": 1})
            for kind, body, tx_id in records:
                await c.request("append", records=[{"kind": kind, "body": body,
                                                    **({"tx_id": tx_id} if tx_id else {})}])
            await c.request("day_close", business_day="2026-11-19")
            for kind, body, _tx_id in records:  # and some into the next day, read at the next start
                await c.request("append", records=[{"kind": kind, "body": body}])
    async with Daemon(_cfg(d)).parts():
        async with await Client.connect(path, "pos") as c:
            status = await c.request("status")
            assert status["degraded"] == {"skipped_records": 0, "records": []}
            assert status["journal"]["state"] == "ok"
            await c.request("append", records=[{"kind": "sale", "body": 1}])
            closed = await c.request("day_close", business_day="2026-11-20")
            assert closed["counts"]["sale"] >= 1 and closed["duplicate"] is False
            assert [x["business_day"] for x in (await c.request("days"))["days"]] == ["2026-11-19", "2026-11-20"]
            export = await c.request("export", business_day="2026-11-19", target=str(d / "out"))
            assert export["business_day"] == "2026-11-19"
