"""Head office's outbox (fleet/outbox.py) and the relay's downstream half (fleet/down.py), without a broker: the rules that keep each
record once and in order (docs/FLEET.md, "Head office talks back"), on a real SQLite archive; the
same code runs on PostgreSQL in tests/test_downstream.py."""
from __future__ import annotations

import asyncio
import time

import msgpack
import pytest

from edged.day import archive
from edged.fleet import down, outbox, wire


@pytest.fixture
def db(tmp_path):
    d = archive.open_archive(tmp_path / "archive")
    yield d
    d.close()


def _sent(db) -> list[tuple[str, wire.Down]]:
    out: list[tuple[str, wire.Down]] = []
    outbox.due(db, lambda topic, payload: out.append((topic, wire.decode_down(payload))))
    return out


def test_put_refuses_what_the_till_could_not_append(db):
    for kind, body, why in [("journal.overdue", {}, "edged's own"), ("order.web", {1: "x"}, "map key"),
                            ("order.web", {str(i): i for i in range(10_001)}, "more than 20000 values"),
                            ("order.web", "x" * (300 << 10), "at most")]:
        with pytest.raises(outbox.OutboxError, match=why):
            outbox.put(db, "t1", kind, body)
    deep: object = 1
    for _ in range(70):
        deep = [deep]
    with pytest.raises(outbox.OutboxError, match="nested deeper than 64"):
        outbox.put(db, "t1", "order.web", deep)
    with pytest.raises(outbox.OutboxError, match="not a till id"):
        outbox.put(db, "shop 1", "order.web", {})
    assert outbox.put(db, "t1", "order.web", {"order": 1}).pos == 1
    assert outbox.put(db, "t1", "order.web", {"order": 2}).pos == 2
    assert outbox.put(db, None, "prices.list", {"v": 1}).pos == 1


def test_a_live_broadcast_goes_once_on_its_topic_not_again_to_each_till(db):
    for t in ("t1", "t2", "t3"):
        outbox.hello(db, wire.Hello(t, {"till": 0, "broadcast": 0}))
        outbox.presence(db, t, "online")
    for v in range(5):
        outbox.put(db, None, "prices.list", {"v": v})
    pushed = _sent(db)
    assert [(topic, d.pos, d.prev) for topic, d in pushed] == [(wire.BROADCAST_DOWN, p, p - 1) for p in range(1, 6)]
    for t in ("t1", "t2", "t3"):  # each till acks the first of the burst: nothing of it comes again to it alone
        assert outbox.acked(db, wire.DownAck(t, "broadcast", 1)) == []
    assert _sent(db) == []


def test_one_till_cannot_move_the_broadcast_counter_and_holes_cost_nothing(db):
    outbox.put(db, None, "prices.list", {"v": 1})
    settled, _ = outbox.hello(db, wire.Hello("t1", {"till": 10 ** 9, "broadcast": 10 ** 9}))
    assert settled == {"till": 10 ** 9, "broadcast": 1}  # its own channel numbers on above it; broadcast not
    assert outbox.put(db, None, "prices.list", {"v": 2}).pos == 2
    assert outbox.put(db, "t1", "order.web", {"o": 1}).pos == 10 ** 9 + 1
    outbox.presence(db, "t1", "online")
    t0 = time.monotonic()
    sent = [d for topic, d in _sent(db) if topic == wire.down_topic("t1")]
    assert [(d.channel, d.pos, d.prev) for d in sent] == [("till", 10 ** 9 + 1, 10 ** 9)]
    assert time.monotonic() - t0 < 5  # not a billion positions stepped through


def test_superseded_only_by_a_record_still_to_be_delivered(db):
    outbox.put(db, "t1", "prices.list", {"v": 3}, collapse="p")
    outbox.put(db, "t1", "prices.list", {"v": 4}, collapse="p", expires_at=time.time() - 1)
    outbox.put(db, "t1", "prices.list", {"v": 5}, collapse="q")
    outbox.put(db, "t1", "prices.list", {"v": 6}, collapse="q")
    _, sends = outbox.hello(db, wire.Hello("t1", {}))
    got = [(wire.decode_down(p).pos, wire.decode_down(p).prev) for _, p in sends]
    assert got == [(1, 0), (4, 1)]
    reasons = dict(db.execute("SELECT pos, reason FROM skipped WHERE till='t1'").fetchall())
    assert reasons[2].startswith("expired at") and reasons[3] == "superseded by 4 (q)"


