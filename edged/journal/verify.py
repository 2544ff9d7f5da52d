"""Checking a whole journal (CRC, sequence, chain) and reading it for `dump`.

Works on the files alone, through a Disk, so it runs on a copy, a stick or a
live journal alike, and names the segment and offset of every problem.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import msgpack

from . import frame as fr
from . import highwater
from .disk import Disk
from .segment import CHECKPOINT, SEGDIR


@dataclass
class Report:
    segments: int = 0
    records: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    chain_head: bytes = b""
    problems: list[str] = field(default_factory=list)
    lost: list[tuple[int, int]] = field(default_factory=list)  # seq ranges journal.lost records declare

    @property
    def ok(self) -> bool:
        return not self.problems


def segment_names(disk: Disk) -> list[str]:
    return [n for n in disk.listdir(SEGDIR) if n.endswith(".seg")]


def verify(disk: Disk, from_seq: int = 0) -> Report:
    """Check every segment holding seqs >= from_seq; the chain is checked from the first one read."""
    report = Report()
    names = segment_names(disk)
    starts = [int(n[:20]) for n in names]
    first_idx = max([i for i, s in enumerate(starts) if s <= from_seq] or [0])
    chain: bytes | None = None
    expected: int | None = None
    for name in names[first_idx:]:
        report.segments += 1
        data = disk.read(f"{SEGDIR}/{name}")
        try:
            first, prev = fr.decode_segment_head(data)
        except fr.FrameError as e:
            report.problems.append(f"{name} offset 0: {e.reason}")
            chain = expected = None
            continue
        if expected is not None and first > expected and highwater.declares_gap(data, fr.SEG_HEAD_SIZE,
                                                                               expected - 1, first):
            report.lost.append((expected, first - 1))  # declared by its journal.lost record
        elif expected is not None and first != expected:
            report.problems.append(f"{name} offset 0: starts at seq {first}, expected {expected} (records missing)")
        if chain is not None and prev != chain:
            report.problems.append(f"{name} offset 0: chain does not continue the previous segment")
        chain, expected, pos = prev, first, fr.SEG_HEAD_SIZE
        while pos < len(data):
            try:
                seq, size, chain = fr.check(data, pos, chain)
            except fr.FrameError as e:
                report.problems.append(f"{name} offset {pos}: {e.reason}")
                break  # lengths past a bad frame cannot be trusted
            if seq != expected:
                report.problems.append(f"{name} offset {pos}: seq {seq}, expected {expected}")
            if seq >= from_seq:
                report.records += 1
                if report.first_seq is None:
                    report.first_seq = seq
                report.last_seq = seq
            expected, pos = seq + 1, pos + size
        report.chain_head = chain or b""
    return report


def read_all(disk: Disk, from_seq: int = 0, kinds: set[str] | None = None) -> Iterator[fr.Record]:
    """Every readable record from from_seq on, in order (stops inside a segment at damage)."""
    for name in segment_names(disk):
        data = disk.read(f"{SEGDIR}/{name}")
        pos = fr.SEG_HEAD_SIZE
        while pos < len(data):
            try:
                rec = fr.decode(data, pos, None)
            except fr.FrameError:
                break
            pos += rec.size
            if rec.seq >= from_seq and (not kinds or rec.kind in kinds):
                yield rec


def checkpoint(disk: Disk) -> dict:
    try:
        return msgpack.unpackb(disk.read(CHECKPOINT), raw=False)
    except FileNotFoundError:
        return {}
