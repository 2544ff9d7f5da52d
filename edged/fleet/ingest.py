"""`edged headoffice ingest`: batches from the tills' relays, checked and written into head office's
archive, then acknowledged (docs/FLEET.md).

A broker client, never a server of our own. Each batch is checked as `edged import` checks a
stick's journal.seg: the topic's till is the payload's, the till is enrolled, every frame's CRC
and chain link from the batch's `chain_before`, seqs contiguous, every `day.close` record signed
by a key enrolled for that till. Then, in one transaction: the batch must link to the archived
record before it and to the one after it (nothing slips into a gap), records the archive holds
with the same chain link are skipped (a resend adds nothing), the same seq with another link is a
conflict (the batch is refused whole and the till is told), and the till's watermark (every seq
up to it archived) moves on. Only after the commit is the MQTT message acknowledged and the ack
published: a crash before that gets the batch again, from the broker or from the till's resend.
Several ingest processes share the tills' batches through an MQTT 5 shared subscription.
"""
from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import msgpack

from ..day import archive, backend, segread, signing
from ..day import trust as keys
from ..day.backend import Db
from ..journal import frame as fr
from ..journal import kinds
from . import alerts, mqtt, outbox, wire

log = logging.getLogger("edged.fleet")
LOST = "journal.lost"


class Refused(Exception):
    """A batch not taken: str() says why (logged, and told to the till when it is its own)."""


def check_frames(batch: wire.Batch) -> tuple[list[tuple[int, bytes, int, str, bytes]], list[fr.Record]]:
    """The batch's frames as archive rows (seq, chain, ts, kind, frame), every one checked, and its
    day.close records decoded (for their signatures)."""
    rows: list[tuple[int, bytes, int, str, bytes]] = []
    closes: list[fr.Record] = []
    chain, seq = batch.chain_before, batch.first_seq
    for raw in batch.frames:
        try:
            got, size, link = fr.check(raw, 0, None)  # length and CRC
        except fr.FrameError as e:
            raise Refused(f"record {seq}: {e.reason}") from None
        if size != len(raw) or got != seq:
            raise Refused(f"record {seq}: the frame holds seq {got} in {size} of {len(raw)} bytes")
        if fr.link(chain, raw) != link:
            raise Refused(f"record {seq}: chain link mismatch (changed, inserted or reordered after it was "
                          "journaled)")
        kind = _kind(raw, seq)
        rows.append((seq, link, int.from_bytes(raw[12:20], "big", signed=True), kind, raw))
        if kind in ("day.close", LOST, *alerts.KINDS):  # edged's, small: decoded in full (a signature, a range)
            if len(raw) > segread.MAX_CLOSE:
                raise Refused(f"record {seq}: a {kind} of {len(raw)} bytes")
            closes.append(fr.decode(raw, 0, None))
        chain, seq = link, seq + 1
    return rows, closes


def _kind(raw: bytes, seq: int) -> str:
    """Only the kind of a payload (its first item): bodies are never decoded here, so a hostile
    batch of nested empty arrays costs its bytes, not 70 times them."""
    unpacker = msgpack.Unpacker(raw=False, max_str_len=256, max_bin_len=0, max_array_len=6, max_map_len=0)
    unpacker.feed(raw[fr.HEAD_SIZE:fr.HEAD_SIZE + 512])
    try:
        if unpacker.read_array_header() not in (5, 6):
            raise ValueError("not a record")
        kind = unpacker.unpack()
    except Exception:
        raise Refused(f"record {seq}: its payload is not a record") from None
    if not isinstance(kind, str) or not kind:
        raise Refused(f"record {seq}: its payload is not a record")
    if "\0" in kind:  # edged refuses it at append since; PostgreSQL's text cannot hold it
        raise Refused(f"record {seq}: its kind holds a NUL character")
    return kind


