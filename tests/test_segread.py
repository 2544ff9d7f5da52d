"""day/segread.py on crafted segments: what a sink is given, and a kind that is not UTF-8 refused
the same way whether the pass only verifies or also feeds an import."""
from __future__ import annotations

import os
import tempfile

import msgpack
import pytest

from edged.day import segread
from edged.journal import frame as fr


def _segment(payloads: list[bytes], first: int = 7) -> bytes:
    chain = b"\x11" * 32
    out = [fr.encode_segment_head(first, chain)]
    for i, payload in enumerate(payloads):
        frame, chain = fr.encode(first + i, 1_700_000_000_000_000 + i, payload, first + i, first + i, chain)
        out.append(frame)
    return b"".join(out)


def _read(data: bytes, sink=None) -> segread.Segment:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        os.lseek(f.fileno(), 0, os.SEEK_SET)
        return segread.read(f.fileno(), len(data), [], sink)


def _payload(kind: bytes, body: object) -> bytes:
    """A record payload with its kind as raw bytes (msgpack str header, any bytes after it)."""
    assert len(kind) < 32
    return b"\x95" + bytes([0xa0 + len(kind)]) + kind + msgpack.packb([body, None, None, None])[1:]


def test_a_sink_gets_every_frame_with_its_kind_decoded_once():
    payloads = [fr.payload_of("sale", {"i": i}, None, None, None, 1000) for i in range(5)]
    payloads.append(fr.payload_of("käse.note", {"n": 1}, None, None, None, 1000))
    data = _segment(payloads)
    got: list = []
    seg = _read(data, got.extend)
    assert [row[0] for row in got] == list(range(7, 13))
    assert [row[3] for row in got] == ["sale"] * 5 + ["käse.note"]
    assert got[1][3] is got[0][3]  # one str per kind, not one per record
    assert b"".join(row[4] for row in got) == data[fr.SEG_HEAD_SIZE:]
    assert got[-1][1] == seg.chain and seg.counts == {"sale": 5, "käse.note": 1}


@pytest.mark.parametrize("with_sink", [False, True])
def test_a_kind_that_is_not_utf8_is_refused(with_sink):
    data = _segment([fr.payload_of("sale", {"i": 0}, None, None, None, 1000), _payload(b"\xff\xfe", {"i": 1})])
    got: list = []
    with pytest.raises(segread.SegmentError, match="kind is not UTF-8"):
        _read(data, got.extend if with_sink else None)
    assert all(row[3] == "sale" for row in got)  # nothing of the bad record reached the sink
