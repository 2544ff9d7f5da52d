"""The on-disk record and segment-header formats (docs/JOURNAL.md). Pure codec.

Record frame, all integers big-endian:
  0  u32  payload length L (>= 1)
  4  u64  sequence number
  12 i64  timestamp, unix microseconds
  20 u64  first sequence number of the batch (one write + one fdatasync)
  28 u64  last sequence number of the batch
  36 32B  chain = SHA-256(previous chain || bytes 0..35 || payload)
  68 u32  CRC-32 (zlib) of bytes 0..67 and the payload
  72 L    payload: msgpack [kind, body, tx_id, counter, number] or, for a record a client
           appended with a tx_id, [kind, body, tx_id, counter, number, uid]: the tx_id's scope

The batch fields let recovery tell a torn last batch (never acknowledged:
cut) from damage to a batch that later batches prove was durable (reported).
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import msgpack

HEAD = struct.Struct(">IQqQQ32sI")
HEAD_SIZE = HEAD.size  # 72
_FIXED = struct.Struct(">IQqQQ")  # the 36 bytes before the chain
_CRC = struct.Struct(">I")
MAX_PAYLOAD = 16 << 20
GENESIS = bytes(32)

SEG_MAGIC = b"EDGEDJ01"
SEG_HEAD = struct.Struct(">8sQ32sI")  # magic, first seq, chain before it, crc of the first 48 bytes
SEG_HEAD_SIZE = SEG_HEAD.size  # 52


@dataclass(slots=True)  # not frozen: recovery builds tens of thousands of these per second
class Record:
    seq: int
    ts: int
    kind: str
    body: Any
    tx_id: str | None
    counter: str | None
    number: int | None
    chain: bytes
    size: int  # bytes on disk, header included
    batch_first: int = 0
    batch_last: int = 0
    wire: bytes | None = None  # the encoded `record` event, once a subscriber needed it
    tx_uid: int | None = None  # whose tx_id it is: the appending client's uid; None: edged's or legacy
    frame: bytes | None = None  # its frame as written, for a record this run appended (frames subscribers)

    def event(self) -> dict[str, Any]:
        """The `record` event of PROTOCOL.md."""
        return {"event": "record", "seq": self.seq, "ts": self.ts, "kind": self.kind, "body": self.body,
                "tx_id": self.tx_id, "number": self.number, "chain": self.chain}


class FrameError(Exception):
    """A frame that does not check out; `reason` says how."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def payload_of(kind: str, body: Any, tx_id: str | None, counter: str | None, number: int | None,
               tx_uid: int | None = None) -> bytes:
    fields = [kind, body, tx_id, counter, number]
    if tx_uid is not None:
        fields.append(tx_uid)
    payload = msgpack.packb(fields, use_bin_type=True)
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"record of {len(payload)} bytes exceeds {MAX_PAYLOAD}")
    return payload


def encode(seq: int, ts: int, payload: bytes, batch_first: int, batch_last: int,
           prev_chain: bytes) -> tuple[bytes, bytes]:
    """The frame bytes and the new chain head."""
    fixed = _FIXED.pack(len(payload), seq, ts, batch_first, batch_last)
    chain = _sha256(prev_chain + fixed + payload).digest()
    head = fixed + chain
    return head + _CRC.pack(_crc32(payload, _crc32(head))) + payload, chain


def _checked(buf: bytes | memoryview, pos: int, prev_chain: bytes | None) -> tuple:
    """Validate the frame at pos (length, CRC, and the chain link when prev_chain is given)."""
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    try:
        length, seq, ts, batch_first, batch_last, chain, crc = _unpack_head(view, pos)
    except struct.error:
        raise FrameError("incomplete header") from None
    if length == 0 or length > MAX_PAYLOAD:
        raise FrameError(f"bad length {length}")
    end = pos + HEAD_SIZE + length
    if end > len(view):
        raise FrameError("incomplete payload")
    payload = view[pos + HEAD_SIZE:end]
    if _crc32(payload, _crc32(view[pos:pos + 68])) != crc:
        raise FrameError("checksum mismatch")
    if prev_chain is not None:
        h = _sha256(prev_chain)
        h.update(view[pos:pos + 36])
        h.update(payload)
        if h.digest() != chain:
            raise FrameError("chain link mismatch")
    return seq, ts, batch_first, batch_last, chain, end, payload


def check(buf: bytes | memoryview, pos: int, prev_chain: bytes | None) -> tuple[int, int, bytes]:
    """Verify the frame at pos without unpacking its payload: (seq, size, chain)."""
    seq, _ts, _bf, _bl, chain, end, _payload = _checked(buf, pos, prev_chain)
    return seq, end - pos, chain


