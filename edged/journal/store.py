"""The journal's synchronous core: segments, recovery, batched durable appends,
rotation, cursors and retention. One thread uses it at a time (service.py's
worker); every file touch goes through a Disk so power loss can be simulated.
"""
from __future__ import annotations

import errno
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack

from ..relay.protocol import RequestError
from . import frame as fr
from . import highwater, recovery, statefile
from .disk import Disk, write_atomic
from .segment import CHECKPOINT, CURSORS, SEGDIR, Segment, seg_name
from .shapes import SEQ, STR, MapOf
from .txindex import TxIndex, encode_idx, key_of, make_key, scope_of

log = logging.getLogger("edged.journal")

DEFAULT_SEGMENT_SIZE = 16 << 20
CURSORS_REMEDY = ("restore it from a backup, or remove it: every consumer then counts as new and reads again "
                  "from the oldest retained record (delivery is at least once)")


class JournalError(RequestError):
    """A journal refusal; the socket answers it with its code like any request error."""


@dataclass
class Entry:
    kind: str
    body: Any
    tx_id: str | None = None
    counter: str | None = None
    tx_uid: int | None = None  # the appending client's uid: its tx_id's scope (None: edged's own)

    def key(self) -> str:
        return make_key(scope_of(self.kind, self.tx_uid), self.tx_id or "")


@dataclass
class Appended:
    seq: int
    number: int | None
    duplicate: bool
    record: fr.Record | None = None  # None for duplicates


def _size_at(data: memoryview, pos: int) -> int:
    return fr.HEAD_SIZE + int.from_bytes(data[pos:pos + 4], "big")


def now_us() -> int:
    return time.time_ns() // 1000


