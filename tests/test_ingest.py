"""Head office's ingest on hostile batches, without a broker: `ingest.take` is what runs for each
message. A batch is archived whole or not at all; a forged or altered one is refused with the reason
told to the till, and the archive is unchanged."""
from __future__ import annotations

import sqlite3
import subprocess
import sys

import msgpack
import pytest

from edged import identity
from edged.day import archive
from edged.day import trust as keys
from edged.day.backend import Db
from edged.day.signing import sign_day
from edged.fleet import ingest, wire
from edged.journal import frame as fr

TILL = "t1"


def _frames(payloads: list[bytes], first: int = 1, chain: bytes = fr.GENESIS) -> tuple[list[bytes], bytes]:
    out = []
    for i, payload in enumerate(payloads):
        frame, chain = fr.encode(first + i, 1_700_000_000_000_000 + i, payload, first + i, first + i, chain)
        out.append(frame)
    return out, chain


def _sales(n: int, first: int = 1, tag: str = "") -> list[bytes]:
    return [fr.payload_of("sale", {"n": first + i, "tag": tag}, f"s{first + i}", None, None, 1000) for i in range(n)]


def _batch(frames: list[bytes], first: int = 1, chain: bytes = fr.GENESIS, till: str = TILL, since: int = 1) -> bytes:
    return wire.encode_batch(wire.Batch(till, first, first + len(frames) - 1, chain, frames, since))


@pytest.fixture
def ho(tmp_path, archive_at):
    db = archive.open_archive(archive_at)
    ident = identity.create(str(tmp_path / "till"), 1)
    keys.enroll(db, TILL, ident.public_text)
    yield db, ident
    db.close()


def _rows(db: Db) -> list[tuple[int, bytes]]:
    return [(s, bytes(f)) for s, f in db.execute("SELECT seq, frame FROM records ORDER BY till, seq")]


def _take(db, payload: bytes, till: str = TILL) -> wire.Ack | None:
    return ingest.take(db, wire.up_topic(till), payload)


def test_a_batch_is_archived_and_a_resend_adds_nothing(ho):
    db, _ = ho
    frames, chain = _frames(_sales(10))
    ack = _take(db, _batch(frames))
    assert (ack.archived_through, ack.chain, ack.conflict) == (10, chain, None)
    assert [f for _, f in _rows(db)] == frames
    again = _take(db, _batch(frames))
    assert (again.archived_through, again.conflict) == (10, None) and len(_rows(db)) == 10


def test_an_altered_record_is_refused_whole(ho):
    db, _ = ho
    frames, _ = _frames(_sales(10))
    bad = bytearray(frames[5])
    bad[-3] ^= 1  # one bit of a body, the chain not mended
    frames[5] = bytes(bad)
    ack = _take(db, _batch(frames))
    assert ack.archived_through == 0 and "record 6" in ack.conflict
    assert _rows(db) == []


def test_a_rechained_forgery_of_archived_seqs_is_a_conflict(ho):
    db, _ = ho
    genuine, _ = _frames(_sales(10))
    _take(db, _batch(genuine))
    forged, _ = _frames(_sales(10, tag="less takings"))  # a valid chain of its own from the start
    ack = _take(db, _batch(forged))
    assert ack.archived_through == 10 and "another chain link" in ack.conflict
    assert [f for _, f in _rows(db)] == genuine


def test_a_batch_must_link_to_the_archived_record_before_it(ho):
    db, _ = ho
    first, chain = _frames(_sales(5))
    _take(db, _batch(first))
    other, _ = _frames(_sales(5, first=6), first=6, chain=b"\x01" * 32)  # links to a chain head it does not have
    ack = _take(db, _batch(other, first=6, chain=b"\x01" * 32))
    assert ack.archived_through == 5 and "chain before seq 6" in ack.conflict
    follow, _ = _frames(_sales(5, first=6), first=6, chain=chain)
    assert _take(db, _batch(follow, first=6, chain=chain)).archived_through == 10