def _signed_days(db: Db, till: str, closes: list[fr.Record]) -> list[dict]:
    """The batch's day.close records, each checked against the keys enrolled for its till."""
    trust = keys.from_archive(db, till)
    days = []
    for rec in closes:
        if rec.kind != "day.close":
            continue
        why = kinds.problem(rec)
        body = rec.body
        if why is None and body["till_id"] != till:
            why = f"it is till {body['till_id']!r}'s day.close"
        if why is None:
            sig = body.get("signature")
            public = trust.by_fingerprint(till, sig["fingerprint"]) if isinstance(sig, dict) else None
            why = "no enrolled key of this till signed it" if public is None else signing.day_problem(body, public)
        if why is not None:
            raise Refused(f"the day.close record {rec.seq}: {why}")
        days.append({**body, "seq": rec.seq})
    return days


def take(db: Db, topic: str, payload: bytes) -> wire.Ack | None:
    """One batch from the broker: checked, written, committed. The ack to publish (None when the
    message cannot be answered to a till: not one of ours)."""
    try:
        till = wire.till_of(topic, "up")
        batch = wire.decode_batch(payload)
    except wire.WireError as e:
        log.error("ingest: dropped a message on %s: %s", topic[:200], e)
        return None
    if batch.till != till:
        log.error("ingest: refused a batch on %s naming till %r: a till publishes only its own records", topic,
                  batch.till)
        return None
    db.begin(till)
    try:
        if not any(k.retired_at is None for k in keys.listed(db, till)):
            raise Refused(f"till {till} is not enrolled (`edged archive enroll`): nothing of it is archived")
        rows, closes = check_frames(batch)
        days = _signed_days(db, till, closes)
        before = _lost_before(db, till, batch, closes)  # the seq the batch links to (below a lost range)
        prev = archive._link(db, till, before)
        if prev is not None and prev != batch.chain_before:
            raise Refused(f"its chain before seq {batch.first_seq} differs from the archived record {before}")
        sink = archive._Batches(db, till, "", batch.first_seq, batch.last_seq)
        sink(rows)
        archive._next_links(db, till, {"chain_after": rows[-1][1].hex(), "last_seq": batch.last_seq})
        for day in days:
            _close_day(db, till, day)
        alerts.record(db, till, [c for c in closes if c.kind in alerts.KINDS])
        # Records of a day whose day.close came first (out of order) get its business day now.
        db.execute("UPDATE records SET business_day=(SELECT d.business_day FROM days d WHERE d.till=records.till "
                   "AND records.seq BETWEEN d.first_seq AND d.last_seq) WHERE till=? AND seq BETWEEN ? AND ? "
                   "AND business_day='' AND EXISTS (SELECT 1 FROM days d WHERE d.till=records.till AND "
                   "records.seq BETWEEN d.first_seq AND d.last_seq)", (till, batch.first_seq, batch.last_seq))
        ack = _advance(db, till, batch)
        db.commit()
    except (Refused, archive._Conflict, archive._Refused) as e:
        db.rollback()
        log.error("ingest: refused records %d..%d of %s: %s", batch.first_seq, batch.last_seq, till, e)
        through, chain = _watermark(db, till)
        return wire.Ack(till, through, chain, conflict=f"records {batch.first_seq}..{batch.last_seq}: {e}")
    except BaseException:
        db.rollback()
        raise
    log.info("ingest: %s %d..%d: %d added, %d already archived; archived through %d", till, batch.first_seq,
              batch.last_seq, sink.added, sink.skipped, ack.archived_through)
    return ack