class Store:
    def __init__(self, disk: Disk, *, segment_size: int = DEFAULT_SEGMENT_SIZE,
                 ranges: dict[str, tuple[int, int]] | None = None) -> None:
        self.disk = disk
        self.segment_size = segment_size
        self.ranges = ranges or {}
        self.segments: list[Segment] = []
        self.first_seq = 1  # retention floor: lowest seq kept
        self.last_seq = 0  # highest durable seq
        self.chain = fr.GENESIS
        self.counters: dict[str, int] = {}
        self.sealed_counters: dict[str, int] = {}  # as of the last seal, kept even when retention deletes it
        self.txi = TxIndex()
        self.problems: list[str] = []  # non-empty: degraded
        self.read_only: str | None = None
        self.reserved = 0  # no seq above it was ever written (highwater.py)
        self.hw_durable = 0  # the last acknowledged seq when the mark was written
        self._handle: int | None = None

    # ---------- opening and recovery ----------

    def open(self, load_index: bool = True) -> None:
        """Recover and get ready to append. With load_index=False the sealed segments'
        tx-id indexes are left for load_tx_index() (the daemon runs it in the background)."""
        recovery.recover(self)
        if self.problems:
            self.read_only = "journal degraded: " + "; ".join(self.problems)
            log.error("journal degraded, appends refused: %s", "; ".join(self.problems))
        elif not self.segments or self.segments[-1].sealed:
            self.new_segment()
        if not self.problems:
            self.open_active()
            # acked records missing: number on above them (seqs never reused), the gap journaled first
            lost = highwater.continue_above(self)
            if lost is not None:
                result = self.append([[Entry(highwater.LOST, lost)]])[0]
                if isinstance(result, Exception):
                    log.error("journal: the journal.lost record could not be written: %s", result)
        if load_index and not self.txi.loaded.is_set():
            self.load_tx_index()

    def open_active(self) -> None:
        self._handle = self.disk.open(f"{SEGDIR}/{self.segments[-1].name}", create=False)

    @property
    def active(self) -> Segment:
        return self.segments[-1]

    def close(self) -> None:
        if self._handle is not None:
            self.disk.close(self._handle)
            self._handle = None

    # ---------- appending ----------

    def append(self, groups: list[list[Entry]]) -> list[list[Appended] | JournalError]:
        """Write every group that passes its checks in one write + one fdatasync.

        A group is all or nothing. Returns, per group, its results or its error."""
        if self.read_only:
            return [JournalError("journal_unavailable", self.read_only) for _ in groups]
        if self.active.size >= self.segment_size and self.active.last_seq >= self.active.first_seq:
            try:
                self.rotate()
            except OSError as e:
                return self._fail(groups, f"rotation failed: {e}", fatal=True)
        out: list[list[Appended] | JournalError] = []
        seq, counters = self.last_seq, dict(self.counters)
        new_tx: dict[Any, tuple[int, int | None]] = {}
        todo: list[tuple[int, Entry, int | None, Appended]] = []
        for group in groups:
            seq0, n0 = seq, len(todo)
            saved: dict[str, int | None] = {}  # to undo this group alone
            try:
                results = []
                for entry in group:
                    key = entry.key() if entry.tx_id is not None else None  # made once per entry
                    known = self._known(entry, key, new_tx) if key is not None else None
                    if known is not None:
                        results.append(Appended(known[0], known[1], True))
                        continue
                    number = None
                    if entry.counter is not None:
                        if entry.counter not in self.ranges:
                            raise JournalError("bad_request", f"no number range named {entry.counter!r}")
                        first, last = self.ranges[entry.counter]
                        number = max(counters.get(entry.counter, first - 1), first - 1) + 1
                        if number > last:
                            raise JournalError("range_exhausted",
                                               f"number range {entry.counter!r} is used up ({first}..{last})")
                        saved.setdefault(entry.counter, counters.get(entry.counter))
                        counters[entry.counter] = number
                    seq += 1
                    appended = Appended(seq, number, False)
                    if key is not None:
                        new_tx[key] = (seq, number)
                    todo.append((seq, entry, number, appended))
                    results.append(appended)
                out.append(results)
            except JournalError as err:
                seq = seq0
                for _, entry, _, _ in todo[n0:]:
                    new_tx.pop(entry.key(), None)
                del todo[n0:]
                for name, value in saved.items():
                    if value is None:
                        counters.pop(name, None)
                    else:
                        counters[name] = value
                out.append(err)
        if not todo:
            return out
        ts = now_us()
        first, last = todo[0][0], todo[-1][0]
        chain, parts = self.chain, []
        for s, entry, number, appended in todo:
            tx_uid = entry.tx_uid if entry.tx_id is not None else None
            payload = fr.payload_of(entry.kind, entry.body, entry.tx_id, entry.counter, number, tx_uid)
            data, chain = fr.encode(s, ts, payload, first, last, chain)
            parts.append(data)
            appended.record = fr.Record(s, ts, entry.kind, entry.body, entry.tx_id, entry.counter, number, chain,
                                        len(data), first, last, tx_uid=tx_uid, frame=data)
        blob = b"".join(parts)
        offset = self.active.size
        assert self._handle is not None
        if last > self.reserved:  # the mark moves ahead before any seq beyond it reaches the disk
            try:
                highwater.write(self.disk, last + highwater.STEP, self.last_seq)
            except OSError as e:
                disk_full = e.errno in (errno.ENOSPC, errno.EDQUOT)
                return self._fail_groups(out, f"high-water mark not written: {e}", fatal=not disk_full)
            self.reserved = last + highwater.STEP
        try:
            self.disk.write_at(self._handle, offset, blob)
        except OSError as e:
            self._cut_back(offset)
            disk_full = e.errno in (errno.ENOSPC, errno.EDQUOT)
            why = "disk full" if disk_full else f"write failed: {e}"
            return self._fail_groups(out, why, fatal=not disk_full)
        try:
            self.disk.fdatasync(self._handle)
        except OSError as e:
            # Never retry fdatasync and trust it: the page cache may have dropped the data.
            self._cut_back(offset)
            return self._fail_groups(out, f"fdatasync failed: {e}", fatal=True)
        seg = self.active
        seg.size = offset + len(blob)
        seg.last_seq, seg.last_ts, seg.chain_end = last, ts, chain
        seg.counters = counters
        self.last_seq, self.chain, self.counters = last, chain, counters
        for key, (s, number) in new_tx.items():
            self.txi.add(seg.name, key, s, number)
        return out

    def _known(self, e: Entry, key: str, new_tx: dict) -> tuple[int, int | None] | None:
        """The record already holding e's tx_id (index key `key`) in e's scope. A client's tx_id
        also matches a record from before scopes (it has no uid): what that client may have
        appended then."""
        known = new_tx.get(key) or self.txi.get(key, self._confirm)
        if known is None and e.tx_uid is not None:
            legacy = make_key(None, e.tx_id or "")
            known = new_tx.get(legacy) or self.txi.get(legacy, self._confirm)
        return known

    def load_tx_index(self) -> None:
        """Read the sealed segments' tx-id indexes (a background thread runs this after open)."""
        def rebuild(name: str) -> bytes:
            log.warning("journal: transaction index of %s unreadable; rebuilding it from the segment", name)
            seg = next(s for s in self.segments if s.name == name)
            entries = {key: (r.seq, r.number) for r in self.records(seg.first_seq, seg.last_seq)
                       if (key := key_of(r)) is not None}
            return encode_idx(entries)

        self.txi.load_all(lambda name: self.disk.read(f"{SEGDIR}/{name}.idx"), rebuild)

    def _confirm(self, seq: int, key: str) -> bool:
        """Is record `seq` really the one with this tx_id in this scope (not a hash collision)?"""
        return any(key_of(rec) == key for rec in self.records(seq, seq))

    def _cut_back(self, offset: int) -> None:
        try:
            assert self._handle is not None
            self.disk.truncate(self._handle, offset)
        except OSError as e:
            self.read_only = f"cannot cut back a failed write: {e}"

    def _fail_groups(self, out: list, why: str, fatal: bool) -> list:
        if fatal:
            self.read_only = f"journal read-only until restart: {why}"
            log.critical("journal: %s", self.read_only)
        else:
            log.error("journal: append refused: %s", why)
        err = JournalError("journal_unavailable", why)
        return [r if isinstance(r, JournalError) else err for r in out]

    def _fail(self, groups: list, why: str, fatal: bool) -> list:
        return self._fail_groups([[] for _ in groups], why, fatal)

    # ---------- segments ----------

    def new_segment(self) -> None:
        first = self.last_seq + 1
        seg = Segment(seg_name(first), first, first - 1, chain_end=self.chain, counters=dict(self.counters))
        handle = self.disk.open(f"{SEGDIR}/{seg.name}", create=True)
        try:
            self.disk.truncate(handle, 0)
            self.disk.write_at(handle, 0, fr.encode_segment_head(first, self.chain))
            self.disk.fdatasync(handle)
        finally:
            self.disk.close(handle)
        self.disk.fsync_dir(SEGDIR)  # the directory entry is durable before the first ack in it
        self.segments.append(seg)

    def rotate(self) -> None:
        """Seal the active segment (index, then new segment, then checkpoint) and start a new one."""
        old = self.active
        if old.last_seq < old.first_seq:
            return
        self.write_index(old)
        self.close()
        self.new_segment()
        old.sealed = True
        self.sealed_counters = dict(self.counters)
        self.write_checkpoint()
        self._handle = self.disk.open(f"{SEGDIR}/{self.active.name}", create=False)

    def write_index(self, seg: Segment) -> None:
        data = encode_idx(self.txi.by_segment.get(seg.name, {}))
        write_atomic(self.disk, f"{SEGDIR}/{seg.name}.idx", data)
        self.txi.seal(seg.name, data)

    def gaps(self) -> list[tuple[int, int]]:
        """Seq ranges journaled as lost (journal.lost) within the retained journal."""
        out, expected = [], self.first_seq
        for seg in self.segments:
            if seg.first_seq > expected:
                out.append((expected, seg.first_seq - 1))
            expected = seg.last_seq + 1
        return out

    def lost_after(self, seq: int) -> int:
        """How many seqs above `seq` are lost (not records: lags leave them out)."""
        return sum(last - max(first, seq + 1) + 1 for first, last in self.gaps() if last > seq)

    def write_checkpoint(self) -> None:
        sealed = [s.meta() for s in self.segments if s.sealed]
        counters = self.sealed_counters
        write_atomic(self.disk, CHECKPOINT, msgpack.packb(
            {"version": 1, "first_seq": self.first_seq, "sealed": sealed, "counters": counters},
            use_bin_type=True))

    # ---------- reading ----------

    def records(self, from_seq: int, to_seq: int | None = None) -> Iterator[fr.Record]:
        """Durable records from from_seq on (up to to_seq), in order."""
        return self._scan(from_seq, to_seq, lambda data, pos: fr.decode(data, pos, None))

    def frames(self, from_seq: int, to_seq: int) -> Iterator[bytes]:
        """The frames of from_seq..to_seq, byte for byte, CRC checked."""
        return (raw for _seq, raw in self.numbered_frames(from_seq, to_seq))

    def numbered_frames(self, from_seq: int, to_seq: int | None = None) -> Iterator[tuple[int, bytes]]:
        """(seq, frame) from from_seq on (up to to_seq), byte for byte, CRC checked."""
        def read(data: memoryview, pos: int) -> _Frame:
            seq, size, _chain = fr.check(data, pos, None)
            return _Frame(seq, bytes(data[pos:pos + size]))
        return ((f.seq, f.raw) for f in self._scan(from_seq, to_seq, read))

    def chain_before(self, seq: int) -> bytes:
        """The chain head just before record `seq` (its segment's head chain, then its links)."""
        for seg in self.segments:  # a seq in a lost range: the chain before the segment after it
            if seq <= max(seg.last_seq, seg.first_seq):
                _, chain = fr.decode_segment_head(self.disk.read(f"{SEGDIR}/{seg.name}")[:fr.SEG_HEAD_SIZE])
                for rec in self.records(seg.first_seq, seq - 1):
                    chain = rec.chain
                return chain
        return self.chain

    def ts_of(self, seq: int) -> int | None:
        """Record seq's append time from its frame header alone (no CRC, no payload): for lag figures."""
        def stamp(data: memoryview, pos: int) -> _Stamp:
            _len, at_seq, ts = fr.HEAD.unpack_from(data, pos)[:3]
            return _Stamp(at_seq, ts)
        return next((s.ts for s in self._scan(seq, seq, stamp)), None)

    def wired(self, from_seq: int) -> Iterator[fr.Wired]:
        """Durable records from from_seq on, as framed `record` events (a subscriber's backlog)."""
        unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        return self._scan(from_seq, None, lambda data, pos: fr.wired(data, pos, unpacker))

    def _scan(self, from_seq: int, to_seq: int | None, read) -> Iterator:
        end = self.last_seq if to_seq is None else min(to_seq, self.last_seq)
        for seg in list(self.segments):
            if seg.last_seq < from_seq or seg.first_seq > end:
                continue
            data = memoryview(self.disk.read(f"{SEGDIR}/{seg.name}"))
            pos = fr.SEG_HEAD_SIZE
            while pos < len(data):
                item = read(data, pos)  # checks the frame: damage raises, never ends the read quietly
                if item.seq > end:
                    return
                if item.seq >= from_seq:
                    yield item
                pos += _size_at(data, pos)

    # ---------- cursors and retention ----------

    def load_cursors(self) -> dict[str, int]:
        return statefile.read(self.disk, CURSORS, MapOf(STR, SEQ), CURSORS_REMEDY) or {}

    def save_cursors(self, cursors: dict[str, int]) -> None:
        write_atomic(self.disk, CURSORS, msgpack.packb(cursors, use_bin_type=True))

    def retain(self, acked: int, min_age_us: int, now: int | None = None) -> list[str]:
        """Delete the oldest sealed segments every consumer acked past and old enough."""
        now = now_us() if now is None else now
        gone = []
        for seg in self.segments[:-1]:
            if not seg.sealed or seg.last_seq > acked or now - seg.last_ts < min_age_us:
                break
            gone.append(seg)
        if not gone:
            return []
        self.first_seq = gone[-1].last_seq + 1  # the floor moves first, so a crash only leaves garbage
        self.segments = self.segments[len(gone):]
        self.write_checkpoint()
        for seg in gone:
            self.txi.drop_segment(seg.name)
            self.remove_files(seg.name)
        self.disk.fsync_dir(SEGDIR)
        return [s.name for s in gone]

    def remove_files(self, name: str) -> None:
        """A segment and its index; the caller fsyncs the directory."""
        for suffix in ("", ".idx"):
            try:
                self.disk.unlink(f"{SEGDIR}/{name}{suffix}")
            except FileNotFoundError:
                pass


@dataclass(slots=True)
class _Frame:
    seq: int
    raw: bytes


@dataclass(slots=True)
class _Stamp:
    seq: int
    ts: int
