"""Head office's outbox: records for the tills, kept in the archive until each till has them
(docs/FLEET.md, "Head office talks back").

Two kinds of channel, each numbered 1, 2, 3, ... on its own: a till's own (`till:<id>`: its web
orders, its vouchers) and `broadcast` (price lists, master data for every till). Nothing waits in a
broker: a till's relay says on every connect how far it applied each channel (a hello), and head
office sends what follows, a window at a time, each record again until the till acknowledges it.
So a till away for 30 days gets all that is still due, once (the relay appends each record with
tx_id `ho:<channel>:<pos>`, and edged's tx_id check makes a resend one record), in order.

What is no longer worth delivering is skipped on purpose, never dropped by a queue: a record past
its `expires_at`, or one superseded by a later record of the same channel with the same `collapse`
key (a newer price list). Each skip is logged and kept in `skipped`, per till, with its reason; the
next record sent names the last one sent before it (`prev`), so the till tells a skip from a loss.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from ..day.backend import Db
from ..journal import kinds
from . import wire

log = logging.getLogger("edged.fleet")
WINDOW = 100  # records sent to a till and not yet acknowledged, per channel (a broker queues ~1,000 at most)
RESEND_AFTER = 15.0  # seconds without an ack for what was sent: send it again from the till's ack
BROADCAST = "broadcast"
EVERY_TILL = "*"  # downstream's row for the broadcast topic itself (what went to every till online)


class OutboxError(ValueError):
    """A record that cannot go into the outbox; str() says why."""


@dataclass
class Entry:
    channel: str  # "till:<id>" or "broadcast"
    pos: int
    kind: str
    body: Any
    expires_at: float | None
    collapse: str


def channel_of(till: str | None) -> str:
    """The outbox channel for one till, or for every till (None)."""
    if till is None:
        return BROADCAST
    if not wire.TILL_ID.match(till):
        raise OutboxError(f"{till[:80]!r} is not a till id (letters, digits, . _ -; at most 64)")
    return f"till:{till}"


def put(db: Db, till: str | None, kind: str, body: Any, *, expires_at: float | None = None,
        collapse: str = "") -> Entry:
    """One record into the outbox of TILL (None: every till), committed; its position."""
    if not isinstance(kind, str) or not 1 <= len(kind) <= 128 or "\0" in kind:
        raise OutboxError(f"kind {str(kind)[:40]!r}: 1 to 128 characters, no NUL")
    if kinds.reserved(kind):
        raise OutboxError(f"kind {kind!r}: {', '.join(kinds.RESERVED)}* are edged's own; the till would refuse it")
    try:
        packed = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as e:
        raise OutboxError(f"the body cannot be sent: {e}") from None
    if len(packed) > wire.MAX_DOWN_BYTES:
        raise OutboxError(f"the body is {len(packed)} bytes; at most {wire.MAX_DOWN_BYTES} (split it, e.g. a price "
                          "list per department)")
    why = wire.body_problem(packed)  # as the till will read it: it must take it, or it would refuse it
    if why:
        raise OutboxError(f"the body: {why}")
    if len(collapse) > 256 or "\0" in collapse:
        raise OutboxError("a collapse key of at most 256 characters, no NUL")
    channel = channel_of(till)
    db.begin(channel)
    try:
        # The channel's row is its counter: taken under the row's lock, positions never collide
        pos = db.execute("INSERT INTO channels (channel, last_pos) VALUES (?, 1) ON CONFLICT (channel) DO UPDATE "
                         "SET last_pos = channels.last_pos + 1 RETURNING last_pos", (channel,)).fetchone()[0]
        if pos >= wire.MAX_POS:
            raise OutboxError(f"{channel} has used every position (a till said it holds {pos - 1})")
        db.execute("INSERT INTO outbox (channel, pos, kind, body, created_at, expires_at, collapse) "
                   "VALUES (?,?,?,?,?,?,?)", (channel, pos, kind, packed, time.time(), expires_at, collapse))
        db.commit()
    except BaseException:
        db.rollback()
        raise
    log.info("outbox: %s %d: %s%s", channel, pos, kind, f" (collapse {collapse!r})" if collapse else "")
    return Entry(channel, pos, kind, body, expires_at, collapse)


def _row(db: Db, till: str, channel: str) -> tuple[int, int, int] | None:
    row = db.execute("SELECT acked, sent_through, last_sent FROM downstream WHERE till=? AND channel=?",
                     (till, channel)).fetchone()
    return (row[0], row[1], row[2]) if row else None


def _last_pos(db: Db, channel: str) -> int:
    row = db.execute("SELECT last_pos FROM channels WHERE channel=?", (channel,)).fetchone()
    return row[0] if row else 0


def _skip(db: Db, till: str, channel: str, pos: int, reason: str) -> None:
    log.info("outbox: %s %s %d not delivered: %s", till, channel, pos, reason)
    db.execute("INSERT INTO skipped (till, channel, pos, reason, at) VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
               (till, channel, pos, reason, time.time()))


def _feed(db: Db, till: str, channel: str) -> list[wire.Down]:
    """What to send TILL next on CHANNEL ("till" or "broadcast"), within its window, skips logged;
    its row updated. Call within a transaction on the till."""
    row = _row(db, till, channel)
    if row is None:
        return []
    acked, sent_through, last_sent = row
    source = channel_of(till) if channel == "till" else BROADCAST
    cap = _last_pos(db, source)
    if channel == BROADCAST and till != EVERY_TILL:
        # A till gets by itself only what went to every till before (it was away); what comes now
        # goes out once on the broadcast topic, and what went there lately is its to ack first.
        cap = min(cap, _went_out(db, till))
    out: list[wire.Down] = []
    now = time.time()
    before = (sent_through, last_sent, acked)
    for _ in range(10):  # at most ten windows of skipped records at once: the rest at the next call
        if sent_through >= cap:
            break
        nxt = db.execute("SELECT min(pos) FROM outbox WHERE channel=? AND pos>?", (source, sent_through)).fetchone()[0]
        if nxt is None or nxt > cap:  # positions with no record (a counter moved up): nothing to send
            sent_through = cap
            break
        sent_through = max(sent_through, nxt - 1)
        # The window: sent records not yet acknowledged (skipped ones cost nothing).
        limit = min(cap, (sent_through if last_sent <= acked else acked) + WINDOW)
        if limit <= sent_through:
            break
        rows = db.execute("SELECT pos, kind, body, expires_at, collapse FROM outbox WHERE channel=? AND pos>? "
                          "AND pos<=? ORDER BY pos", (source, sent_through, limit)).fetchall()
        for pos, kind, body, expires_at, collapse in rows:
            # Superseded only by a later record that is itself still to be delivered
            newer = collapse and db.execute(
                "SELECT max(pos) FROM outbox WHERE channel=? AND collapse=? AND pos>? AND (expires_at IS NULL OR "
                "expires_at > ?)", (source, collapse, pos, now)).fetchone()[0]
            if expires_at is not None and expires_at <= now:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(expires_at))
                _skip(db, till, channel, pos, f"expired at {when} UTC")
            elif newer:
                _skip(db, till, channel, pos, f"superseded by {newer} ({collapse})")
            else:
                out.append(wire.Down(channel, pos, last_sent, kind, bytes(body)))
                last_sent = pos
        sent_through = limit
        if out or last_sent > acked:
            break
    if last_sent <= acked:  # every record sent is acknowledged: what was skipped is settled too
        acked = sent_through
    if (sent_through, last_sent, acked) != before:
        db.execute("UPDATE downstream SET sent_through=?, last_sent=?, acked=?, sent_at=CASE WHEN ? THEN ? "
                   "ELSE sent_at END WHERE till=? AND channel=?",
                   (sent_through, last_sent, acked, bool(out), now, till, channel))
    return out


Send = tuple[str, bytes]  # topic, payload
Publish = Callable[[str, bytes], None]


def _downs(till: str, downs: list[wire.Down]) -> list[Send]:
    topic = wire.BROADCAST_DOWN if till == EVERY_TILL else wire.down_topic(till)
    return [(topic, wire.encode_down(d)) for d in downs]


def _went_out(db: Db, till: str) -> int:
    """The highest broadcast position a till must be sent alone: what went out on the broadcast
    topic before its hello (it was not listening), or RESEND_AFTER ago or more (it should have
    acknowledged it by now); newer ones it is taking from the topic. A record's push follows its
    put within a look of the ingest (DUE_EVERY), so its created_at stands for when it went out; one
    queued while the ingest was down and pushed only now may go to a till both ways, and its
    journal takes it once."""
    row = db.execute(f"SELECT ({_WENT_OUT}) FROM downstream d JOIN downstream e ON e.till=? AND e.channel=? "
                     "WHERE d.till=? AND d.channel=?", (*_before(), EVERY_TILL, BROADCAST, till, BROADCAST)).fetchone()
    return row[0] if row else 0


def _before() -> tuple[float, float, float, float]:
    stale = time.time() - RESEND_AFTER
    return stale, stale, stale, stale


# The same as an expression over a till's row `d` and the broadcast topic's row `e` (also for due()):
# T = the later of RESEND_AFTER ago and the till's hello; every push before T, or only those made before T.
_T = "(CASE WHEN COALESCE(d.hello_at, 0) > ? THEN d.hello_at ELSE ? END)"
_WENT_OUT = (f"CASE WHEN COALESCE(e.sent_at, 0) < {_T} THEN e.sent_through ELSE (SELECT COALESCE(max(o.pos), 0) "
             f"FROM outbox o WHERE o.channel = 'broadcast' AND o.pos <= e.sent_through AND o.created_at < {_T}) END")


def _source(till: str, channel: str) -> str:
    return f"till:{till}" if channel == "till" else BROADCAST


def hello(db: Db, h: wire.Hello) -> tuple[dict[str, int], list[Send]]:
    """A till's relay connected and says how far it applied each channel: where head office takes
    each channel up (the relay takes it as applied: its answer), and what follows, to send now.

    Head office never goes below what the till acknowledged (an ack is sent only after a durable
    append), so a relay that lost its positions file gets nothing twice; a till above the
    channel's end (head office's archive restored from an older backup) moves the channel's
    counter up, so new records never reuse positions the till already holds."""
    db.begin(h.till)
    try:
        _quick(db)
        _every(db)
        out: list[Send] = []
        settled: dict[str, int] = {}
        for channel in wire.CHANNELS:
            pos = h.down.get(channel, 0)
            row = _row(db, h.till, channel)
            if row is not None and pos < row[0]:
                log.info("outbox: %s says it applied %s through %d; it acknowledged %d: sending from %d",
                         h.till, channel, pos, row[0], row[0] + 1)
                pos = row[0]
            pos = _beyond(db, h.till, channel, pos, "says it applied")
            db.execute("INSERT INTO downstream (till, channel, acked, sent_through, last_sent, hello_at) "
                       "VALUES (?,?,?,?,?,?) ON CONFLICT (till, channel) DO UPDATE SET acked=excluded.acked, "
                       "sent_through=excluded.sent_through, last_sent=excluded.last_sent, hello_at=excluded.hello_at",
                       (h.till, channel, pos, pos, pos, time.time()))
            settled[channel] = pos
            out += _downs(h.till, _feed(db, h.till, channel))
        _seen(db, h.till, "online")
        db.commit()
        return settled, out
    except BaseException:
        db.rollback()
        raise


def _beyond(db: Db, till: str, channel: str, pos: int, said: str) -> int:
    """A position a till holds beyond its channel's end: head office's archive restored from an
    older backup. A till's own channel numbers on above it (new records must not reuse positions the
    till holds: it would take them for ones it has); the broadcast channel is every till's, and one
    till does not move it: logged for the operator, who sends what is missing again."""
    source = _source(till, channel)
    last = _last_pos(db, source)
    if pos <= last:
        return pos
    if channel == BROADCAST:
        log.error("outbox: %s %s broadcast position %d, beyond the outbox's %d (an archive restored from an older "
                  "backup?): broadcast records queued from now up to %d would be taken by it as ones it has",
                  till, said, pos, last, pos)
        return last
    log.error("outbox: %s %s %s position %d, beyond the outbox's %d (an archive restored from an older backup?): "
              "%s numbers on from %d", till, said, channel, pos, last, source, pos + 1)
    db.execute("INSERT INTO channels (channel, last_pos) VALUES (?, ?) ON CONFLICT (channel) DO UPDATE "
               "SET last_pos = excluded.last_pos WHERE channels.last_pos < excluded.last_pos", (source, pos))
    return pos


def acked(db: Db, a: wire.DownAck) -> list[Send]:
    """A till has CHANNEL through POS in its journal: what follows, within the window."""
    db.begin(a.till)
    try:
        row = _row(db, a.till, a.channel)
        if row is None:  # an ack before any hello (head office's archive was replaced): its next hello
            db.rollback()
            return []
        _quick(db)
        pos = _beyond(db, a.till, a.channel, a.pos, "acknowledged")
        # Never beyond what was sent to it (or to every till): an ack ahead marks nothing delivered
        every = _row(db, EVERY_TILL, BROADCAST) if a.channel == BROADCAST else None
        pos = min(pos, max(row[1], every[1] if every else 0))
        if a.refused is not None:
            _skip(db, a.till, a.channel, pos, "refused by the till: " + a.refused[:500].replace("\0", ""))
        if pos > row[0]:
            db.execute("UPDATE downstream SET acked=?, sent_through=?, last_sent=?, acked_at=? WHERE till=? AND "
                       "channel=?", (pos, max(pos, row[1]), max(pos, row[2]), time.time(), a.till, a.channel))
        out = _downs(a.till, _feed(db, a.till, a.channel))
        db.commit()
        return out
    except BaseException:
        db.rollback()
        raise


def _every(db: Db) -> None:
    """The broadcast topic's row, made the first time: what the outbox held before goes to each
    till by its hello, what comes after goes out on the topic."""
    if _row(db, EVERY_TILL, BROADCAST) is None:
        last = _last_pos(db, BROADCAST)
        db.execute("INSERT INTO downstream (till, channel, acked, sent_through, last_sent) VALUES (?,?,?,?,?) "
                   "ON CONFLICT DO NOTHING", (EVERY_TILL, BROADCAST, last, last, last))


def _quick(db: Db) -> None:
    """A hello or an ack need not wait for the disk: one lost in a crash costs a resend, which the
    till's journal takes once (PostgreSQL: no fsync at this commit; still in order with the others)."""
    if db.postgres:
        db.execute("SET LOCAL synchronous_commit TO off")