def _lost_before(db: Db, till: str, batch: wire.Batch, closes: list[fr.Record]) -> int:
    """The seq whose chain link the batch's chain_before must be: the one before it, or, when it
    starts with the till's `journal.lost` record declaring the seqs just below it lost, the one below
    those (the record's link follows the last record the till still had). Such a range is kept, so
    the watermark steps over seqs nobody will ever send."""
    first = closes[0] if closes and closes[0].seq == batch.first_seq and closes[0].kind == LOST else None
    if first is None:
        return batch.first_seq - 1
    body = first.body
    lo, hi = (body.get("first_seq"), body.get("last_seq")) if isinstance(body, dict) else (None, None)
    if not (type(lo) is int and type(hi) is int and 1 <= lo <= hi == batch.first_seq - 1):
        raise Refused(f"record {first.seq}: a journal.lost record that does not declare the seqs just below it")
    db.execute("INSERT INTO lost (till, first_seq, last_seq, seq) VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
               (till, lo, hi, first.seq))
    return lo - 1


def _close_day(db: Db, till: str, day: dict) -> None:
    """A day.close came online: its records get their business day, the day is listed as a stick's
    would be (so the same day imported from a stick later is recognised, and stored once)."""
    db.execute("UPDATE records SET business_day=? WHERE till=? AND seq BETWEEN ? AND ? AND business_day=''",
               (day["business_day"], till, day["first_seq"], day["seq"]))
    before = archive._link(db, till, day["first_seq"] - 1)
    db.execute("INSERT INTO days (till, business_day, first_seq, last_seq, imported_at, source, "
               "fingerprint, chain_before) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
               (till, day["business_day"], day["first_seq"], day["seq"], time.time(), "online",
                day["signature"]["fingerprint"], before))


def _watermark(db: Db, till: str) -> tuple[int, bytes]:
    row = db.execute("SELECT archived_through, chain FROM online WHERE till=?", (till,)).fetchone()
    return (row[0], bytes(row[1])) if row else (0, fr.GENESIS)


def _advance(db: Db, till: str, batch: wire.Batch) -> wire.Ack:
    """Move the till's watermark over every archived seq that follows it; the ack to send. A till
    new online starts below its relay's `since` (never below the first batch that commits: with
    two ingest workers that may be the second one, and acking over the first would lose it)."""
    row = db.execute("SELECT archived_through FROM online WHERE till=?", (till,)).fetchone()
    # Below `since` the till holds nothing it has not had acknowledged: a watermark left below it (the
    # till's consumer made anew at its retention floor) would wait for ever for seqs nobody has.
    through = max(batch.since - 1, row[0] if row else 0)
    # The till's journal end as the newest batch says: a resend of archived records (or a late one of
    # two workers) does not set it back; a wrong one is put right by the next batch.
    journal_last = batch.journal_last if row is None or batch.last_seq > row[0] else None
    # The usual case, every batch in order: all archived above the watermark is one contiguous run.
    top, count = db.execute("SELECT max(seq), count(*) FROM records WHERE till=? AND seq > ?",
                            (till, through)).fetchone()
    if top is not None and count == top - through:
        through = top
    while True:
        seqs = [s for (s,) in db.execute("SELECT seq FROM records WHERE till=? AND seq > ? ORDER BY seq LIMIT 5000",
                                         (till, through))]
        for s in seqs:
            if s != through + 1:
                lost = db.execute("SELECT last_seq FROM lost WHERE till=? AND first_seq=?",
                                  (till, through + 1)).fetchone()
                if lost is None:
                    break
                through = lost[0]  # declared lost by the till: never coming, not a gap to wait on
                if s != through + 1:
                    break
            through = s
        else:
            if len(seqs) == 5000:
                continue
        break
    chain = archive._link(db, till, through) or fr.GENESIS
    db.execute("INSERT INTO online (till, archived_through, chain, last_seen, batches, journal_last) "
               "VALUES (?,?,?,?,1,?) ON CONFLICT (till) DO UPDATE SET archived_through=excluded.archived_through, "
               "chain=excluded.chain, last_seen=excluded.last_seen, batches=online.batches+1, "
               "journal_last=COALESCE(excluded.journal_last, online.journal_last)",
               (till, through, chain, time.time(), journal_last))
    return wire.Ack(till, through, chain)