def test_the_relay_applies_records_in_order_whatever_order_they_come_in():
    d = down.Downstream("t1", None)
    appended: list[str] = []

    async def append(records):
        appended.extend(r["tx_id"] for r in records)
        return [{"seq": 1, "duplicate": False} for _ in records]

    def rec(pos: int, prev: int) -> wire.Down:
        return wire.Down("till", pos, prev, "order.web", msgpack.packb({"o": pos}))

    acks = asyncio.run(d.take([rec(3, 2), rec(5, 3)], append))  # 4 skipped at head office, 1 and 2 not here yet
    assert acks == [] and appended == [] and d.waiting_since is not None
    acks = asyncio.run(d.take([rec(2, 1), rec(1, 0), rec(1, 0)], append))
    assert appended == ["ho:till:1", "ho:till:2", "ho:till:3", "ho:till:5"]
    assert [a.pos for a in acks] == [5] and d.applied["till"] == 5 and d.waiting_since is None
    d.settled({"till": 9, "broadcast": 0})  # head office's answer to a hello moves it on, never back
    d.settled({"till": 2})
    assert d.applied == {"till": 9, "broadcast": 0}


def test_a_full_hold_never_stops_what_can_be_applied():
    d = down.Downstream("t1", None)

    async def append(records):
        return [{"seq": 1, "duplicate": False} for _ in records]

    ahead = [wire.Down("broadcast", p, p - 1, "prices.list", msgpack.packb({})) for p in range(1001, 2101)]
    asyncio.run(d.take(ahead, append))
    assert len(d.held) == down.HELD and d.applied == {"till": 0, "broadcast": 0}
    catch_up = [wire.Down("broadcast", p, p - 1, "prices.list", msgpack.packb({})) for p in range(1, 101)]
    acks = asyncio.run(d.take([*catch_up, wire.Down("till", 1, 0, "order.web", msgpack.packb({}))], append))
    assert d.applied == {"till": 1, "broadcast": 100}
    assert {(a.channel, a.pos) for a in acks} == {("till", 1), ("broadcast", 100)}


def test_a_till_that_misses_the_broadcast_topic_gets_it_alone_whatever_the_pace(db, monkeypatch):
    outbox.hello(db, wire.Hello("t1", {"till": 0, "broadcast": 0}))
    outbox.presence(db, "t1", "online")
    clock = [time.time()]
    monkeypatch.setattr(outbox.time, "time", lambda: clock[0])
    got: list[int] = []
    for n in range(12):  # a broadcast every 10 s, the topic lost on the way to this till
        outbox.put(db, None, "prices.list", {"v": n})
        for _ in range(20):
            clock[0] += 0.5
            alone = [d.pos for topic, d in _sent(db) if topic == wire.down_topic("t1")]
            for pos in alone:  # what reaches it alone it takes and acknowledges
                outbox.acked(db, wire.DownAck("t1", "broadcast", pos))
            got += alone
    # each sent to it alone, once, when it went out on the topic 15 s ago and was not acknowledged
    assert got == list(range(1, 12)), got  # the 12th went out only 10 s before the end


def test_a_till_that_says_hello_just_after_a_push_gets_what_it_missed_at_once(db):
    assert _sent(db) == []  # the ingest looking at the outbox before anything was queued
    outbox.put(db, None, "prices.list", {"v": 1})
    assert [topic for topic, _ in _sent(db)] == [wire.BROADCAST_DOWN]  # out on the topic, the till away
    _, sends = outbox.hello(db, wire.Hello("t1", {"till": 0, "broadcast": 0}))
    assert [(topic, wire.decode_down(p).pos) for topic, p in sends] == [(wire.down_topic("t1"), 1)]