def test_a_batch_filling_a_gap_must_link_into_the_record_after_it(ho):
    db, _ = ho
    one, c1 = _frames(_sales(5))
    two, c2 = _frames(_sales(5, first=6), first=6, chain=c1)
    three, _ = _frames(_sales(5, first=11), first=11, chain=c2)
    _take(db, _batch(one))
    assert _take(db, _batch(three, first=11, chain=c2)).archived_through == 5  # out of order: waits for 6..10
    forged, _ = _frames(_sales(5, first=6, tag="x"), first=6, chain=c1)
    ack = _take(db, _batch(forged, first=6, chain=c1))
    assert "does not follow on" in ack.conflict and ack.archived_through == 5
    assert _take(db, _batch(two, first=6, chain=c1)).archived_through == 15


def test_a_batch_naming_another_till_than_its_topic_is_dropped(ho):
    db, _ = ho
    frames, _ = _frames(_sales(3))
    assert _take(db, _batch(frames, till="t2"), till=TILL) is None
    assert _rows(db) == []


def test_a_till_not_enrolled_gets_nothing_archived(ho):
    db, _ = ho
    frames, _ = _frames(_sales(3))
    ack = _take(db, _batch(frames, till="t9"), till="t9")
    assert "not enrolled" in ack.conflict and _rows(db) == []


@pytest.mark.parametrize("payload", [
    b"\xc1", msgpack.packb([1, 2]), msgpack.packb({"v": 2}), msgpack.packb({"v": 1, "till": "t1"}),
    msgpack.packb({"v": 1, "till": "t1", "first_seq": 1, "last_seq": 2, "chain_before": b"x" * 32,
                   "since": 1, "frames": [b"a"]}),
    msgpack.packb({"v": 1, "till": "../t1", "first_seq": 1, "last_seq": 1, "chain_before": b"x" * 32,
                   "since": 1, "frames": [b"a"]}),
    msgpack.packb({"v": 1, "till": "t1", "first_seq": 1, "last_seq": 1, "chain_before": b"x" * 32,
                   "since": 5, "frames": [b"a"]}),
    msgpack.packb({"v": 1, "till": "t1", "first_seq": 1 << 63, "last_seq": 1 << 63, "chain_before": b"x" * 32,
                   "since": 1, "frames": [b"a"]}),
    msgpack.packb({"v": 1, "till": "t1", "first_seq": 1, "last_seq": 1, "chain_before": b"x" * 32,
                   "since": 1, "frames": [[[]]]}),
    msgpack.packb({"v": 1, "till": "t1", "first_seq": 1, "last_seq": 2, "chain_before": b"x" * 32,
                   "since": 1, "journal_last": 1, "frames": [b"a", b"b"]}),  # a journal ending before the batch
    msgpack.packb({"v": 1, "till": "t1", "first_seq": 1, "last_seq": 1, "chain_before": b"x" * 32,
                   "since": 1, "journal_last": "9", "frames": [b"a"]}),
])
def test_malformed_messages_are_dropped(ho, payload):
    db, _ = ho
    assert _take(db, payload) is None and _rows(db) == []


def test_a_batch_of_nested_empty_arrays_is_not_decoded(ho):
    """Only kinds are read from payloads: a body that would decode to ~70 times its size never is."""
    db, _ = ho
    body = b"\x95\xa4sale" + b"\xdd" + (500_000).to_bytes(4, "big") + b"\x90" * 500_000 + b"\xc0\xc0\xc0"
    frames, _ = _frames([body])
    ack = _take(db, _batch(frames))
    assert ack.archived_through == 1 and _rows(db)[0][1] == frames[0]


