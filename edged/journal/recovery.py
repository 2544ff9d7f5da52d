"""Opening a journal: trust the checkpoint for sealed segments, scan the rest.

Only segments not recorded as sealed are read (normally just the active one).
A damaged last batch with nothing durable after it is a torn write: it is cut
and kept under torn/. Damage that later batches prove was once durable is
reported (the journal turns degraded), never skipped.
"""
from __future__ import annotations

import logging
import re
import struct

from . import frame as fr
from . import highwater, statefile
from .disk import write_atomic
from .segment import CHECKPOINT, SEGDIR, TORN, Segment, Segments
from .shapes import CHAIN, SEQ, STR, Int, ListOf, Map, MapOf
from .txindex import encode_idx, key_of

log = logging.getLogger("edged.journal")
_SEARCH = 64  # sequence numbers looked for at a time past damage
_SEG_NAME = re.compile(r"[0-9]{20}\.seg")
_CHECKPOINT = Map({"first_seq": Int(1), "counters": MapOf(STR, Int()),
                   "sealed": ListOf(Map({"name": STR, "first_seq": Int(1), "last_seq": SEQ, "last_ts": Int(),
                                         "chain_end": CHAIN}))}, {"version": Int()})
CHECKPOINT_REMEDY = ("restore it from a backup of the state directory (edged does not guess where the journal "
                     "starts or which numbers were used; the segments are untouched: `edged journal verify`)")


def recover(store: Segments) -> None:
    disk = store.disk
    disk.mkdir(SEGDIR)
    disk.mkdir(TORN)
    for folder in ("", SEGDIR):
        for name in disk.listdir(folder):
            if name.endswith(".tmp"):  # an atomic write that never got renamed
                disk.unlink(f"{folder}/{name}" if folder else name)
    cp = statefile.read(disk, CHECKPOINT, _CHECKPOINT, CHECKPOINT_REMEDY)
    if cp is None:
        cp = {"first_seq": 1, "sealed": [], "counters": {}}
    store.first_seq = cp["first_seq"]
    store.sealed_counters = dict(cp["counters"])
    store.counters = dict(cp["counters"])
    files = [n for n in disk.listdir(SEGDIR) if n.endswith(".seg")]
    for name in files:  # every *.seg there is taken as journal: one edged did not name is not guessed at
        if not _SEG_NAME.fullmatch(name):
            raise statefile.StateFileError(statefile.path_of(disk, f"{SEGDIR}/{name}"),
                                           "not a segment name edged writes (20 digits, then .seg)",
                                           "move it out of the journal directory")
    sealed = {m["name"]: m for m in cp["sealed"]}
    for name in files:  # retention that was interrupted after the floor moved
        if name not in sealed and int(name[:20]) < store.first_seq and name != files[-1]:
            _remove(store, name)
    files = [n for n in disk.listdir(SEGDIR) if n.endswith(".seg")]
    store.last_seq = store.first_seq - 1
    store.chain = b""  # unknown until a sealed segment or a header gives it
    for meta in cp["sealed"]:
        if meta["last_seq"] < store.first_seq:
            continue
        if meta["name"] not in files:
            store.problems.append(f"sealed segment {meta['name']} is missing")
            return
        seg = Segment(meta["name"], meta["first_seq"], meta["last_seq"], meta["last_ts"], meta["chain_end"],
                      sealed=True)
        store.txi.to_load.append(seg.name)  # read after startup, see TxIndex.load_all
        store.segments.append(seg)
        store.last_seq, store.chain = seg.last_seq, seg.chain_end
    if store.txi.to_load:
        store.txi.loaded.clear()
    unsealed = [n for n in files if n not in sealed]
    for i, name in enumerate(unsealed):
        if not _scan(store, name, last=i == len(unsealed) - 1):
            return
    if not store.chain:
        store.chain = fr.GENESIS
    # A crash between starting a new segment and writing the checkpoint leaves the
    # previous one unrecorded: seal it now (its index was written before the new segment).
    late = [s for s in store.segments[:-1] if not s.sealed]
    for seg in late:
        seg.sealed = True
        write_atomic(disk, f"{SEGDIR}/{seg.name}.idx", encode_idx(store.txi.by_segment.get(seg.name, {})))
    if late:
        store.sealed_counters = dict(late[-1].counters)
        store.write_checkpoint()


def _remove(store: Segments, name: str) -> None:
    store.remove_files(name)
    store.disk.fsync_dir(SEGDIR)


