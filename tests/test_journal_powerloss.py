"""Simulated power loss at every I/O step of a journal workload, in four ways.

After recovery from every crash state: every acknowledged record is present
and byte-identical, sequence numbers are contiguous, the chain verifies, the
journal opens without problems and takes the next append; saved cursors and
the retention floor never go backwards; number ranges stay gapless.
"""
from __future__ import annotations

import os
import random

import pytest

from edged.journal.store import Entry, Store
from edged.journal.verify import verify
from simdisk import SimDisk

MODES = ("drop", "torn", "zeros", "garble")
RANGES = {"receipt": (3_000_000, 3_999_999)}
LONG = os.environ.get("EDGED_LONG_TESTS") == "1"


def workload(seed: int, steps: int, on_state) -> None:
    """Appends with rotation, duplicates, counters, cursor writes, retention and restarts."""
    rng = random.Random(seed)
    disk = SimDisk()
    acked: dict[int, tuple] = {}
    expect = {"cursor": 0, "floor": 1}

    def hook(d: SimDisk) -> None:
        on_state(d, dict(acked), dict(expect))

    store = Store(disk, segment_size=rng.choice([600, 1500, 4000]), ranges=RANGES)
    store.open()
    disk.on_step = hook
    for i in range(steps):
        action = rng.random()
        if action < 0.75:
            groups = []
            for _ in range(rng.randint(1, 3)):
                groups.append([Entry(rng.choice(["sale", "print.job", "drawer"]),
                                     {"i": i, "pad": "x" * rng.randint(0, 120)},
                                     tx_id=f"tx{rng.randrange(steps)}" if rng.random() < 0.5 else None,
                                     counter="receipt" if rng.random() < 0.4 else None)
                               for _ in range(rng.randint(1, 3))])
            for result in store.append(groups):
                assert isinstance(result, list), result
                for a in result:
                    if not a.duplicate:
                        r = a.record
                        acked[r.seq] = (r.seq, r.ts, r.kind, r.body, r.tx_id, r.number, r.chain)
        elif action < 0.85:
            cursor = rng.randint(expect["cursor"], store.last_seq)
            store.save_cursors({"sync": cursor})
            expect["cursor"] = cursor
        elif action < 0.95:
            store.retain(acked=expect["cursor"], min_age_us=0)
            expect["floor"] = store.first_seq
            for seq in [s for s in acked if s < store.first_seq]:
                del acked[seq]
        else:  # a clean restart in the middle of the work
            disk.on_step = None
            store.close()
            store = Store(disk, segment_size=store.segment_size, ranges=RANGES)
            store.open()
            disk.on_step = hook
    hook(disk)


def check_recovery(disk: SimDisk, acked: dict, expect: dict, mode: str, rng: random.Random) -> None:
    crashed = disk.crash(mode, rng)
    store = Store(crashed, segment_size=1500, ranges=RANGES)
    store.open()
    assert store.problems == [] and store.read_only is None, (mode, store.problems)
    assert store.first_seq >= expect["floor"]
    assert store.first_seq <= expect["cursor"] + 1 or store.first_seq == 1
    records = list(store.records(store.first_seq))
    seqs = [r.seq for r in records]
    assert seqs == list(range(store.first_seq, store.last_seq + 1))
    by_seq = {r.seq: (r.seq, r.ts, r.kind, r.body, r.tx_id, r.number, r.chain) for r in records}
    for seq, fields in acked.items():
        if seq >= store.first_seq:
            assert by_seq.get(seq) == fields, (mode, seq)
    numbers = [r.number for r in records if r.number is not None]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) if numbers else True
    assert store.load_cursors().get("sync", 0) >= expect["cursor"]
    report = verify(crashed)
    assert report.ok, report.problems
    # and it carries on: the next append gets the next number and sequence
    [[a]] = store.append([[Entry("after", 1, counter="receipt")]])
    assert a.seq == store.last_seq
    assert not acked or a.seq > max(acked)
    if numbers:
        assert a.number == numbers[-1] + 1
    store.close()


@pytest.mark.parametrize("seed", range(5 if not LONG else 50))
def test_power_loss_at_every_step(seed):
    rng = random.Random(1000 + seed)
    states = 0

    def on_state(disk, acked, expect):
        nonlocal states
        for mode in MODES:
            check_recovery(disk, acked, expect, mode, rng)
            states += 1

    workload(seed, steps=120, on_state=on_state)
    assert states >= 2000  # five seeds: well over 10,000 crash states in the default suite