def decode(buf: bytes | memoryview, pos: int, prev_chain: bytes | None) -> Record:
    """The record at buf[pos:]; FrameError if it is incomplete or does not check out.

    With prev_chain given, the chain link is checked too. Pass a memoryview to avoid copies."""
    seq, ts, batch_first, batch_last, chain, end, payload = _checked(buf, pos, prev_chain)
    try:
        fields = _unpackb(payload, raw=False, strict_map_key=False)
        if len(fields) == 5:
            (kind, body, tx_id, counter, number), tx_uid = fields, None
        else:
            kind, body, tx_id, counter, number, tx_uid = fields
            if not isinstance(tx_uid, int):
                raise ValueError("a record's sixth field is the uid its tx_id belongs to")
    except Exception as e:  # CRC passed, so this is a writer bug, not disk damage
        raise FrameError(f"payload not a record: {e}") from None
    return Record(seq, ts, kind, body, tx_id, counter, number, chain, end - pos, batch_first, batch_last, None,
                  tx_uid)


_unpack_head, _crc32, _sha256, _unpackb = HEAD.unpack_from, zlib.crc32, hashlib.sha256, msgpack.unpackb


def link(prev_chain: bytes, frame: bytes | memoryview) -> bytes:
    """The chain link a whole frame must carry after prev_chain: SHA-256 over it, the frame's first
    36 bytes and its payload (for checking frames that travelled: head office, sticks)."""
    h = _sha256(prev_chain)
    h.update(frame[:36])
    h.update(frame[HEAD_SIZE:])
    return h.digest()


@dataclass(slots=True)
class Wired:
    """A record as a subscriber gets it: its `record` event, already framed for the socket."""
    seq: int
    kind: str
    wire: bytes
    ts: int = 0  # unix us: sync state reads the age of a consumer's oldest unacked record
    frame: bytes | None = None  # the frame itself, byte for byte (recent records: frames subscribers)


# The `record` event map, written around slices of the payload: replaying a backlog
# then costs no unpacking and repacking of bodies. Ints are fixed-width msgpack.
_W1 = b"\x88\xa5event\xa6record\xa3seq\xcf"
_W2 = b"\xa2ts\xd3"
_W_SEQ_TS = struct.Struct(">Q4sq")
_W_LEN = struct.Struct(">I")


def wired(buf: bytes | memoryview, pos: int, unpacker: msgpack.Unpacker) -> Wired:
    """The frame at pos (CRC checked) as a Wired; `unpacker` is the caller's, reused."""
    seq, ts, _bf, _bl, chain, end, payload = _checked(buf, pos, None)
    try:
        base = unpacker.tell()
        unpacker.feed(payload)
        fields = unpacker.read_array_header()
        if fields not in (5, 6):
            raise ValueError("not a 5 or 6 element array")
        k0 = unpacker.tell() - base
        kind = unpacker.unpack()
        b0 = unpacker.tell() - base
        unpacker.skip()
        t0 = unpacker.tell() - base
        unpacker.skip()
        c0 = unpacker.tell() - base
        unpacker.skip()  # the counter's name is not part of the event
        n0 = unpacker.tell() - base
        unpacker.skip()
        n1 = unpacker.tell() - base
        if fields == 6:
            unpacker.skip()  # the tx_id's scope (uid) is not part of the event
        if unpacker.tell() - base != len(payload) or not isinstance(kind, str):
            raise ValueError("payload not a record")
    except Exception as e:  # CRC passed, so this is a writer bug, not disk damage
        raise FrameError(f"payload not a record: {e}") from None
    raw = bytes(payload)
    body = b"".join((_W1, _W_SEQ_TS.pack(seq, _W2, ts), b"\xa4kind", raw[k0:b0], b"\xa4body", raw[b0:t0],
                     b"\xa5tx_id", raw[t0:c0], b"\xa6number", raw[n0:n1], b"\xa5chain\xc4\x20", chain))
    return Wired(seq, kind, _W_LEN.pack(len(body)) + body, ts)


def encode_segment_head(first_seq: int, prev_chain: bytes) -> bytes:
    head = SEG_HEAD.pack(SEG_MAGIC, first_seq, prev_chain, 0)[:48]
    return head + struct.pack(">I", zlib.crc32(head))


def decode_segment_head(buf: bytes) -> tuple[int, bytes]:
    """(first seq, chain before it); FrameError when the header is damaged."""
    if len(buf) < SEG_HEAD_SIZE:
        raise FrameError("incomplete segment header")
    magic, first_seq, prev_chain, crc = SEG_HEAD.unpack_from(buf, 0)
    if magic != SEG_MAGIC or zlib.crc32(bytes(buf[:48])) != crc:
        raise FrameError("bad segment header")
    return first_seq, prev_chain