def _scan(store: Segments, name: str, last: bool) -> bool:
    data = store.disk.read(f"{SEGDIR}/{name}")
    try:
        first, prev = fr.decode_segment_head(data)
    except fr.FrameError as e:
        if last and len(data) <= fr.SEG_HEAD_SIZE:
            _remove(store, name)  # its creation was cut short; nothing was ever acked in it
            return True
        store.problems.append(f"segment {name} offset 0: {e.reason}")
        return False
    jumped = first > store.last_seq + 1 and (not store.chain or prev == store.chain)
    if jumped and last and len(data) <= fr.SEG_HEAD_SIZE:
        _remove(store, name)  # made for a lost range and cut before its journal.lost: done again
        return True
    if jumped and highwater.declares_gap(data, fr.SEG_HEAD_SIZE, store.last_seq, first):
        pass  # seqs journaled as lost (highwater.py): the chain runs on across them
    elif first != store.last_seq + 1 or (store.chain and prev != store.chain):
        store.problems.append(f"segment {name} offset 0: starts at {first} with another chain than "
                              f"the journal's seq {store.last_seq}")
        return False
    seg = Segment(name, first, first - 1, chain_end=prev, counters=dict(store.counters))
    chain, last_seq, pos, good_end = prev, first - 1, fr.SEG_HEAD_SIZE, fr.SEG_HEAD_SIZE
    pending: list[fr.Record] = []
    damage = None
    view = memoryview(data)
    while pos < len(data):
        try:
            rec = fr.decode(view, pos, chain)
            if rec.seq != last_seq + 1:
                raise fr.FrameError(f"sequence {rec.seq} where {last_seq + 1} was due")
        except fr.FrameError as e:
            damage = (pos, e.reason)
            break
        pending.append(rec)
        chain, last_seq, pos = rec.chain, rec.seq, pos + rec.size
        if rec.seq == rec.batch_last:  # the batch is whole: take it
            for r in pending:
                _take(store, seg, r)
            pending, good_end = [], pos
    seg.counters = dict(seg.counters)
    if damage is None and good_end == len(data):
        store.segments.append(seg)
        return True
    batch_first = pending[0].batch_first if pending else seg.last_seq + 1
    at, reason = damage if damage else (pos, "batch incomplete at end of file")
    if not last or _later_batch_exists(data, at, batch_first):
        store.segments.append(seg)
        store.problems.append(f"segment {name} offset {at}: {reason}")
        return False
    torn = data[good_end:]
    write_atomic(store.disk, f"{TORN}/{name}.{good_end}", torn)
    handle = store.disk.open(f"{SEGDIR}/{name}", create=False)
    try:
        store.disk.truncate(handle, good_end)
        store.disk.fdatasync(handle)
    finally:
        store.disk.close(handle)
    log.warning("journal: cut a torn tail of %d bytes from %s at offset %d (%s); kept in %s/",
                len(torn), name, good_end, reason, TORN)
    store.segments.append(seg)
    return True


def _take(store: Segments, seg: Segment, rec: fr.Record) -> None:
    seg.size += rec.size
    seg.last_seq, seg.last_ts, seg.chain_end = rec.seq, rec.ts, rec.chain
    store.last_seq, store.chain = rec.seq, rec.chain
    if rec.counter is not None and rec.number is not None:  # a counter always comes with its number
        store.counters[rec.counter] = rec.number
        seg.counters = store.counters  # shared while scanning; copied once the scan is done
    if rec.tx_id is not None and (key := key_of(rec)) is not None:
        store.txi.add(seg.name, key, rec.seq, rec.number)


def _later_batch_exists(data: bytes, at: int, batch_first: int) -> bool:
    """Is there a valid frame past `at` from a batch written after the damaged one?

    Batches are written one after another, each synced before the next, so
    such a frame proves the damaged batch had been durable: real damage."""
    start = batch_first + 1
    for _ in range(10_000):
        found = None
        for seq in range(start, start + _SEARCH):
            i = data.find(struct.pack(">Q", seq), at)
            while i != -1 and found is None:
                if i - 4 >= at:
                    try:
                        found = fr.decode(data, i - 4, None)
                    except fr.FrameError:
                        pass
                i = data.find(struct.pack(">Q", seq), i + 1) if found is None else -1
            if found:
                break
        if found is None:
            return False
        if found.batch_first > batch_first:
            return True
        start = found.batch_last + 1  # same (unsynced) batch: look past it
    return False
