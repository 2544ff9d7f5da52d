"""Property tests: the codecs never fail in an undefined way."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as s

from edged.relay import framing
from edged.sim.escpos_codec import next_command
from edged.sim.printer import PrinterEmulator, _Stream

values = s.recursive(
    s.none() | s.booleans() | s.integers(-2**63, 2**64 - 1) | s.floats(allow_nan=False) | s.text() | s.binary(),
    lambda inner: s.lists(inner, max_size=4) | s.dictionaries(s.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)


@given(s.dictionaries(s.text(max_size=16), values, max_size=8))
def test_any_message_round_trips(message):
    frame = framing.encode(message)
    assert framing.HEADER.unpack(frame[:4])[0] == len(frame) - 4
    assert framing.decode_body(frame[4:]) == message


@settings(max_examples=500)
@given(s.binary(max_size=256))
def test_random_bodies_decode_or_raise_frame_error(body):
    try:
        assert isinstance(framing.decode_body(body), dict)
    except framing.FrameError as e:
        assert e.code == "bad_frame" and e.message


@settings(max_examples=300)
@given(s.binary(max_size=512), s.integers(1, 64))
def test_emulator_survives_any_bytes_in_any_split(data, chunk):
    whole, split = PrinterEmulator(use_pty=False), PrinterEmulator(use_pty=False)
    a, b = _Stream(), _Stream()
    replies_whole = whole.feed(a, data)
    replies_split = b"".join(split.feed(b, data[i:i + chunk]) for i in range(0, len(data), chunk))
    assert replies_whole == replies_split
    assert [r.text() for r in whole.receipts] == [r.text() for r in split.receipts]
    assert bytes(a.buf) == bytes(b.buf)  # the same unfinished command waits in both


@given(s.binary(min_size=1, max_size=64))
def test_tokenizer_consumes_or_waits(data):
    pos = 0
    while pos < len(data):
        found = next_command(data, pos)
        if found is None:
            break
        _, new = found
        assert new > pos
        pos = new


@settings(max_examples=300)
@given(body=values, kind=s.text(min_size=1, max_size=20), tx_id=s.one_of(s.none(), s.text(min_size=1, max_size=20)),
       number=s.one_of(s.none(), s.integers(0, 2**62)), seq=s.integers(1, 2**63), ts=s.integers(-2**62, 2**62),
       uid=s.one_of(s.none(), s.integers(0, 2**32 - 1)))
def test_backlog_events_framed_from_disk_bytes_equal_the_decoded_record_event(body, kind, tx_id, number, seq, ts,
                                                                             uid):
    import msgpack

    from edged.journal import frame as fr

    payload = fr.payload_of(kind, body, tx_id, "receipt" if number is not None else None, number, uid)
    data, _ = fr.encode(seq, ts, payload, seq, seq, fr.GENESIS)
    buf = b"pad" + data
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    for _ in range(2):  # the unpacker is reused from record to record
        w = fr.wired(buf, 3, unpacker)
        assert (w.seq, w.kind) == (seq, kind)
        assert framing.HEADER.unpack(w.wire[:4])[0] == len(w.wire) - 4
        assert framing.decode_body(w.wire[4:]) == fr.decode(buf, 3, None).event()  # the scope is not in it
    assert fr.decode(buf, 3, None).tx_uid == uid
