"""The journal's layout on disk and the store state recovery rebuilds.

A leaf module: store.py, recovery.py, highwater.py and verify.py all read the
names of the journal's files and the Segment record from here, so none of
them imports another for them. `Segments` is the part of the Store that
recovery and the high-water mark work on: a Protocol, so they need not import
store.py (which calls them) for its type.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from . import frame as fr
from .disk import Disk
from .txindex import TxIndex

SEGDIR, CHECKPOINT, CURSORS, TORN = "segments", "checkpoint", "cursors", "torn"


@dataclass
class Segment:
    name: str
    first_seq: int
    last_seq: int
    last_ts: int = 0
    chain_end: bytes = fr.GENESIS
    sealed: bool = False
    size: int = fr.SEG_HEAD_SIZE
    counters: dict[str, int] = field(default_factory=dict)  # counter values at the segment's end

    def meta(self) -> dict[str, Any]:
        return {"name": self.name, "first_seq": self.first_seq, "last_seq": self.last_seq,
                "last_ts": self.last_ts, "chain_end": self.chain_end}


def seg_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


class Segments(Protocol):
    """What recovery (recovery.py) and the lost-tail check (highwater.py) read and set on the Store."""
    disk: Disk
    segments: list[Segment]
    first_seq: int
    last_seq: int
    chain: bytes
    counters: dict[str, int]
    sealed_counters: dict[str, int]
    txi: TxIndex
    problems: list[str]
    reserved: int
    hw_durable: int

    @property
    def active(self) -> Segment: ...
    def load_cursors(self) -> dict[str, int]: ...
    def new_segment(self) -> None: ...
    def open_active(self) -> None: ...
    def close(self) -> None: ...
    def write_index(self, seg: Segment) -> None: ...
    def write_checkpoint(self) -> None: ...
    def remove_files(self, name: str) -> None: ...
