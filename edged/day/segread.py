"""One streaming pass over an export's journal.seg: its SHA-256, every frame's chain link, the seqs,
the counts per kind and the day.close record, in chunks, never the whole file in memory.

Each frame's chain link is recomputed (SHA-256 over the link before, the
frame's fixed fields and its payload) and compared: that covers every byte the
CRC covers and more, so the CRC is not computed again. Only the kind is read
from a payload (msgpack: an array whose first item is a short string); the
day.close body is decoded in full, and only when it is small. `sink` gets the
frames of each chunk as they are checked, (seq, chain, ts, kind, frame bytes),
so an import stores exactly the bytes verified, read once; whoever gives a sink
must undo what it did when the pass ends in a SegmentError or the checks after
it fail (the file's SHA-256 is known only at the end).
"""
from __future__ import annotations

import collections
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from ..journal import frame as fr

CHUNK = 1 << 20
MAX_CLOSE = 64 << 10  # a day.close body is a few hundred bytes; more is not one edged wrote
Sink = Callable[[list[tuple[int, bytes, int, str, bytes]]], None]


class SegmentError(Exception):
    """journal.seg does not check out; str() says where and how."""


@dataclass
class Segment:
    sha256: str = ""
    first_seq: int = 0
    chain_before: bytes = b""
    records: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    last_seq: int = 0
    chain: bytes = b""  # after the last record
    close: fr.Record | None = None  # the last record, when it is a day.close
    close_chain: bytes = b""  # the chain head before that day.close
    close_frame: bytes = b""  # its frame (at most MAX_CLOSE): what a worker process hands back, not the decoded body


def _read(fd: int, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            break
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read(fd: int, size: int, runs: list[tuple[int, int, bytes]], sink: Sink | None = None) -> Segment:
    """Check journal.seg (fd, `size` bytes by fstat) in one pass; `runs` are the manifest's left-out
    runs (first seq, last seq, chain link after), consumed."""
    out = Segment()
    h = hashlib.sha256()
    head = _read(fd, fr.SEG_HEAD_SIZE)
    h.update(head)
    try:
        first, chain = fr.decode_segment_head(head)
    except fr.FrameError as e:
        raise SegmentError(f"journal.seg: {e}") from None
    out.first_seq, out.chain_before = first, chain
    remaining = size - len(head)
    counts: collections.Counter[bytes] = collections.Counter()
    unpack, sha, max_payload = fr.HEAD.unpack_from, hashlib.sha256, fr.MAX_PAYLOAD
    expect, last_kind, n_records = first, b"", 0
    names: dict[bytes, str] = {}  # each kind decoded once, not once per record
    close: tuple[bytes, bytes] | None = None
    buf = b""
    while remaining > 0:
        chunk = os.read(fd, min(CHUNK, remaining))
        if not chunk:
            raise SegmentError("journal.seg: shorter than fstat said (changed while being read)")
        remaining -= len(chunk)
        h.update(chunk)
        data = buf + chunk if buf else chunk
        view, n, pos = memoryview(data), len(data), 0
        batch: list[tuple[int, bytes, int, str, bytes]] = []
        while n - pos >= 72:
            length, seq, ts, _bf, _bl, link, _crc = unpack(data, pos)
            if length == 0 or length > max_payload:
                raise SegmentError(f"journal.seg: record after seq {expect - 1}: bad length {length}")
            end = pos + 72 + length
            if end > n:
                break
            if seq != expect and runs and runs[0][0] == expect and seq > expect:  # left out by the till
                expect, chain = runs[0][1] + 1, runs[0][2]
                del runs[0]
            if seq != expect:
                raise SegmentError(f"journal.seg: records {expect}..{seq - 1} missing (seq {seq} follows "
                                   f"{expect - 1})" if seq > expect else
                                   f"journal.seg: seq {seq} where {expect} was due (repeated or reordered)")
            d = sha(chain)
            d.update(view[pos:pos + 36])
            d.update(view[pos + 72:end])
            if d.digest() != link:
                raise SegmentError(f"journal.seg: record {seq}: chain link mismatch (changed, inserted or "
                                   "reordered after it was journaled, or a left-out run's link is wrong)")
            p = pos + 72
            tag = data[p + 1] if length > 1 else 0
            if data[p] not in (0x95, 0x96) or not (0xa0 <= tag <= 0xbf or tag == 0xd9 and length > 2):
                raise SegmentError(f"journal.seg: record {seq}: payload is not a record")
            k0, klen = (p + 2, tag - 0xa0) if tag != 0xd9 else (p + 3, data[p + 2])
            if k0 + klen > end:
                raise SegmentError(f"journal.seg: record {seq}: payload is not a record")
            last_kind = data[k0:k0 + klen]
            counts[last_kind] += 1
            if last_kind == b"day.close":
                if length > MAX_CLOSE:
                    raise SegmentError(f"journal.seg: record {seq}: a day.close of {length} bytes")
                close = (data[pos:end], chain)
            if sink is not None:
                name = names.get(last_kind)
                if name is None:
                    try:
                        name = names[last_kind] = last_kind.decode()
                    except UnicodeDecodeError:
                        raise SegmentError(f"journal.seg: record {seq}: its kind is not UTF-8") from None
                    if "\0" in name:  # PostgreSQL's text cannot hold it (edged refuses it at append)
                        raise SegmentError(f"journal.seg: record {seq}: its kind holds a NUL character")
                batch.append((seq, link, ts, name, data[pos:end]))
            chain, expect, pos = link, seq + 1, end
            n_records += 1
        if batch and sink is not None:
            sink(batch)
        del view
        buf = data[pos:]
    if buf:
        raise SegmentError(f"journal.seg: ends inside a record ({len(buf)} bytes after seq {expect - 1})")
    if os.read(fd, 1):
        raise SegmentError("journal.seg: longer than fstat said (changed while being read)")
    try:
        out.counts = {k.decode(): v for k, v in counts.items()}
    except UnicodeDecodeError:
        raise SegmentError("journal.seg: a record's kind is not UTF-8") from None
    out.sha256, out.records, out.chain, out.last_seq = h.hexdigest(), n_records, chain, expect - 1
    if close is not None and last_kind == b"day.close":
        try:
            out.close = fr.decode(close[0], 0, None)
        except fr.FrameError as e:
            raise SegmentError(f"journal.seg: the day.close record: {e.reason}") from None
        out.close_chain, out.close_frame = close[1], bytes(close[0])
    return out
