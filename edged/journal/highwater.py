"""Seqs are never handed out twice: the durable high-water mark and `journal.lost`.

Storage that lies about a flush (a cheap SD card, a USB bridge with a write
cache) can lose records that were acknowledged. Recovery then finds fewer
records than were handed out, and numbering on from the last one found would
give a lost record's seq to a new one: a consumer that had acked it would
skip the new record, one that had only received it would hold two different
records under one seq.

So the journal keeps a durable mark (`highwater`, written with write_atomic):
`reserved`, above every seq ever written, moved STEP seqs ahead whenever an
append would pass it (one small atomic write per STEP records, not per
append); and `durable`, the last seq acknowledged when it was written. When
recovery finds fewer records than a consumer's cursor or the mark's `durable`
proves existed, the journal continues above `reserved`, in a new segment
whose first record is `journal.lost` naming the range. That record declares
the gap: its chain link follows the last record found, so readers (recovery,
`edged journal verify`) accept exactly that jump and no other, and every
consumer receives it in seq order (docs/JOURNAL.md, "Lost records").
"""
from __future__ import annotations

import logging
from typing import Any

import msgpack

from . import frame as fr
from .disk import Disk, write_atomic
from .segment import SEGDIR, Segments

log = logging.getLogger("edged.journal")

HIGHWATER = "highwater"
STEP = 1024  # seqs reserved per write of the mark
LOST = "journal.lost"


class HighWaterError(Exception):
    """The mark cannot be read: startup stops with this one line (seqs could be reused otherwise)."""


def load(disk: Disk) -> tuple[int, int]:
    """(reserved, durable) from the mark; (0, 0) when there is none yet (a new or an older journal)."""
    try:
        data = disk.read(HIGHWATER)
    except FileNotFoundError:
        return 0, 0
    where = f"{getattr(disk, 'root', 'journal')}/{HIGHWATER}"
    try:
        mark = msgpack.unpackb(data, raw=False)
        reserved, durable = mark["reserved"], mark["durable"]
    except Exception as e:
        raise HighWaterError(f"{where} is damaged ({type(e).__name__}: {e}); it guards against reusing seqs "
                             "after a lost tail: restore it from a backup, or remove it if the journal lost "
                             "nothing (edged then trusts the consumers' cursors alone)") from None
    if not (type(reserved) is int and type(durable) is int and 0 <= durable <= reserved):
        raise HighWaterError(f"{where} holds reserved={reserved!r} durable={durable!r}, not two seqs with "
                             "durable <= reserved: restore it from a backup, or remove it if the journal "
                             "lost nothing")
    return reserved, durable


def write(disk: Disk, reserved: int, durable: int) -> None:
    write_atomic(disk, HIGHWATER, msgpack.packb({"version": 1, "reserved": reserved, "durable": durable}))


def proven(store: Segments) -> int:
    """The highest seq that an ack proves existed: a consumer's cursor, or the mark's `durable`."""
    acked = [v for v in store.load_cursors().values() if type(v) is int]
    return max([store.hw_durable, *acked])


def continue_above(store: Segments) -> dict[str, Any] | None:
    """After recovery: if records an ack proves existed are missing, number on above the mark in a
    new segment and return the body of the `journal.lost` record the store then appends as its first
    (None: nothing missing). Runs on the journal thread with the active segment open."""
    store.reserved, store.hw_durable = load(store.disk)
    proof = proven(store)
    found = store.last_seq
    if proof <= found:
        return None
    top = max(store.reserved, proof)
    log.critical("journal: records up to seq %d were acknowledged but recovery found only up to %d "
                 "(storage lost a flushed tail); seqs %d..%d are journaled as lost and never reused",
                 proof, found, found + 1, top)
    store.close()
    old = store.active
    if old.last_seq >= old.first_seq:
        old.sealed = True  # sealed as by a rotation: its index first, the checkpoint after the new segment
        store.write_index(old)
        store.sealed_counters = dict(store.counters)
    else:  # it holds nothing: the new segment replaces it
        store.segments.pop()
        store.remove_files(old.name)
        store.disk.fsync_dir(SEGDIR)
    store.last_seq = top
    store.new_segment()
    store.write_checkpoint()
    store.open_active()
    return {"first_seq": found + 1, "last_seq": top, "found": found, "acked": proof,
            "reason": "recovery found fewer records than acks prove existed (storage lost a flushed tail)"}


def declares_gap(data: Any, pos: int, prev_seq: int, first: int) -> bool:
    """Is the frame at pos the `journal.lost` record that declares seqs prev_seq+1..first-1 lost?"""
    try:
        rec = fr.decode(data, pos, None)
    except fr.FrameError:
        return False
    body = rec.body
    return (rec.seq == first and rec.kind == LOST and isinstance(body, dict)
            and body.get("first_seq") == prev_seq + 1 and body.get("last_seq") == first - 1)