def _close(ident: identity.Identity, first: int, last: int, chain: bytes, till: str = TILL) -> bytes:
    body = {"business_day": "2026-01-05", "till_id": till, "first_seq": first, "last_seq": last, "counts": {"sale": last},
            "numbers": {}, "chain": chain, "closed_at": 1.0, "client": "test", "pid": 1, "uid": 0}
    sign_day(body, ident)
    return fr.payload_of("day.close", body, "day.close:2026-01-05", None, None)


def test_a_signed_day_close_is_archived_and_lists_the_day(ho):
    db, ident = ho
    sales, chain = _frames(_sales(4))
    close, _ = _frames([_close(ident, 1, 4, chain)], first=5, chain=chain)
    ack = _take(db, _batch(sales + close))
    assert ack.archived_through == 5 and ack.conflict is None
    assert db.execute("SELECT business_day, first_seq, last_seq, source FROM days").fetchall() == \
        [("2026-01-05", 1, 5, "online")]
    assert {d for (d,) in db.execute("SELECT DISTINCT business_day FROM records")} == {"2026-01-05"}


def test_a_day_close_signed_by_a_key_not_enrolled_is_refused(ho, tmp_path):
    db, _ = ho
    stranger = identity.create(str(tmp_path / "stranger"), 1)
    sales, chain = _frames(_sales(4))
    close, _ = _frames([_close(stranger, 1, 4, chain)], first=5, chain=chain)
    ack = _take(db, _batch(sales + close))
    assert "day.close record 5" in ack.conflict and _rows(db) == []


