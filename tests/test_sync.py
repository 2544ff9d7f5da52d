"""Sync health and two-way flows: downstream records by kind, pickup deadlines (once, across a
restart, cleared on ack), sync state online -> offline -> online with its lag, the sync log."""
from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edged import config
from edged.cli.sync import parse_time
from edged.client import Client, ClientError
from edged.daemon import Daemon


def _cfg(d: Path, **more) -> config.Config:
    return config.from_dict({"till_id": "till-9", "daemon": {"socket": str(d / "s.sock"), "state_dir": str(d / "st")},
                             **more})


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *map(str, args)], capture_output=True, text=True,
                          timeout=60)


async def _event(c: Client, name: str, timeout: float = 10.0, **match) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        ev = await c.next_event(max(deadline - time.monotonic(), 0.01))
        if ev["event"] == name and all(ev.get(k) == v for k, v in match.items()):
            return ev


async def _records(path: str, kinds: list[str]) -> list[dict]:
    """Every record of these kinds, read as a throwaway consumer (removed afterwards)."""
    async with await Client.connect(path, "reader") as c:
        last = (await c.request("consumers"))["last_seq"]
        await c.request("subscribe", consumer="audit-reader", **{"from": 1}, window=100000)
        out = []
        while last and (not out or out[-1]["seq"] < last):
            ev = await c.next_event(5)
            if ev["event"] == "record":
                out.append(ev)
            if ev["event"] == "record" and ev["seq"] >= last:
                break
        await c.request("consumer_remove", consumer="audit-reader")
    return [r for r in out if r["kind"] in kinds]


def test_downstream_records_reach_the_pos_by_kind(short_dir):
    """The sync layer appends what head office sends; the POS hears only those kinds, acks them,
    and its lag counts only them while it keeps appending sales."""
    async def scenario():
        async with Daemon(_cfg(short_dir)).parts() as daemon:
            path = str(short_dir / "s.sock")
            async with await Client.connect(path, "sync") as sync, await Client.connect(path, "pos") as pos:
                await pos.request("append", records=[{"kind": "sale", "body": {"total": 100}}])
                sent = await sync.request("append", records=[
                    {"kind": "order.web", "body": {"order": "W-1", "lines": [["coffee", 2]]}, "tx_id": "ho:W-1"},
                    {"kind": "voucher.changed", "body": {"code": "V9", "value": 500}, "tx_id": "ho:V9"},
                    {"kind": "price.list", "body": {"rows": 3}, "tx_id": "ho:P1"}])
                orders = [r["seq"] for r in sent["records"]]
                await pos.request("subscribe", consumer="pos", **{"from": "acked"},
                                  kinds=["order.web", "voucher.changed"])
                got = [await _event(pos, "record") for _ in range(2)]
                assert [(r["kind"], r["tx_id"]) for r in got] == [("order.web", "ho:W-1"), ("voucher.changed", "ho:V9")]
                assert got[0]["body"] == {"order": "W-1", "lines": [["coffee", 2]]}
                st = (await pos.request("status"))["sync"]["pos"]
                assert st["kinds"] == ["order.web", "voucher.changed"] and st["lag"] == 2 and st["state"] == "online"
                await pos.request("ack", consumer="pos", seq=got[0]["seq"])
                assert (await pos.request("status"))["sync"]["pos"]["lag"] == 1
                await pos.request("ack", consumer="pos", seq=got[1]["seq"])
                for i in range(5):  # the POS's own sales are not its lag
                    await pos.request("append", records=[{"kind": "sale", "body": {"total": i}}])
                st = (await pos.request("status"))["sync"]["pos"]
                assert st["lag"] == 0 and st["lag_age"] is None and st["acked"] == orders[1]
                # The same kind sent again (a retry by the sync layer) is one record.
                again = await sync.request("append", records=[{"kind": "order.web", "body": {"order": "W-1"},
                                                               "tx_id": "ho:W-1"}])
                assert again["records"][0] == {"seq": orders[0], "duplicate": True}
                assert (await pos.request("status"))["sync"]["pos"]["lag"] == 0
                assert "sync pos: online, lag 0" in daemon.till.summary()
                # edged's own kinds cannot be appended by a client (they would forge overdue reports).
                with pytest.raises(ClientError, match="kinds starting with 'journal.' are written by edged only"):
                    await sync.request("append", records=[{"kind": "journal.overdue", "body": {}}])
        # After a restart, pos's lag is still counted over its kinds.
        async with Daemon(_cfg(short_dir)).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "sync") as sync:
                await sync.request("append", records=[{"kind": "order.web", "body": {"order": "W-2"}},
                                                      {"kind": "sale", "body": {}}])
                st = (await sync.request("status"))["sync"]["pos"]
                assert (st["lag"], st["state"], st["kinds"]) == (1, "offline", ["order.web", "voucher.changed"])
                assert st["last_ack"] is not None  # from the sync log
    asyncio.run(scenario())


