"""Damage and I/O faults: truncation at every offset, bit flips, EIO, ENOSPC, restarts, retention."""
from __future__ import annotations

import errno
import random

import pytest

from edged.journal import frame as fr
from edged.journal.segment import SEGDIR
from edged.journal.store import Entry, Store
from edged.journal.verify import verify
from simdisk import SimDisk


def filled(records: int = 40, segment_size: int = 1 << 20, batch: int = 1) -> tuple[SimDisk, Store]:
    disk = SimDisk()
    store = Store(disk, segment_size=segment_size, ranges={"r": (1, 10**9)})
    store.open()
    for i in range(0, records, batch):
        res = store.append([[Entry("sale", {"i": i + k, "pad": "x" * (i % 50)}, tx_id=f"t{i + k}", counter="r")
                             for k in range(batch)]])
        assert isinstance(res[0], list)
    return disk, store


def reopen(disk: SimDisk) -> Store:
    store = Store(disk, ranges={"r": (1, 10**9)})
    store.open()
    return store


def test_truncation_at_every_offset_of_the_tail():
    disk, store = filled(records=30, batch=3)
    name = f"{SEGDIR}/{store.active.name}"
    whole = disk.read(name)
    store.close()
    boundaries = {fr.SEG_HEAD_SIZE}
    pos = fr.SEG_HEAD_SIZE
    for rec in store.records(1):
        pos += rec.size
        if rec.seq == rec.batch_last:
            boundaries.add(pos)
    tail_start = len(whole) - 3 * 2 * 200  # the last few batches, every single byte
    for cut in range(max(tail_start, fr.SEG_HEAD_SIZE), len(whole) + 1):
        d = SimDisk()
        d.names[name] = d.durable_names[name] = type(disk.names[name])(whole[:cut])
        s = reopen(d)  # never raises
        assert s.problems == [], (cut, s.problems)
        kept = max(b for b in boundaries if b <= cut)
        assert len(d.read(name)) == kept  # cut back to the last whole batch
        if cut != kept:
            assert d.listdir("torn"), cut  # what was cut is kept aside
        assert verify(d).ok


