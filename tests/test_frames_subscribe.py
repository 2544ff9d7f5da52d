"""`subscribe` with `frames`: the journal's frames byte for byte, in seq-contiguous `frames` events
with the chain link before each, backlog (from disk, across segments) then live, within the window.
What a relay hands to head office, which checks it as one chain."""
from __future__ import annotations

import asyncio
import hashlib

import pytest

from edged.client import Client, ClientError
from edged.journal import frame as fr
from test_journal_ops import run


async def _frames_event(client: Client, timeout: float = 5) -> dict:
    while True:
        ev = await asyncio.wait_for(client.events.get(), timeout)
        if ev["event"] == "frames":
            return ev


def _check_chain(chain: bytes, frames: list[bytes], first: int) -> bytes:
    """Every frame links to the one before (SHA-256 of link, fixed fields, payload): the chain after."""
    for i, raw in enumerate(frames):
        seq, size, link = fr.check(raw, 0, None)
        assert seq == first + i and size == len(raw)
        h = hashlib.sha256(chain)
        h.update(raw[:36])
        h.update(raw[72:])
        assert h.digest() == link
        chain = link
    return chain


def test_frames_backlog_then_live_are_the_journal_byte_for_byte(short_dir):
    async def scenario(sock, journal):
        async with await Client.connect(sock, "pos") as pos:
            for i in range(30):  # ~6 KiB each: segments of 64 KiB rotate, the backlog spans several
                await pos.request("append", records=[{"kind": "sale", "body": {"i": i, "pad": "x" * 6000}}])
            assert len(journal.store.segments) > 2
            async with await Client.connect(sock, "relay") as relay:
                r = await relay.request("subscribe", consumer="head-office", **{"from": 1}, frames=True, batch=7,
                                        window=100)
                assert r == {"from_seq": 1}
                got, chain, seq = [], fr.GENESIS, 1
                while seq <= 30:
                    ev = await _frames_event(relay)
                    assert ev["first_seq"] == seq and ev["chain_before"] == chain
                    assert len(ev["frames"]) <= 7 and ev["last_seq"] == seq + len(ev["frames"]) - 1
                    chain = _check_chain(chain, ev["frames"], seq)
                    got += ev["frames"]
                    seq = ev["last_seq"] + 1
                on_disk = await journal._run(lambda: list(journal.store.frames(1, 30)))
                assert got == on_disk
                await pos.request("append", records=[{"kind": "sale", "body": {"live": 1}}])
                ev = await _frames_event(relay)  # live: from memory, the same bytes as on disk
                assert (ev["first_seq"], ev["last_seq"], ev["chain_before"]) == (31, 31, chain)
                assert ev["frames"] == await journal._run(lambda: list(journal.store.frames(31, 31)))
    run(short_dir, scenario, segment_size=64 << 10)


def test_frames_respect_the_window_and_resume_from_acked_with_the_chain_before(short_dir):
    async def scenario(sock, journal):
        async with await Client.connect(sock, "pos") as pos:
            await pos.request("append", records=[{"kind": "sale", "body": {"i": i}} for i in range(20)])
            async with await Client.connect(sock, "relay") as relay:
                await relay.request("subscribe", consumer="ho", **{"from": 1}, frames=True, batch=4, window=8)
                evs = [await _frames_event(relay), await _frames_event(relay)]
                assert [(e["first_seq"], e["last_seq"]) for e in evs] == [(1, 4), (5, 8)]
                assert [e["journal_last"] for e in evs] == [20, 20]  # how far behind the relay is
                with pytest.raises(asyncio.TimeoutError):  # 8 in flight: nothing more until an ack
                    await _frames_event(relay, timeout=0.5)
                await relay.request("ack", consumer="ho", seq=6)
                ev = await _frames_event(relay)
                assert (ev["first_seq"], ev["last_seq"]) == (9, 12)  # room for 6, batches of 4
            async with await Client.connect(sock, "relay") as relay:  # a new connection: from "acked"
                r = await relay.request("subscribe", consumer="ho", **{"from": "acked"}, frames=True)
                assert r == {"from_seq": 7}
                ev = await _frames_event(relay)
                assert ev["first_seq"] == 7 and ev["last_seq"] == 20
                chain6 = await journal._run(journal.store.chain_before, 7)
                assert ev["chain_before"] == chain6
                _check_chain(chain6, ev["frames"], 7)
    run(short_dir, scenario)


def test_frames_events_stay_within_their_byte_bound_but_carry_a_large_record(short_dir):
    async def scenario(sock, journal):
        async with await Client.connect(sock, "pos") as pos:
            await pos.request("append", records=[{"kind": "sale", "body": "y" * 100_000} for _ in range(6)])
            await pos.request("append", records=[{"kind": "big", "body": b"z" * 400_000}])
            async with await Client.connect(sock, "relay") as relay:
                await relay.request("subscribe", consumer="ho", **{"from": 1}, frames=True, batch=5000)
                sizes = []
                while not sizes or sizes[-1][1] < 7:
                    ev = await _frames_event(relay)
                    sizes.append((ev["first_seq"], ev["last_seq"], sum(map(len, ev["frames"]))))
                assert [(a, b) for a, b, _ in sizes] == [(1, 2), (3, 4), (5, 6), (7, 7)]
                assert all(n <= 256 << 10 for _, _, n in sizes[:3]) and sizes[3][2] > 400_000
    run(short_dir, scenario)


@pytest.mark.parametrize("params, why", [
    ({"kinds": ["sale"]}, "'kinds' cannot go with 'frames'"),
    ({"batch": 0}, "'batch' must be between 1 and 5000"),
    ({"batch": 5001}, "'batch' must be between 1 and 5000"),
])
def test_frames_refuses_what_cannot_be_relayed_as_one_chain(short_dir, params, why):
    async def scenario(sock, journal):
        async with await Client.connect(sock, "relay") as relay:
            with pytest.raises(ClientError, match=why):
                await relay.request("subscribe", consumer="ho", **{"from": 1}, frames=True, **params)
    run(short_dir, scenario)