def test_deadline_fires_once_survives_restart_and_clears(short_dir):
    cfg = lambda: _cfg(short_dir, deadlines={"order.web": {"consumer": "pos", "within": 1}})  # noqa: E731
    path = str(short_dir / "s.sock")

    async def scenario():
        async with Daemon(cfg()).parts():
            async with await Client.connect(path, "sync") as sync, await Client.connect(path, "watcher") as w:
                await w.request("watch", topics=["journal"])
                (a,) = (await sync.request("append", records=[{"kind": "order.web", "body": {"order": "A"}}]))["records"]
                ev = await _event(w, "journal.overdue", timeout=5)
                assert (ev["seq"], ev["kind"], ev["consumer"], ev["within"]) == (a["seq"], "order.web", "pos", 1.0)
                assert ev["due_at"] - ev["appended_at"] == 1.0
                await asyncio.sleep(2.5)  # fired once: nothing more while it stays overdue
                more = [e for e in _drain(w) if e["event"] == "journal.overdue"]
                assert more == []
                st = (await sync.request("status"))["deadlines"]["order.web"]
                assert st == {"consumer": "pos", "within": 1.0, "waiting": 1, "overdue": [a["seq"]]}
                (b,) = (await sync.request("append", records=[{"kind": "order.web", "body": {"order": "B"}}]))["records"]
        await asyncio.sleep(1.5)  # B falls due while edged is down
        state = short_dir / "st" / "journal" / "deadlines"
        for n in range(2):  # reported once after the first restart, not again after the second
            async with Daemon(cfg()).parts() as daemon:
                await asyncio.sleep(1.5)
                assert daemon.till.deadlines.describe()["order.web"]["overdue"] == [a["seq"], b["seq"]]
                assert "2 overdue" in daemon.till.summary()
            if n == 0:  # as if power went between a journal.overdue record and the state file
                state.unlink()
        async with Daemon(cfg()).parts():
            overdue = await _records(path, ["journal.overdue"])
            assert [r["body"]["seq"] for r in overdue] == [a["seq"], b["seq"]]  # exactly one each
            async with await Client.connect(path, "pos") as pos, await Client.connect(path, "watcher") as w:
                await w.request("watch", topics=["journal"])
                await pos.request("subscribe", consumer="pos", **{"from": 1}, kinds=["order.web"])
                got = [await _event(pos, "record") for _ in range(2)]
                assert [r["body"] for r in got] == [{"order": "A"}, {"order": "B"}]  # the records are untouched
                await pos.request("ack", consumer="pos", seq=got[0]["seq"])
                cleared = await _event(w, "journal.overdue_cleared", timeout=5)
                assert (cleared["seq"], cleared["overdue_seq"]) == (a["seq"], overdue[0]["seq"])
                assert cleared["late_by"] > 0
                await pos.request("ack", consumer="pos", seq=got[1]["seq"])
                assert (await _event(w, "journal.overdue_cleared", timeout=5))["seq"] == b["seq"]
                assert (await pos.request("status"))["deadlines"]["order.web"]["overdue"] == []
            await asyncio.sleep(0.3)
        state.unlink()  # the clears, too, are found in the journal: not written twice
        async with Daemon(cfg()).parts() as daemon:
            await asyncio.sleep(1.5)
            assert daemon.till.deadlines.describe()["order.web"]["overdue"] == []
            cleared = await _records(path, ["journal.overdue_cleared"])
            assert [r["body"]["seq"] for r in cleared] == [a["seq"], b["seq"]]
            # An order picked up in time raises nothing.
            async with await Client.connect(path, "sync") as sync:
                (c,) = (await sync.request("append", records=[{"kind": "order.web", "body": {"order": "C"}}]))["records"]
                await sync.request("ack", consumer="pos", seq=c["seq"])
                await asyncio.sleep(1.5)
                assert [r["body"]["seq"] for r in await _records(path, ["journal.overdue"])] == [a["seq"], b["seq"]]
                # The POS consumer removed: what it had picked up is not overdue after a restart.
                await sync.request("consumer_remove", consumer="pos")
            await asyncio.sleep(0.3)
        async with Daemon(cfg()).parts() as daemon:
            await asyncio.sleep(1.5)
            assert daemon.till.deadlines.describe()["order.web"] == {"consumer": "pos", "within": 1.0,
                                                                    "waiting": 0, "overdue": []}
            assert [r["body"]["seq"] for r in await _records(path, ["journal.overdue"])] == [a["seq"], b["seq"]]
    asyncio.run(scenario())