def test_bit_flips_are_reported_where_they_are_never_raise():
    rng = random.Random(3)
    disk, store = filled(records=120, segment_size=4000, batch=2)
    store.close()
    names = [n for n in disk.listdir(SEGDIR) if n.endswith(".seg")]
    assert len(names) > 3
    for _ in range(300):
        d = SimDisk()
        for n, inode in disk.names.items():
            d.names[n] = d.durable_names[n] = type(inode)(inode.current())
        victim = rng.choice(names[:-1]) if rng.random() < 0.7 else names[-1]
        data = bytearray(d.read(f"{SEGDIR}/{victim}"))
        bit = rng.randrange(len(data) * 8)
        data[bit // 8] ^= 1 << (bit % 8)
        d.names[f"{SEGDIR}/{victim}"].synced = bytes(data)
        report = verify(d)
        assert not report.ok
        where = [p for p in report.problems if p.startswith(victim)]
        assert where, (victim, report.problems)
        offset = int(where[0].split("offset ")[1].split(":")[0])
        assert offset <= bit // 8  # the problem is reported at or before the flipped byte's frame
        s = reopen(d)  # opening never raises; a flip in the active segment is cut or reported
        if victim == names[-1]:
            assert s.problems or verify(d).ok or d.listdir("torn")


def test_eio_on_fdatasync_nacks_the_batch_and_turns_read_only():
    disk, store = filled(records=5)
    disk.fail["fdatasync"] = errno.EIO
    [err] = store.append([[Entry("sale", 1)]])
    assert err.code == "journal_unavailable" and "fdatasync" in err.message
    [again] = store.append([[Entry("sale", 2)]])  # no retry of a failed fdatasync, ever
    assert again.code == "journal_unavailable" and "until restart" in again.message
    assert store.last_seq == 5
    store.close()
    restarted = reopen(disk)
    assert restarted.last_seq == 5 and restarted.read_only is None
    [[ok]] = restarted.append([[Entry("sale", 3)]])
    assert ok.seq == 6


def test_disk_full_is_a_clear_error_and_clears_when_space_returns():
    disk, store = filled(records=5)
    disk.fail["write"] = errno.ENOSPC
    [err] = store.append([[Entry("sale", 1, tx_id="full", counter="r")]])
    assert err.code == "journal_unavailable" and err.message == "disk full"
    assert store.read_only is None and store.last_seq == 5
    [[ok]] = store.append([[Entry("sale", 1, tx_id="full", counter="r")]])  # space is back
    assert (ok.seq, ok.number, ok.duplicate) == (6, 6, False)  # nothing was used up by the failure


def test_duplicate_tx_id_across_restart_and_rotation():
    disk, store = filled(records=60, segment_size=2000)
    assert len(store.segments) > 2
    store.close()
    s = reopen(disk)
    [[dup]] = s.append([[Entry("sale", "again", tx_id="t3", counter="r")]])
    assert dup.duplicate and dup.seq == 4 and dup.number == 4
    [[new]] = s.append([[Entry("sale", "new", tx_id="t-new", counter="r")]])
    assert (new.seq, new.number) == (61, 61)


def test_crash_during_recovery_then_recover_again():
    disk, store = filled(records=20, batch=4)
    store.append([[Entry("sale", "torn")]])
    name = f"{SEGDIR}/{store.active.name}"
    inode = disk.names[name]
    inode.synced = inode.synced[:-10]  # a torn last batch
    for stop_after in range(1, 12):
        d = SimDisk()
        for n, i in disk.names.items():
            d.names[n] = d.durable_names[n] = type(i)(i.current())
        steps = {"n": 0}

        def hook(sd, limit=stop_after):
            steps["n"] += 1
            if steps["n"] == limit:
                raise KeyboardInterrupt  # power goes while recovery writes
        d.on_step = hook
        try:
            Store(d).open()
        except KeyboardInterrupt:
            pass
        d.on_step = None
        crashed = d.crash("drop", random.Random(stop_after))
        s = reopen(crashed)
        assert s.problems == [] and s.last_seq == 20
        assert verify(crashed).ok


def test_retention_interrupted_midway_keeps_floor_forward():
    disk, store = filled(records=80, segment_size=1500)
    calls = {"n": 0}

    def hook(sd):
        calls["n"] += 1
        if calls["n"] == 8:  # checkpoint written (6 calls), one segment unlinked, power goes
            raise KeyboardInterrupt
    disk.on_step = hook
    with pytest.raises(KeyboardInterrupt):
        store.retain(acked=40, min_age_us=0)
    disk.on_step = None
    floor = store.first_seq
    assert floor > 1
    for mode in ("drop", "torn"):
        s = reopen(disk.crash(mode, random.Random(1)))
        assert s.problems == []
        assert s.first_seq == floor  # the floor moved first and never goes back
        left = [n for n in s.disk.listdir(SEGDIR) if n.endswith(".seg")]
        assert left and all(int(n[:20]) >= floor for n in left), left  # leftovers below it are gone
        assert [r.seq for r in s.records(floor)][0] == floor
        assert verify(s.disk).ok


def test_number_range_gapless_across_100_crashes():
    rng = random.Random(11)
    disk = SimDisk()
    numbers = []
    for crash in range(100):
        store = Store(disk, segment_size=1500, ranges={"r": (500, 10**6)})
        store.open()
        for _ in range(rng.randint(1, 4)):
            res = store.append([[Entry("sale", crash, counter="r")]])
            numbers.append(res[0][0].number)
        disk = disk.crash(rng.choice(["drop", "torn", "zeros", "garble"]), rng)
    s = Store(disk, ranges={"r": (500, 10**6)})
    s.open()
    assert numbers == list(range(500, 500 + len(numbers)))
    got = [r.number for r in s.records(1)]
    assert got == numbers


def test_sealed_tx_index_before_and_after_the_set_and_on_collisions(monkeypatch):
    disk, store = filled(records=60, segment_size=2000)
    store.close()
    s = reopen(disk)
    assert s.txi.sealed  # loaded from .idx files, not rescanned
    [[dup]] = s.append([[Entry("sale", "x", tx_id="t5")]])  # bisect path: no set yet
    assert dup.duplicate and dup.seq == 6
    s.txi.build_set()
    [[dup2]] = s.append([[Entry("sale", "x", tx_id="t7")]])
    assert dup2.duplicate and dup2.seq == 8
    [[fresh]] = s.append([[Entry("sale", "x", tx_id="never-seen")]])
    assert not fresh.duplicate
    # every tx_id hashing alike: a hash match alone must never make a duplicate
    from edged.journal import txindex
    s.close()
    monkeypatch.setattr(txindex, "tx_hash", lambda tx: 42)
    disk2, store2 = filled(records=30, segment_size=1500)
    store2.close()
    s2 = reopen(disk2)
    [[new]] = s2.append([[Entry("sale", "x", tx_id="another")]])
    assert not new.duplicate and new.seq == 31
    [[old]] = s2.append([[Entry("sale", "x", tx_id="t2")]])
    assert old.duplicate and old.seq == 3


def test_unreadable_tx_index_is_rebuilt_from_its_segment():
    disk, store = filled(records=60, segment_size=2000)
    store.close()
    idx = [n for n in disk.listdir(SEGDIR) if n.endswith(".idx")][0]
    disk.names[f"{SEGDIR}/{idx}"].synced = b"garbage"
    s = Store(disk, ranges={"r": (1, 10**9)})
    s.open(load_index=False)
    assert not s.txi.loaded.is_set()  # open did not wait for the indexes
    s.load_tx_index()  # what the daemon's background thread does
    [[dup]] = s.append([[Entry("sale", "again", tx_id="t0")]])
    assert dup.duplicate and dup.seq == 1


@pytest.mark.parametrize("reader", ["records", "wired"])
def test_a_damaged_seq_field_raises_on_read_instead_of_ending_it(tmp_path, reader):
    from edged.journal.disk import RealDisk

    store = Store(RealDisk(str(tmp_path)))
    store.open()
    store.append([[Entry("sale", i) for i in range(10)]])
    name = store.active.name
    store.close()
    path = tmp_path / SEGDIR / name
    data = bytearray(path.read_bytes())
    pos = fr.SEG_HEAD_SIZE
    for _ in range(4):  # the 5th record's seq becomes huge
        pos += fr.HEAD_SIZE + int.from_bytes(data[pos:pos + 4], "big")
    data[pos + 4:pos + 12] = (2**63).to_bytes(8, "big")
    path.write_bytes(bytes(data))
    with pytest.raises(fr.FrameError):
        list(getattr(store, reader)(1))
