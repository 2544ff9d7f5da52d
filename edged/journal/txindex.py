"""tx_id -> (seq, number) for every retained record, cheap to open on a large journal.

Records appended or scanned in this run live in a dict. Sealed segments from
earlier runs are loaded from their `.idx` files as sorted 64-bit hashes with
parallel seq/number arrays (a read, no per-entry objects), so startup does not
build millions of strings. A set of all sealed hashes is built in the
background; until then lookups bisect each segment's array. A hash match is
confirmed against the record itself, so a collision can never turn a new
sale into a "duplicate".

A tx_id is scoped (PROTOCOL.md, "tx_id scope"): its scope is the appending
client's uid (kept in the record), EDGED for edged's own records (reserved
kinds: no client can write one), or None for a client's record from before
scopes. The index key is one string per (scope, tx_id), told apart by its
first character: "u<uid>\0<tx_id>", "e<tx_id>", "l<tx_id>" (strings, not
tuples: recovery makes one per record, and tuples would keep the cyclic GC
busy). The hash covers what follows that character, so a client's covers its
uid while the others hash the tx_id alone, as before: older `.idx` files
stay valid.
"""
from __future__ import annotations

import array
import bisect
import hashlib
import struct
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .kinds import RESERVED, problem, reserved

if TYPE_CHECKING:
    from .frame import Record

IDX_MAGIC = b"EDGEDX01"
_COUNT = struct.Struct(">I")
EDGED = "edged"  # the scope of edged's own tx_ids (day.close:<date>, print:<job_id>)
Scope = int | str | None
Key = str


def scope_of(kind: str, tx_uid: int | None) -> Scope:
    """Whose tx_id a record's is: its client's uid; EDGED for edged's kinds; None for a client's
    record written before tx_ids were scoped (it carries no uid)."""
    if tx_uid is not None:
        return tx_uid
    return EDGED if reserved(kind) else None


def make_key(scope: Scope, tx_id: str) -> Key:
    if isinstance(scope, int):
        return f"u{scope}\x00{tx_id}"
    return ("e" if scope == EDGED else "l") + tx_id


def key_of(rec: Record) -> Key | None:
    """The index key of a durable record; None when it holds no tx_id. A record of edged's kinds
    that is not one edged wrote (an older journal's forgery) holds none either, so edged's own
    record can still be written."""
    tx_id = rec.tx_id
    if tx_id is None:
        return None
    if rec.tx_uid is not None:
        return f"u{rec.tx_uid}\x00{tx_id}"
    if not rec.kind.startswith(RESERVED):  # inlined scope_of: recovery calls this per record
        return "l" + tx_id
    return None if problem(rec) is not None else "e" + tx_id


def tx_hash(tx_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(tx_id.encode(), digest_size=8).digest(), "big")


def key_hash(key: Key) -> int:
    return tx_hash(key[1:])  # "<uid>\0<tx_id>" for a client's, the tx_id alone for the others


def encode_idx(entries: dict[Key, tuple[int, int | None]]) -> bytes:
    """The .idx file: magic, u32 count, then count u64 hashes (sorted), u64 seqs, i64 numbers (-1: none)."""
    rows = sorted((key_hash(key), seq, -1 if number is None else number) for key, (seq, number) in entries.items())
    hashes = array.array("Q", (r[0] for r in rows))
    seqs = array.array("Q", (r[1] for r in rows))
    numbers = array.array("q", (r[2] for r in rows))
    if sys.byteorder == "little":  # stored big-endian like everything else
        for a in (hashes, seqs, numbers):
            a.byteswap()
    return IDX_MAGIC + _COUNT.pack(len(rows)) + hashes.tobytes() + seqs.tobytes() + numbers.tobytes()


def decode_idx(data: bytes) -> tuple[array.array, array.array, array.array]:
    if data[:8] != IDX_MAGIC:
        raise ValueError("not an edged transaction index")
    (count,) = _COUNT.unpack_from(data, 8)
    if len(data) != 12 + 24 * count:
        raise ValueError(f"index of {len(data)} bytes cannot hold {count} entries")
    out = []
    for i, code in enumerate("QQq"):
        a = array.array(code)
        a.frombytes(data[12 + 8 * count * i:12 + 8 * count * (i + 1)])
        if sys.byteorder == "little":
            a.byteswap()
        out.append(a)
    return out[0], out[1], out[2]


class TxIndex:
    def __init__(self) -> None:
        self.recent: dict[Key, tuple[int, int | None]] = {}
        self.by_segment: dict[str, dict[Key, tuple[int, int | None]]] = {}
        self.sealed: dict[str, tuple[array.array, array.array, array.array]] = {}
        self.to_load: list[str] = []  # sealed segments whose .idx is read after startup
        self.loaded = threading.Event()
        self.loaded.set()
        self._all: set[int] | None = None
        self._lock = threading.Lock()

    def add(self, segment: str, key: Key, seq: int, number: int | None) -> None:
        self.recent[key] = (seq, number)
        self.by_segment.setdefault(segment, {})[key] = (seq, number)

    def load(self, segment: str, data: bytes) -> None:
        self.sealed[segment] = decode_idx(data)

    def load_all(self, read_idx: Callable[[str], bytes], rebuild: Callable[[str], bytes]) -> None:
        """Background, after startup: read the sealed segments' indexes, then build the hash set.

        An index that cannot be read is rebuilt from its segment (and logged by the caller)."""
        try:
            for segment in list(self.to_load):
                try:
                    self.load(segment, read_idx(segment))
                except (OSError, ValueError):
                    self.load(segment, rebuild(segment))
        finally:
            self.to_load.clear()
            self.loaded.set()
        self.build_set()

    def build_set(self) -> None:
        """Lookups are correct before and after; the set only makes misses fast."""
        hashes: set[int] = set()
        seen = dict(self.sealed)
        for h, _, _ in seen.values():
            hashes.update(h)
        with self._lock:
            for name, (h, _, _) in list(self.sealed.items()):
                if name not in seen:  # sealed by a rotation meanwhile
                    hashes.update(h)
            self._all = hashes

    def seal(self, segment: str, data: bytes) -> None:
        """A segment of this run was sealed: its entries move from dicts (~250 bytes each) to the
        arrays of its .idx (24 bytes each), so the index in memory grows with the journal on disk
        at a tenth of its rate, not with every tx_id a client ever sent."""
        arrays = decode_idx(data)
        with self._lock:
            self.sealed[segment] = arrays
            if self._all is not None:
                self._all.update(arrays[0])
        for tx_id in self.by_segment.pop(segment, {}):  # after: a lookup never misses meanwhile
            self.recent.pop(tx_id, None)

    def drop_segment(self, segment: str) -> None:
        for key in self.by_segment.pop(segment, {}):
            self.recent.pop(key, None)
        self.sealed.pop(segment, None)  # a stale hash in the set only costs a bisect

    def get(self, key: Key, confirm: Callable[[int, Key], bool]) -> tuple[int, int | None] | None:
        found = self.recent.get(key)
        if found is not None:
            return found
        if not self.loaded.is_set():  # is_set() first: wait() takes a lock even when set
            self.loaded.wait()  # only in the first moments after starting on a large journal
        if not self.sealed:
            return None
        h = key_hash(key)
        with self._lock:
            if self._all is not None and h not in self._all:
                return None
        for hashes, seqs, numbers in list(self.sealed.values()):
            i = bisect.bisect_left(hashes, h)
            while i < len(hashes) and hashes[i] == h:
                if confirm(seqs[i], key):
                    return seqs[i], None if numbers[i] < 0 else numbers[i]
                i += 1
        return None