def _reopened(db: Db, where: str | Path) -> Db:
    """A new connection after a failure (PostgreSQL restarted, a connection cut): the old one may be
    unusable for good. While the archive cannot be opened, the old one stays (the next batch says why)."""
    try:
        fresh = archive.open_archive(where)
    except backend.ArchiveError as e:
        log.error("ingest: %s", e)
        return db
    try:
        db.close()
    except Exception:  # noqa: S110 - already broken: nothing of it is needed
        pass
    return fresh


LEAVES = ("up", "hello", "down-ack", "status")  # what the ingest reads of each till (the broker's ACL)
DUE_EVERY = 0.5  # seconds between looks at the outbox: a record put there goes out within this


def _answer(db: Db, topic: str, payload: bytes) -> list[outbox.Send]:
    """One message from a till: what to publish in return (acks, outbox records)."""
    leaf = topic.rsplit("/", 1)[-1]
    if leaf == "up":
        ack = take(db, topic, payload)
        return [] if ack is None else [(wire.ack_topic(ack.till), wire.encode_ack(ack))]
    try:
        till = wire.till_of(topic, leaf)
        if leaf == "status":
            if payload not in (b"online", b"offline"):
                raise wire.WireError(f"status {payload[:40]!r} is not online or offline")
            outbox.presence(db, till, payload.decode())
            return []
        message = wire.decode_hello(payload) if leaf == "hello" else wire.decode_down_ack(payload)
        if message.till != till:
            raise wire.WireError(f"it names till {message.till!r}")
    except wire.WireError as e:
        log.error("ingest: dropped a message on %s: %s", topic[:200], e)
        return []
    if isinstance(message, wire.Hello):
        log.info("ingest: %s says hello: applied %s", till, ", ".join(f"{c} {p}" for c, p in message.down.items()))
        settled, sends = outbox.hello(db, message)
        through, chain = _watermark(db, till)  # the answer the relay waits for (else it says hello again)
        return [(wire.ack_topic(till), wire.encode_ack(wire.Ack(till, through, chain, down=settled))), *sends]
    return outbox.acked(db, message)


async def run(where: str | Path, endpoint: mqtt.Endpoint, client_id: str, group: str = "ingest") -> None:
    """Until cancelled: take batches, acknowledge each once committed; answer hellos and down-acks
    with what the outbox holds for the till, and send new outbox records as they come."""
    db = archive.open_archive(where)
    link = mqtt.Link(endpoint, client_id, manual_ack=True)
    for leaf in LEAVES:
        topic = f"{wire.PREFIX}/+/{leaf}"
        link.subscribe(f"$share/{group}/{topic}" if group and leaf != "status" else topic)
    link.start()
    log.info("ingest: archive %s, broker %s, shared group %r", backend.shown(where), endpoint.url, group)
    next_due = time.monotonic()
    try:
        while True:
            if time.monotonic() >= next_due:  # the outbox first: a stream of batches never starves it
                next_due = time.monotonic() + DUE_EVERY
                if link.connected.is_set():
                    try:
                        outbox.due(db, link.send)
                    except Exception as e:  # the archive busy or failing: the next look tries again
                        log.error("ingest: the outbox not looked at (%s: %s)", type(e).__name__, e)
                        db = _reopened(db, where)
            try:
                topic, payload, mid, qos = await asyncio.wait_for(link.messages.get(),
                                                                  max(0.01, next_due - time.monotonic()))
            except TimeoutError:
                continue
            sends: list[outbox.Send] = []
            try:
                sends = _answer(db, topic, payload)
            except Exception as e:  # the archive busy or failing, or a check missed something: not this one
                log.error("ingest: a message on %s not handled (%s: %s); it comes again", topic[:200],
                          type(e).__name__, e)
                db = _reopened(db, where)
            link.ack(mid, qos)  # committed, refused, or to come again from the till: the broker may forget it
            for out_topic, out_payload in sends:  # not waited for: a lost one costs a resend
                link.send(out_topic, out_payload)
    finally:
        await link.stop()
        db.close()
