"""edged.client: follow() across a daemon restart, the blocking client, overlapping requests."""
from __future__ import annotations

import asyncio
import threading

import pytest

from edged import config
from edged.client import BlockingClient, Client, ClientError, follow
from edged.journal.disk import RealDisk
from edged.journal.ops import JournalOps
from edged.journal.service import Journal
from edged.journal.store import Store
from edged.relay.registry import Registry
from edged.relay.server import Server
from edged.till import Till


async def _start(short_dir):
    journal = Journal(Store(RealDisk(str(short_dir / "j"))))
    await journal.start()
    till = Till(config.from_dict({"till_id": "t1"}), {}, False, journal)
    server = Server(str(short_dir / "s.sock"), Registry.of(till, JournalOps(journal)), till.hello_info)
    till.server = server
    await server.start()
    return server, journal


async def _stop(server, journal):
    await server.stop()
    await journal.stop()


async def _append(path: str, first: int, n: int) -> None:
    async with await Client.connect(path, "pos") as pos:
        for i in range(first, first + n):
            await pos.request("append", records=[{"kind": "sale", "body": i}])


def test_follow_resumes_from_the_last_ack_after_a_restart(short_dir):
    path = str(short_dir / "s.sock")

    async def main():
        server, journal = await _start(short_dir)
        await _append(path, 0, 10)
        got: list[int] = []
        restarted = asyncio.Event()

        async def sync_client():
            async for record in follow(path, "ho", retry=0.05, window=4):
                got.append(record["body"])
                if len(got) == 6 and not restarted.is_set():
                    return  # "crash" while handling the 6th: it was never acked

        await sync_client()
        assert got == [0, 1, 2, 3, 4, 5]
        assert journal.cursors["ho"] == 5  # records 1..5 acked, the 6th not
        await _stop(server, journal)
        server, journal = await _start(short_dir)
        restarted.set()
        await _append(path, 10, 5)
        got.clear()

        async def again():
            async for record in follow(path, "ho", retry=0.05):
                got.append(record["body"])
                if record["body"] == 14:
                    return
        task = asyncio.create_task(again())
        await asyncio.sleep(0.2)
        await _stop(server, journal)  # the daemon goes away mid-stream and comes back
        server, journal = await _start(short_dir)
        await asyncio.wait_for(task, 10)
        assert got[0] == 5 and sorted(set(got)) == list(range(5, 15))  # at least once, nothing lost
        await _stop(server, journal)

    asyncio.run(main())


def test_blocking_client_requests_and_events(short_dir):
    path = str(short_dir / "s.sock")
    ready = threading.Event()
    done = threading.Event()

    async def main():
        server, journal = await _start(short_dir)
        ready.set()
        while not done.is_set():
            await asyncio.sleep(0.01)
        await _stop(server, journal)

    thread = threading.Thread(target=asyncio.run, args=(main(),))
    thread.start()
    try:
        assert ready.wait(10)
        with BlockingClient.connect(path, "script") as c:
            assert c.server_info["till_id"] == "t1"
            assert c.request("append", records=[{"kind": "k", "body": 1}])["records"][0]["seq"] == 1
            assert c.request("subscribe", consumer="x", **{"from": 1}) == {"from_seq": 1}
            event = c.next_event()
            assert event["event"] == "record" and event["body"] == 1
            with pytest.raises(ClientError) as e:
                c.request("ack", consumer="x", seq=99)
            assert e.value.code == "bad_request"
    finally:
        done.set()
        thread.join(10)


def test_overlapping_requests_from_many_tasks_are_matched(short_dir):
    async def main():
        server, journal = await _start(short_dir)
        async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
            results = await asyncio.gather(*(c.request("append", records=[{"kind": "k", "body": i, "tx_id": f"t{i}"}])
                                             for i in range(50)))
            assert sorted(r["records"][0]["seq"] for r in results) == list(range(1, 51))
            again = await c.request("append", records=[{"kind": "k", "body": 7, "tx_id": "t7"}])
            assert again["records"][0]["duplicate"] is True
        await _stop(server, journal)
    asyncio.run(main())
