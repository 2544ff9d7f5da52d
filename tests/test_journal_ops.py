"""The journal over the socket: append, subscribe (backlog, live, window, kinds, acked), ack."""
from __future__ import annotations

import asyncio

import pytest

from edged import config
from edged.client import Client, ClientError
from edged.journal.disk import RealDisk
from edged.journal.ops import JournalOps
from edged.journal.service import Journal
from edged.journal.store import Store
from edged.relay.registry import Registry
from edged.relay.server import Server
from edged.till import Till


async def _next_record(client: Client, timeout: float = 5) -> dict:
    while True:
        ev = await asyncio.wait_for(client.events.get(), timeout)
        if ev["event"] == "record":
            return ev


def run(short_dir, scenario, ranges=None, segment_size=1 << 20):
    async def main():
        journal = Journal(Store(RealDisk(str(short_dir / "j")), segment_size=segment_size,
                                ranges=ranges or {}))
        await journal.start()
        till = Till(config.from_dict({"till_id": "t1"}), {}, False, journal)
        server = Server(str(short_dir / "s.sock"), Registry.of(till, JournalOps(journal)),
                        till.hello_info)
        till.server = server
        await server.start()
        try:
            await scenario(str(short_dir / "s.sock"), journal)
        finally:
            await server.stop()
            await journal.stop()
    asyncio.run(main())


def test_append_is_durable_dedups_and_numbers(short_dir):
    async def scenario(path, journal):
        async with await Client.connect(path, "pos") as c:
            r = await c.request("append", records=[{"kind": "sale", "body": {"total": 450}, "tx_id": "A1",
                                                    "number": "receipt"},
                                                   {"kind": "sale.line", "body": [1, 2]}])
            assert r["records"] == [{"seq": 1, "number": 3000000, "duplicate": False},
                                    {"seq": 2, "duplicate": False}]
            again = await c.request("append", records=[{"kind": "sale", "body": {"total": 999}, "tx_id": "A1",
                                                        "number": "receipt"}])
            assert again["records"] == [{"seq": 1, "number": 3000000, "duplicate": True}]
            hello = c.server_info["journal"]
            assert hello == {"first_seq": 1, "last_seq": 0}  # as it was when we connected
            status = await c.request("status")
            assert status["journal"]["last_seq"] == 2 and status["journal"]["state"] == "ok"
            for bad, fragment in [({"records": []}, "empty"), ({"records": [{"body": 1}]}, "records[0].kind"),
                                  ({"records": [{"kind": "x"}]}, "records[0].body"),
                                  ({"records": [{"kind": "x", "body": 1, "tx_id": 5}]}, "tx_id"),
                                  ({"records": [{"kind": "x", "body": 1, "colour": 5}]}, "'colour'"),
                                  ({"records": [{"kind": "x", "body": 1, "number": "nope"}]}, "'nope'")]:
                with pytest.raises(ClientError) as err:
                    await c.request("append", **bad)
                assert err.value.code == "bad_request" and fragment in err.value.message
            assert journal.last_seq == 2  # nothing written by the refused ones
    run(short_dir, scenario, ranges={"receipt": (3000000, 3999999)})


def test_range_exhausted_and_warning(short_dir):
    async def scenario(path, journal):
        events = []
        journal.on_event = events.append
        async with await Client.connect(path, "pos") as c:
            numbers = []
            for _ in range(10):
                r = await c.request("append", records=[{"kind": "sale", "body": 1, "number": "r"}])
                numbers.append(r["records"][0]["number"])
            assert numbers == list(range(1, 11))
            assert [e["number"] for e in events] == [9]  # 90 % of 1..10
            with pytest.raises(ClientError) as err:
                await c.request("append", records=[{"kind": "sale", "body": 1, "number": "r"}])
            assert err.value.code == "range_exhausted"
    run(short_dir, scenario, ranges={"r": (1, 10)})