def _drain(c: Client) -> list[dict]:
    out = []
    while not c.events.empty():
        out.append(c.events.get_nowait())
    return out


def test_sync_state_online_offline_online_while_appends_go_on(short_dir):
    cfg = _cfg(short_dir, sync={"offline_after": 0.5, "lag_records": 20, "lag_age": 0})
    path = str(short_dir / "s.sock")

    async def scenario():
        async with Daemon(cfg).parts() as daemon:
            journal = daemon.till.journal
            stop = asyncio.Event()

            async def pos_sells():
                async with await Client.connect(path, "pos") as pos:
                    while not stop.is_set():
                        await pos.request("append", records=[{"kind": "sale", "body": {"t": time.time()}}])
                        await asyncio.sleep(0.02)
            seller = asyncio.create_task(pos_sells())
            async with await Client.connect(path, "watcher") as w:
                await w.request("watch", topics=["sync"])
                ho = await Client.connect(path, "sync")
                await ho.request("subscribe", consumer="head-office", **{"from": 1})
                ev = await _event(w, "sync.state", consumer="head-office", change="online")
                assert ev["state"] == "online" and ev["connected"] is True
                acked = 0
                for _ in range(30):  # relaying: acks keep it close
                    rec = await _event(ho, "record")
                    acked = (await ho.request("ack", consumer="head-office", seq=rec["seq"]))["acked"]
                st = (await ho.request("status"))["sync"]["head-office"]
                assert st["state"] == "online" and st["acked"] == acked and st["last_ack"] > time.time() - 5
                await ho.close()  # the network is gone: the sync layer drops off
                closed_at = time.monotonic()
                seen: dict[str, dict] = {}
                while len(seen) < 2:  # offline after 0.5 s, behind at 20 records: either may come first
                    ev = await _event(w, "sync.state", consumer="head-office")
                    assert ev["change"] in ("offline", "behind"), ev
                    seen[ev["change"]] = ev
                    if ev["change"] == "offline":
                        assert time.monotonic() - closed_at >= 0.4  # not before offline_after
                ev, behind = seen["offline"], seen["behind"]
                assert ev["connected"] is False and ev["acked"] == acked and ev["lag"] >= 1
                assert behind["lag"] >= 20 and behind["lag_age"] > 0
                assert behind["acked"] == acked  # lag counted from its cursor while the sales go on
                st = (await w.request("status"))["sync"]["head-office"]
                assert st["acked"] == acked and st["lag"] >= behind["lag"] and st["state"] == "offline"
                assert "sync head-office: offline, lag" in daemon.till.summary()
                ho = await Client.connect(path, "sync")  # back online: catch up from its cursor
                await ho.request("subscribe", consumer="head-office", **{"from": "acked"}, window=100000)
                ev = await _event(w, "sync.state", consumer="head-office", change="online")
                assert ev["lag"] >= 20 and ev["acked"] == acked
                first = await _event(ho, "record")
                assert first["seq"] == acked + 1  # nothing skipped
                stop.set()
                await seller
                last = journal.last_seq
                seq = first["seq"]
                while seq < last:
                    seq = (await _event(ho, "record"))["seq"]
                await ho.request("ack", consumer="head-office", seq=last)
                ev = await _event(w, "sync.state", consumer="head-office", change="caught_up")
                assert ev["lag"] == 0 and ev["lag_age"] is None and ev["state"] == "online"
                assert "sync head-office: online, lag 0" in daemon.till.summary()
                shown = await asyncio.to_thread(_cli, "status", "--socket", path)
                assert "sync      head-office: online, lag 0; last ack" in shown.stdout, shown.stdout
                await ho.close()
    asyncio.run(scenario())