def _seen(db: Db, till: str, status: str) -> None:
    db.execute("INSERT INTO presence (till, status, at) VALUES (?,?,?) ON CONFLICT (till) DO UPDATE "
               "SET status=excluded.status, at=excluded.at", (till, status, time.time()))


def presence(db: Db, till: str, status: str) -> None:
    """A till's relay said online or offline (its retained status, or its Will)."""
    db.begin(till)
    try:
        _quick(db)
        _seen(db, till, status)
        db.commit()
    except BaseException:
        db.rollback()
        raise


def due(db: Db, publish: Publish) -> None:
    """What head office has to send now (the ingest calls it every half second), each published as
    soon as its transaction committed: new broadcast records once to every till online; new
    records of a till online; a broadcast record a till online has not acknowledged RESEND_AFTER
    after it went out; and again, from the till's ack, what was sent and not acknowledged within
    RESEND_AFTER."""
    db.begin(EVERY_TILL)
    try:
        _every(db)
        every = _row(db, EVERY_TILL, BROADCAST)
        sends: list[Send] = []
        if every is not None and _last_pos(db, BROADCAST) > every[1]:
            # The topic has no acks: its window opens again at each look
            db.execute("UPDATE downstream SET acked=sent_through WHERE till=? AND channel=?", (EVERY_TILL, BROADCAST))
            sends = _downs(EVERY_TILL, _feed(db, EVERY_TILL, BROADCAST))
        db.commit()
    except BaseException:
        db.rollback()
        raise
    for topic, payload in sends:
        publish(topic, payload)
    stale = time.time() - RESEND_AFTER
    tills = db.execute(
        "SELECT d.till, d.channel FROM downstream d JOIN presence p ON p.till = d.till AND p.status = 'online' "
        "JOIN downstream e ON e.till = ? AND e.channel = 'broadcast' "
        "LEFT JOIN channels c ON c.channel = 'till:' || d.till "
        "WHERE d.till <> ? AND ((d.channel = 'till' AND c.last_pos > d.sent_through AND d.last_sent <= d.acked) "
        f"OR (d.channel = 'broadcast' AND d.last_sent <= d.acked AND d.sent_through < ({_WENT_OUT})) "
        "OR (d.last_sent > d.acked AND d.sent_at < ?))", (EVERY_TILL, EVERY_TILL, *_before(), stale)).fetchall()
    for till, channel in tills:
        db.begin(till)
        try:
            row = _row(db, till, channel)
            if row is not None and row[2] > row[0]:  # unacknowledged for too long: again from the ack
                db.execute("UPDATE downstream SET sent_through=acked, last_sent=acked WHERE till=? AND channel=? "
                           "AND sent_at < ?", (till, channel, stale))
            sends = _downs(till, _feed(db, till, channel))
            db.commit()
        except Exception as e:  # this till's turn only: the others go on
            db.rollback()
            log.error("outbox: %s %s not fed (%s: %s); again in a moment", till, channel, type(e).__name__, e)
            continue
        for topic, payload in sends:
            publish(topic, payload)