def test_a_batch_of_nested_arrays_is_refused_before_it_costs_memory():
    """2 MB of empty arrays (5,000 lists of 400) would decode to ~110 MiB of lists: the second list
    ends the decoding. Measured in a fresh process (peak RSS, KiB)."""
    script = """
import resource, msgpack
from edged.fleet import wire
inner = b"\\xdc" + (400).to_bytes(2, "big") + b"\\x90" * 400
nested = b"\\xdc" + (5000).to_bytes(2, "big") + inner * 5000
payload = (b"\\x87" + msgpack.packb("v") + msgpack.packb(1) + msgpack.packb("till") + msgpack.packb("t1")
           + msgpack.packb("first_seq") + msgpack.packb(1) + msgpack.packb("last_seq") + msgpack.packb(1)
           + msgpack.packb("chain_before") + msgpack.packb(b"x" * 32) + msgpack.packb("since") + msgpack.packb(1)
           + msgpack.packb("frames") + nested)
assert len(payload) > 2_000_000
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    wire.decode_batch(payload)
except wire.WireError as e:
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, e)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    grew, why = out.stdout.split(" ", 1)
    assert "nested arrays" in why and int(grew) < 16 * 1024, out.stdout  # not ~110 MiB


def _lost(first: int, last: int, found: int) -> bytes:
    return fr.payload_of("journal.lost", {"first_seq": first, "last_seq": last, "found": found, "acked": last,
                                          "reason": "test"}, None, None, None)


def test_a_lost_range_the_till_declares_is_stepped_over(ho):
    """After storage lost a flushed tail, the till numbers on above it with a journal.lost record first
    (its link follows the last record it still had): the archive takes it and the watermark steps over
    seqs nobody will ever send, instead of waiting for them for ever."""
    db, _ = ho
    one, c5 = _frames(_sales(5))
    assert _take(db, _batch(one)).archived_through == 5
    after, _ = _frames([_lost(6, 1029, 5)] + _sales(3, first=1031), first=1030, chain=c5)
    ack = _take(db, _batch(after, first=1030, chain=c5))
    assert (ack.archived_through, ack.conflict) == (1033, None)
    assert db.execute("SELECT first_seq, last_seq, seq FROM lost").fetchall() == [(6, 1029, 1030)]


def test_a_lost_record_that_does_not_declare_the_seqs_below_it_is_refused(ho):
    db, _ = ho
    one, c5 = _frames(_sales(5))
    _take(db, _batch(one))
    after, _ = _frames([_lost(6, 1000, 5)] + _sales(1, first=1031), first=1030, chain=c5)  # 1001..1029 unsaid
    ack = _take(db, _batch(after, first=1030, chain=c5))
    assert "does not declare" in ack.conflict and ack.archived_through == 5 and len(_rows(db)) == 5


def test_records_archived_after_their_day_close_get_its_business_day(ho):
    """Two ingest workers: the day.close's batch may commit before its day's records."""
    db, ident = ho
    sales, chain = _frames(_sales(4))
    close, _ = _frames([_close(ident, 1, 4, chain)], first=5, chain=chain)
    assert _take(db, _batch(close, first=5, chain=chain)).archived_through == 0  # 1..4 not there yet
    assert _take(db, _batch(sales)).archived_through == 5
    assert db.execute("SELECT DISTINCT business_day FROM records").fetchall() == [("2026-01-05",)]


def test_the_tills_lag_is_what_its_newest_batch_said(ho):
    """`journal_last` in a batch: the till's journal end when it was sent. `archive status` shows the
    lag from it. A resend of archived records does not set it back; a wrong one (the largest seq
    there is) is put right by the next batch; a relay that does not send it changes nothing."""
    db, _ = ho
    frames, chain = _frames(_sales(12))

    def take(first: int, last: int, journal_last: int | None) -> dict:
        chain_before = fr.GENESIS if first == 1 else frames[first - 2][36:68]
        _take(db, wire.encode_batch(wire.Batch(TILL, first, last, chain_before, frames[first - 1:last], 1,
                                               journal_last)))
        return archive.status(db)[TILL]["online"]
    online = take(1, 5, 40)
    assert online | {"last_seen": 0} == {"archived_through": 5, "last_seen": 0, "batches": 1, "journal_last": 40,
                                         "lag": 35}
    assert take(1, 5, 5)["journal_last"] == 40  # a resend of what is archived: older news
    assert take(6, 10, (1 << 63) - 1)["lag"] == (1 << 63) - 11
    online = take(11, 12, 12)
    assert (online["journal_last"], online["lag"]) == (12, 0)
    assert take(1, 12, None)["journal_last"] == 12


def test_an_archive_made_before_the_lag_column_gets_it(tmp_path):
    old = sqlite3.connect(tmp_path / "archive.sqlite")
    old.execute("CREATE TABLE online (till TEXT PRIMARY KEY, archived_through INTEGER NOT NULL, chain BLOB NOT NULL, "
                "last_seen REAL NOT NULL, batches INTEGER NOT NULL DEFAULT 0)")
    old.execute("INSERT INTO online VALUES ('t1', 7, ?, 1.0, 3)", (bytes(32),))
    old.commit()
    old.close()
    db = archive.open_archive(str(tmp_path))
    assert "journal_last" in db.columns("online")
    assert archive._online(db, "t1") == {"archived_through": 7, "last_seen": 1.0, "batches": 3, "journal_last": None,
                                         "lag": None}


@pytest.mark.parametrize("text, said", [
    ('[ingest]\narchiv = "/srv/a"\n', "ingest.archiv: unknown key (did you mean 'archive'?)"),
    ('[ingest]\nbroker = "tcp://x:1"\n', "ingest.broker: 'tcp://x:1': write mqtts://HOST:PORT"),
    ('[ingest]\narchive = "relative"\nbroker = "mqtt://127.0.0.1:1"\n', "ingest.archive: 'relative': an absolute"),
    ('[ingest]\nbroker = "mqtt://127.0.0.1:1"\n', "give the archive with --archive"),
    ("[ingest\n", "not valid TOML"),
])
def test_a_bad_headoffice_config_stops_the_ingest_with_one_line(tmp_path, text, said):
    cfg = tmp_path / "headoffice.toml"
    cfg.write_text(text)
    out = subprocess.run([sys.executable, "-m", "edged", "headoffice", "ingest", "--config", str(cfg)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and said in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