def test_sync_log_says_which_days_reached_head_office(short_dir):
    path = str(short_dir / "s.sock")

    async def scenario():
        async with Daemon(_cfg(short_dir)).parts():
            async with await Client.connect(path, "pos") as c:
                for i in range(3):
                    await c.request("append", records=[{"kind": "sale", "body": {"i": i}}])
                tuesday = await c.request("day_close", business_day="2026-11-17")
                await c.request("append", records=[{"kind": "sale", "body": {"i": 9}}])
                await c.request("day_close", business_day="2026-11-18")
                await c.request("subscribe", consumer="head-office", **{"from": 1})
                for seq in range(1, tuesday["seq"] + 1):
                    await c.request("ack", consumer="head-office", seq=seq)
            shown = await asyncio.to_thread(_cli, "sync", "log", "--socket", path)
            assert shown.returncode == 0, shown.stderr
            return shown.stdout, tuesday
    out, tuesday = asyncio.run(scenario())
    assert "head-office    registered, reading from seq 1" in out
    assert f"head-office    acked 1..{tuesday['seq']} ({tuesday['seq']} acks since" in out
    assert "has business day 2026-11-17 complete" in out
    rows = {line.split()[0]: line for line in out.splitlines() if re.match(r"\d{4}-\d\d-\d\d   \d", line)}
    assert "complete 20" in rows["2026-11-17"] and "not yet (acked to 4)" in rows["2026-11-18"], out
    # Written to the file when edged stopped; read back after a restart.
    lines = [json.loads(x) for x in (short_dir / "st" / "sync.log").read_text().splitlines()]
    assert [e["event"] for e in lines] == ["registered", "online", "ack"] and lines[2]["to"] == tuesday["seq"]

    async def again():
        async with Daemon(_cfg(short_dir)).parts():
            return [await asyncio.to_thread(_cli, *args, "--socket", path)
                    for args in (("sync", "log", "--consumer", "head-office", "--since", "1h"),
                                 ("sync", "log", "--consumer", "nobody"),
                                 ("sync", "log", "--since", "last tuesday"),
                                 ("sync", "log", "--json"))]
    since, nobody, bad, as_json = asyncio.run(again())
    assert f"acked 1..{tuesday['seq']}" in since.stdout
    scripted = json.loads(as_json.stdout)
    assert [e["event"] for e in scripted["entries"]] == ["registered", "online", "ack"]
    assert scripted["entries"][2]["to"] == tuesday["seq"] and scripted["days"][0]["business_day"] == "2026-11-17"
    assert nobody.returncode == 1 and "no consumer 'nobody' (consumers: head-office)" in nobody.stderr
    assert bad.returncode == 2 and "--since 'last tuesday': write a date" in bad.stderr
    assert parse_time("2h", now=10000.0) == 10000.0 - 7200
    assert parse_time("2026-11-17") == time.mktime((2026, 11, 17, 0, 0, 0, 0, 0, -1))
