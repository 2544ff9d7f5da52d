"""The socket under hostile clients: limits, back-pressure, access (real sockets, real journal)."""
from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from edged import config
from edged.client import BlockingClient, Client, ClientError
from edged.journal.disk import RealDisk
from edged.journal.ops import JournalOps
from edged.journal.service import Journal
from edged.journal.store import Store
from edged.relay import framing
from edged.relay.access import Access
from edged.relay.registry import Registry
from edged.relay.server import Server
from edged.till import Till


def serve(short_dir, scenario, ranges=None, **server_args):
    """Run scenario(path, server, journal) against a real server and journal."""
    async def main():
        journal = Journal(Store(RealDisk(str(short_dir / "j")), ranges=ranges or {}))
        await journal.start()
        till = Till(config.from_dict({"till_id": "t1"}), {}, False, journal)
        server = Server(str(short_dir / "s.sock"), Registry.of(till, JournalOps(journal)),
                        till.hello_info, **server_args)
        till.server = server
        journal.on_event = server.publish
        await server.start()
        try:
            await scenario(str(short_dir / "s.sock"), server, journal)
        finally:
            await server.stop()
            await journal.stop()
    asyncio.run(main())


async def _timed_appends(path: str, n: int) -> list[float]:
    async with await Client.connect(path, "pos") as pos:
        out = []
        for i in range(n):
            t0 = time.perf_counter()
            r = await pos.request("append", records=[{"kind": "sale", "body": i}])
            assert r["records"][0]["duplicate"] is False
            out.append(time.perf_counter() - t0)
        return out


def test_200_connections_at_once_and_busy_beyond_the_limit(short_dir):
    async def scenario(path, server, journal):
        clients = await asyncio.gather(*(Client.connect(path, f"c{i}") for i in range(200)))
        assert len(server.sessions) == 200
        statuses = await asyncio.gather(*(c.request("status") for c in clients))
        assert all(len(s["connections"]) == 200 for s in statuses)
        assert len(await _timed_appends(path, 20)) == 20  # the 201st client works too
        # Over the limit: answered `busy` and closed, without harming the others.
        extra = [await Client.connect(path, f"x{i}") for i in range(10)]
        assert len(server.sessions) == 210
        with pytest.raises(ClientError) as e:
            await Client.connect(path, "one-too-many")
        assert e.value.code == "busy"
        assert server.refused_busy == 1
        assert (await clients[0].request("status"))["refused_busy"] == 1
        for c in clients + extra:
            await c.close()
    serve(short_dir, scenario, max_connections=210)


def test_half_a_frame_then_silence_is_cut_off_and_others_go_on(short_dir):
    async def scenario(path, server, journal):
        staller = socket.socket(socket.AF_UNIX)
        staller.connect(path)
        staller.sendall(framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "s"}))
        staller.sendall(b"\x00\x00\x00\x40\x81")  # a 64-byte frame, one byte of it
        silent = socket.socket(socket.AF_UNIX)
        silent.connect(path)  # never says hello
        lat = await _timed_appends(path, 20)  # unaffected meanwhile
        assert len(lat) == 20
        await asyncio.sleep(0.8)  # past client_timeout
        for sock, why in ((staller, b"frame incomplete"), (silent, b"say hello first")):
            sock.settimeout(2)
            data = b""
            while chunk := sock.recv(4096):
                data += chunk
            assert why in data and b"bad_frame" in data  # an error, then the close
            sock.close()
        assert len(server.sessions) == 0
    serve(short_dir, scenario, client_timeout=0.5)


def test_a_watcher_that_never_reads_is_dropped_and_a_reading_one_gets_everything(short_dir):
    async def scenario(path, server, journal):
        lazy = socket.socket(socket.AF_UNIX)
        lazy.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        lazy.connect(path)
        lazy.sendall(framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "lazy"}))
        lazy.sendall(framing.encode({"op": "watch", "id": 2, "topics": ["scanner"]}))
        reader = await Client.connect(path, "reader")
        await reader.request("watch", topics=["scanner"])
        while len(server.watchers.sessions) < 2:
            await asyncio.sleep(0.01)
        got = []

        async def read_all():
            while len(got) < 100_000:
                got.append((await reader.next_event(5))["n"])
        consumer = asyncio.create_task(read_all())
        appends = asyncio.create_task(_timed_appends(path, 50))
        for n in range(100_000):
            server.publish({"event": "scanner.scan", "device": "sim", "code": f"{n:013d}", "n": n})
            if n % 200 == 199:  # let the loop run, as between real scans
                await asyncio.sleep(0)
                reader_session = next(s for s in server.sessions if s.client == "reader")
                while reader_session.outbox.depth > 500:
                    await asyncio.sleep(0.001)
            queued = [s.outbox.bytes for s in server.sessions]
            assert max(queued, default=0) <= 4 << 20  # memory stays bounded
        await asyncio.wait_for(consumer, 30)
        assert got == list(range(100_000))
        assert server.watchers.dropped == 1
        assert len(await appends) == 50
        assert "lazy" not in {s.client for s in server.sessions}
        lazy.close()
        await reader.close()
    serve(short_dir, scenario, send_queue=1000)


