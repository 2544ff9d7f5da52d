"""Consumers belong to someone: another uid can neither move head office's cursor nor take its
stream (the real daemon, the sync layer and an attacker under their own uids); a connection
holds one subscription however often it subscribes."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import msgpack
import pytest

from edged import config
from edged.client import BlockingClient, ClientError
from edged.daemon import Daemon
from edged.journal.owners import OWNERS_FILE
from other_user import ATTACKER_UID, PRIVILEGED_UID, SOCKET_GROUP, SYNC_UID, AsUser, Edged, as_user, needs_root


def _answer(c: BlockingClient, op: str, **params) -> dict:
    try:
        return {"ok": c.request(op, **params)}
    except ClientError as e:
        return {"code": e.code, "message": e.message}


def _sync_layer(sock: str, start, upto: int) -> dict:
    """Subscribe as head-office, read records up to seq `upto`, ack them."""
    with BlockingClient.connect(sock, "sync", timeout=10) as c:
        sub = _answer(c, "subscribe", consumer="head-office", **{"from": start})
        if "ok" not in sub:
            return sub
        seqs = []
        while not seqs or seqs[-1] < upto:
            seqs.append(c.next_event()["seq"])
        return {"from_seq": sub["ok"]["from_seq"], "seqs": seqs,
                "acked": c.request("ack", consumer="head-office", seq=upto)["acked"]}


def _attack(sock: str, last_seq: int) -> dict:
    with BlockingClient.connect(sock, "evil", timeout=10) as c:
        return {
            "far_new": _answer(c, "subscribe", consumer="evil-reader", **{"from": last_seq + 1000}),
            "far": _answer(c, "subscribe", consumer="head-office", **{"from": last_seq + 1000}),
            "steal": _answer(c, "subscribe", consumer="head-office", **{"from": "acked"}),
            "ack": _answer(c, "ack", consumer="head-office", seq=last_seq),
            "remove": _answer(c, "consumer_remove", consumer="head-office"),
            "own": _answer(c, "subscribe", consumer="evil-reader", **{"from": last_seq + 1}),
            "ghosts": [_answer(c, "ack", consumer=f"ghost-{i}", seq=last_seq + 1)["code"] for i in range(200)],
        }


def _ack(sock: str, consumer: str, seq: int) -> dict:
    with BlockingClient.connect(sock, "ack", timeout=10) as c:
        return _answer(c, "ack", consumer=consumer, seq=seq)


def _append(c: BlockingClient, n: int) -> int:
    records = [{"kind": "sale", "body": {"n": i}} for i in range(n)]
    return c.request("append", records=records)["records"][-1]["seq"]


@needs_root
def test_another_uid_cannot_move_or_take_head_offices_consumer(short_dir):
    with Edged(short_dir) as edged, BlockingClient.connect(edged.sock, "pos") as pos:
        last = _append(pos, 10)
        first = as_user(SYNC_UID, lambda: _sync_layer(edged.sock, 1, 5))
        assert first == {"from_seq": 1, "seqs": [1, 2, 3, 4, 5], "acked": 5}

        attack = as_user(ATTACKER_UID, lambda: _attack(edged.sock, last))
        assert attack["far_new"]["code"] == "bad_request" and f"last durable seq is {last}" in \
            attack["far_new"]["message"]
        assert attack["far"]["code"] == "bad_request"  # checked before whose it is
        for what in ("steal", "ack"):
            assert attack[what]["code"] == "not_permitted", (what, attack[what])
            assert f"uid {SYNC_UID}" in attack[what]["message"]
        assert attack["remove"]["code"] == "not_permitted"  # a privileged op
        assert attack["own"] == {"ok": {"from_seq": last + 1}}  # reading under its own name is fine
        assert set(attack["ghosts"]) == {"bad_request"}  # refused acks claim no names
        owners = msgpack.unpackb((short_dir / "state" / "journal" / OWNERS_FILE).read_bytes())
        assert owners == {"head-office": SYNC_UID, "evil-reader": ATTACKER_UID}

        consumers = pos.request("consumers")["consumers"]
        assert consumers["head-office"] == {"acked": 5, "lag": last - 5, "owner": SYNC_UID}
        assert consumers["evil-reader"]["owner"] == ATTACKER_UID
        sync = pos.request("status")["sync"]["head-office"]
        assert sync["acked"] == 5 and sync["lag"] == last - 5 and sync["kinds"] is None

        # The sync layer carries on where it was; nothing was skipped.
        more = _append(pos, 3)
        again = as_user(SYNC_UID, lambda: _sync_layer(edged.sock, "acked", more))
        assert again == {"from_seq": 6, "seqs": list(range(6, more + 1)), "acked": more}
        # Root and a privileged user may move it (a technician's repair).
        assert as_user(PRIVILEGED_UID, lambda: _ack(edged.sock, "head-office", more)) == {"ok": {"acked": more}}
        assert pos.request("ack", consumer="head-office", seq=more) == {"acked": more}


@needs_root
def test_owners_survive_a_restart_and_old_consumers_are_claimed_by_their_next_user(short_dir):
    edged = Edged(short_dir)
    with edged, BlockingClient.connect(edged.sock, "pos") as pos:
        last = _append(pos, 4)
        assert as_user(SYNC_UID, lambda: _ack(edged.sock, "head-office", 2)) == {"ok": {"acked": 2}}
        assert as_user(ATTACKER_UID, lambda: _ack(edged.sock, "head-office", 4))["code"] == "not_permitted"
    with edged, BlockingClient.connect(edged.sock, "pos") as pos:  # restarted: the owner is kept
        assert as_user(ATTACKER_UID, lambda: _ack(edged.sock, "head-office", 4))["code"] == "not_permitted"
        assert as_user(SYNC_UID, lambda: _ack(edged.sock, "head-office", 3)) == {"ok": {"acked": 3}}
    # As after an upgrade from an edged that kept no owners: the sync layer reconnects first.
    os.unlink(short_dir / "state" / "journal" / OWNERS_FILE)
    with edged, BlockingClient.connect(edged.sock, "pos") as pos:
        assert pos.request("consumers")["consumers"]["head-office"]["owner"] is None
        assert as_user(SYNC_UID, lambda: _ack(edged.sock, "head-office", last)) == {"ok": {"acked": last}}
        assert as_user(ATTACKER_UID, lambda: _ack(edged.sock, "head-office", last))["code"] == "not_permitted"
        assert pos.request("consumers")["consumers"]["head-office"]["owner"] == SYNC_UID
    assert "consumer 'head-office' had no owner" in edged.log.read_text()


@pytest.mark.parametrize("data,problem", [
    (b"\x92\x01\x02", "must be a map"),
    (b"\x81\xa2ho\xa1x", "'ho': 'x' is not a consumer name and a uid"),
    (b"\x81\xa2ho", "not readable msgpack"),
])
def test_a_damaged_owners_file_stops_the_start_with_one_line(short_dir, data, problem):
    journal = short_dir / "state" / "journal"
    journal.mkdir(parents=True)
    (journal / OWNERS_FILE).write_bytes(data)
    run = subprocess.run([sys.executable, "-m", "edged", "run", "--config", os.devnull, "--state-dir",
                          str(short_dir / "state"), "--socket", str(short_dir / "s.sock")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"edged: {journal / OWNERS_FILE}: ") and problem in last and "remove it" in last
    assert "Traceback" not in run.stderr


def _subscribe_often(sock: str, times: int) -> dict:
    from other_user import KEEP
    c = BlockingClient.connect(sock, "loop", timeout=10)
    KEEP.append(c)
    for i in range(times):
        c.request("subscribe", consumer="mine", **{"from": 1 + i % 5}, window=1)
    return {"done": times}


@needs_root
def test_a_second_subscribe_replaces_the_first_and_tasks_do_not_pile_up(short_dir):
    os.chmod(short_dir, 0o755)
    cfg = config.from_dict({"daemon": {"socket": str(short_dir / "s.sock"), "state_dir": str(short_dir / "state"),
                                       "socket_group": SOCKET_GROUP}})

    async def main():
        async with Daemon(cfg).parts() as daemon:
            loop = asyncio.get_running_loop()
            def sell() -> None:
                with BlockingClient.connect(cfg.daemon.socket, "pos") as pos:
                    _append(pos, 20)
            await loop.run_in_executor(None, sell)
            baseline = len(asyncio.all_tasks())
            child = AsUser(ATTACKER_UID, lambda: _subscribe_often(cfg.daemon.socket, 2000), hold=True)
            try:
                assert await loop.run_in_executor(None, child.result) == {"done": 2000}
                session = next(s for s in daemon.server.sessions if s.client == "loop")
                assert list(session.subscriptions) == ["mine"]
                live = [t for t in session.tasks if not t.done()]
                assert len(live) == 1  # the latest subscription's, and nothing else
                assert len(asyncio.all_tasks()) <= baseline + 3  # + the connection, its writer, one subscription
                assert daemon.till.sync.consumers["mine"].connections == 1
            finally:
                await loop.run_in_executor(None, child.release)
    asyncio.run(main())


def test_records_after_the_second_subscribes_answer_come_from_its_start(short_dir):
    cfg = config.from_dict({"daemon": {"socket": str(short_dir / "s.sock"), "state_dir": str(short_dir / "state")}})

    async def main():
        async with Daemon(cfg).parts():
            from edged.client import Client
            async with await Client.connect(cfg.daemon.socket, "sub") as c:
                await c.request("append", records=[{"kind": "k", "body": i} for i in range(30)])
                await c.request("subscribe", consumer="a", **{"from": 1}, window=5)
                assert (await c.request("subscribe", consumer="b", **{"from": 20})) == {"from_seq": 20}
                await c.request("ack", consumer="b", seq=21)  # also a round trip: what came before is read
                seen = []
                while not c.events.empty():
                    seen.append(c.events.get_nowait())
                after = [e["seq"] for e in seen if e["seq"] >= 20]
                before = [e["seq"] for e in seen if e["seq"] < 20]
                assert before == list(range(1, len(before) + 1)) and len(before) <= 5  # a's, all before
                while len(after) < 11:
                    after.append((await asyncio.wait_for(c.events.get(), 5))["seq"])
                assert after == list(range(20, 31))
                status = await c.request("status")
                row = next(r for r in status["connections"] if r["client"] == "sub")
                assert list(row["subscriptions"]) == ["b"]
    asyncio.run(main())