def test_subscribe_backlog_then_live_with_window_and_ack(short_dir):
    async def scenario(path, journal):
        async with await Client.connect(path, "pos") as pos, await Client.connect(path, "sync") as sync:
            await pos.request("append", records=[{"kind": "sale" if i % 2 else "stock", "body": i}
                                                 for i in range(6)])
            r = await sync.request("subscribe", consumer="ho", **{"from": 1}, window=3)
            assert r == {"from_seq": 1}
            got = [await _next_record(sync) for _ in range(3)]
            assert [g["seq"] for g in got] == [1, 2, 3]
            assert got[0]["body"] == 0 and got[0]["kind"] == "stock" and len(got[0]["chain"]) == 32
            with pytest.raises(asyncio.TimeoutError):  # the window is full until we ack
                await _next_record(sync, timeout=0.3)
            assert (await sync.request("ack", consumer="ho", seq=2)) == {"acked": 2}
            assert [(await _next_record(sync))["seq"] for _ in range(2)] == [4, 5]
            await sync.request("ack", consumer="ho", seq=5)
            assert (await _next_record(sync))["seq"] == 6
            await pos.request("append", records=[{"kind": "sale", "body": "live"}])
            live = await _next_record(sync)
            assert (live["seq"], live["body"]) == (7, "live")
            status = await pos.request("status")
            assert status["consumers"] == {"ho": 5} and status["consumer_lag"] == {"ho": 2}
        # reconnect: from "acked" resumes after the stored cursor, kinds filter applies
        async with await Client.connect(path, "sync") as sync:
            await sync.request("subscribe", consumer="ho", **{"from": "acked"}, kinds=["sale"])
            assert [(await _next_record(sync))["seq"] for _ in range(2)] == [6, 7]
            with pytest.raises(ClientError) as err:
                await sync.request("ack", consumer="ho", seq=99)
            assert err.value.code == "bad_request"
    run(short_dir, scenario)


def test_backlog_across_segments_from_disk(short_dir):
    async def scenario(path, journal):
        async with await Client.connect(path, "pos") as pos:
            for i in range(60):
                await pos.request("append", records=[{"kind": "sale", "body": "x" * 2000, "tx_id": f"t{i}"}])
        assert len(journal.store.segments) >= 2
        journal._cache.clear()  # force the disk path
        async with await Client.connect(path, "sync") as sync:
            await sync.request("subscribe", consumer="ho", **{"from": 1}, window=1000)
            assert [(await _next_record(sync))["seq"] for _ in range(60)] == list(range(1, 61))
    run(short_dir, scenario, segment_size=64 << 10)


def test_concurrent_appenders_share_flushes(short_dir):
    async def scenario(path, journal):
        clients = [await Client.connect(path, f"pos{i}") for i in range(16)]
        before = journal.flushes
        results = await asyncio.gather(*(c.request("append", records=[{"kind": "sale", "body": n}])
                                         for n in range(5) for c in clients))
        seqs = sorted(r["records"][0]["seq"] for r in results)
        assert seqs == list(range(1, 81))
        assert journal.flushes - before < 80  # group commit: fewer fdatasyncs than appends
        for c in clients:
            await c.close()
    run(short_dir, scenario)


def test_a_thread_job_among_concurrent_appends_keeps_the_sequence_contiguous(short_dir):
    from edged.journal.store import Entry

    async def main():
        journal = Journal(Store(RealDisk(str(short_dir / "j"))))
        await journal.start()
        try:
            base = journal.last_seq
            before_flushes = journal.flushes
            results = await asyncio.gather(journal.register("ho", 1),
                                           *(journal.append([Entry("sale", n)]) for n in range(16)))
            assert sorted(r[0].seq for r in results[1:]) == list(range(base + 1, base + 17))
            assert journal.flushes - before_flushes < 16  # group commit
            assert [r.seq for r in journal.store.records(1)] == list(range(1, journal.last_seq + 1))
        finally:
            await journal.stop()
    asyncio.run(main())