def test_a_subscriber_that_never_acks_is_held_by_its_window(short_dir):
    async def scenario(path, server, journal):
        sub = await Client.connect(path, "sync")
        await sub.request("subscribe", consumer="ho", **{"from": 1}, window=50)
        deaf = await Client.connect(path, "deaf")  # subscribes, then never reads a byte
        deaf._task.cancel()
        deaf._writer.write(framing.encode({"op": "subscribe", "id": 99, "consumer": "deaf",
                                           "from": 1, "window": 100_000}))
        lat = await _timed_appends(path, 3000)
        assert len(lat) == 3000
        seqs = []
        while True:
            try:
                seqs.append((await sub.next_event(0.5))["seq"])
            except TimeoutError:
                break
        assert seqs == list(range(1, 51))  # the window, not one record more
        await sub.request("ack", consumer="ho", seq=50)
        assert (await sub.next_event(2))["seq"] == 51
        deaf_session = next(s for s in server.sessions if s.client == "deaf")
        assert deaf_session.outbox.depth <= server.send_queue  # held, not buffered without bound
        status = await sub.request("status")
        row = next(c for c in status["connections"] if c["client"] == "sync")
        assert row["subscriptions"]["ho"]["in_flight"] == 50 and row["subscriptions"]["ho"]["lag"] == 2950
        await sub.close()
        await deaf.close()
    serve(short_dir, scenario, send_queue=200)


NOBODY = 65534


def _as_other_user(path: str, uid: int, gid: int, write_fd: int) -> None:
    """In a forked child: become uid/gid, then try a plain and a privileged op."""
    try:
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)
        with BlockingClient.connect(path, "other-user", timeout=10) as c:
            assert c.request("status")["till_id"] == "t1"
            try:
                c.request("consumer_remove", consumer="ho")
                answer = "removed"
            except ClientError as e:
                answer = e.code
        os.write(write_fd, f"{os.getuid()} {answer}".encode())
    except BaseException as e:  # reported to the parent, which asserts
        os.write(write_fd, f"error {e!r}".encode())
    finally:
        os._exit(0)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client under another uid")
@pytest.mark.parametrize("allowed", [False, True])
def test_privileged_ops_need_an_allowed_user_or_group(short_dir, allowed):
    os.chmod(short_dir, 0o755)
    group = "nogroup"

    async def scenario(path, server, journal):
        await journal.register("ho", 1)
        assert os.stat(path).st_gid == NOBODY and os.stat(path).st_mode & 0o777 == 0o660
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            _as_other_user(path, NOBODY, NOBODY, w)
        os.close(w)
        await asyncio.get_running_loop().run_in_executor(None, os.waitpid, pid, 0)
        answer = os.read(r, 4096).decode()
        os.close(r)
        assert answer == f"{NOBODY} {'removed' if allowed else 'not_permitted'}"
        assert ("ho" in journal.cursors) is not allowed

    serve(short_dir, scenario, group=group, access=Access([], [group] if allowed else []))


def test_watchers_get_the_events_of_their_topics_only(short_dir):
    async def scenario(path, server, journal):
        async with await Client.connect(path, "j") as jw, await Client.connect(path, "p") as pw, \
                await Client.connect(path, "pos") as pos:
            assert await jw.request("watch", topics=["journal", "usb"]) == {"topics": ["journal", "usb"]}
            await pw.request("watch", topics=["printer"])
            with pytest.raises(ClientError) as e:
                await pw.request("watch", topics=["printer", "coffee"])
            assert e.value.code == "bad_request" and "coffee" in e.value.message
            for i in range(9):
                await pos.request("append", records=[{"kind": "sale", "body": i, "number": "r"}])
            event = await jw.next_event(5)
            assert event == {"event": "journal.range_warning", "counter": "r", "number": 9, "first": 1, "last": 10}
            server.publish({"event": "printer.status", "printer": "receipt", "state": "ok", "reasons": []})
            assert (await pw.next_event(5))["event"] == "printer.status"
            with pytest.raises(TimeoutError):
                await jw.next_event(0.3)  # not its topic
            status = await pos.request("status")
            rows = {c["client"]: c for c in status["connections"]}
            assert rows["j"]["topics"] == ["journal", "usb"] and rows["p"]["topics"] == ["printer"]
            assert await jw.request("watch", topics=[]) == {"topics": []}
            assert [s.client for s in server.watchers.sessions] == ["p"]
    serve(short_dir, scenario, ranges={"r": (1, 10)})
