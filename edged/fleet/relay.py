"""`edged relay`: the till's journal to head office over MQTT, acked to edged only once head office
has it committed (docs/FLEET.md).

A client of edged's socket like any sync client: consumer `head-office`, subscribed from its
acked cursor with `frames` (PROTOCOL.md), so what it publishes is the journal byte for byte and
head office checks it as one chain. Each `frames` event becomes one batch on
`edged/v1/till/<till>/up` (QoS 1). Head office answers on `.../ack` with the highest seq up to
which it holds every record; only then does the relay ack edged, so the cursor follows head
office's archive, never the broker. Whatever goes wrong (broker down, network gone, head office
down or restarted, a batch lost with a broker that keeps nothing) ends in the same place: the
relay starts again from edged's cursor, and head office skips what it has.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any

from ..client import Client, ClientError, ConnectionClosed
from . import down, mqtt, wire

log = logging.getLogger("edged.fleet")
CONSUMER = "head-office"
IN_FLIGHT = 8  # batches published and not yet acknowledged by the broker (PUBACK)
# A batch joined from several `frames` events (Nagle's rule, _publish) stops growing here: edged
# sends at most 256 KiB an event, and brokers often refuse packets over 1 MB (EMQX's default).
MERGE_BYTES = 512 << 10
NOBODY = "No matching subscribers"  # the MQTT 5 PUBACK reason when no subscription matched
DOWN_DRAIN = 500  # head office's records taken into one append (one fdatasync)
HELLO_AGAIN = 3.0  # seconds: at most one hello this often when head office's records came with a gap
HELLO_ANSWER = 5.0  # seconds to wait for head office to answer a hello (an ack) before saying it again


@dataclass
class RelayState:
    """What the relay knows, for its log and its tests."""

    till: str = ""
    sent_through: int = 0  # the highest seq published in this session
    acked: int = 0  # what head office acknowledged, and edged was told
    batches: int = 0
    conflicts: list[str] = field(default_factory=list)


class Relay:
    def __init__(self, socket_path: str, endpoint: mqtt.Endpoint, *, window: int = 2000, batch: int = 500,
                 ack_timeout: float = 10.0, retry: float = 1.0, state_dir: str | None = None,
                 reconnect_max: int = 60) -> None:
        self.socket_path, self.endpoint = socket_path, endpoint
        self.window, self.batch, self.ack_timeout, self.retry = window, batch, ack_timeout, retry
        self.state = RelayState()
        self._progress = asyncio.Event()  # set by every ack that moves the cursor
        # For _publish's waits (_watch clears _progress): an ack, a conflict, or a publish ended.
        self._wake = asyncio.Event()
        self.since = 1  # where this session began: edged's cursor + 1
        self.state_dir = state_dir
        self.reconnect_max = reconnect_max
        self.down: down.Downstream | None = None
        self._downs: asyncio.Queue[wire.Down] = asyncio.Queue()  # head office's records, for _downstream
        self._answered = asyncio.Event()  # head office answered the last hello (its ack with our positions)
        self._pause = HELLO_ANSWER  # how long a hello waits for its answer before it is said again
        self._hello_next = 0.0  # no hello before this (monotonic): the back-off outlives a session

    async def run(self) -> None:
        """Until cancelled: relay, and after any failure start again from edged's cursor."""
        till = await self._till_id()
        self.state.till = till
        self.down = down.Downstream(till, self.state_dir)
        link = mqtt.Link(self.endpoint, till, will=(wire.status_topic(till), b"offline"),
                         reconnect_max=self.reconnect_max)
        link.subscribe(wire.ack_topic(till))
        link.subscribe(wire.down_topic(till))
        link.subscribe(wire.BROADCAST_DOWN)
        link.start()
        try:
            while True:
                await link.connected.wait()
                try:
                    await self._session(link, till)
                except (mqtt.BrokerDown, mqtt.BrokerRefused, ConnectionClosed, ClientError, OSError,
                        _Stalled) as e:
                    log.warning("relay: %s; starting again from edged's cursor", e)
                await asyncio.sleep(self.retry)
                # What came while no session read it (edged unreachable): head office sends it again
                # after the next hello; kept, it would pile up for as long as edged is away.
                while not link.messages.empty():
                    link.messages.get_nowait()
        finally:
            with contextlib.suppress(Exception):
                await link.publish(wire.status_topic(till), b"offline", retain=True, timeout=2)
            await link.stop()

    async def _till_id(self) -> str:
        while True:
            try:
                async with await Client.connect(self.socket_path, "edged-relay") as c:
                    return str(c.server_info["till_id"])
            except (OSError, ClientError) as e:
                log.warning("relay: edged's socket %s: %s; trying again", self.socket_path, e)
                await asyncio.sleep(self.retry)

    async def _session(self, link: mqtt.Link, till: str) -> None:
        """One connection to edged while the broker is up: publish frames, pass acks on."""
        await link.publish(wire.status_topic(till), b"online", retain=True)
        async with await Client.connect(self.socket_path, "edged-relay") as edged:
            r = await edged.request("subscribe", consumer=CONSUMER, **{"from": "acked"}, frames=True,
                                    window=self.window, batch=self.batch)
            self.state.acked = self.state.sent_through = r["from_seq"] - 1
            self.since = r["from_seq"]
            log.info("relay: %s online; sending from seq %d", till, r["from_seq"])
            tasks = [asyncio.create_task(self._publish(link, edged, till)),
                     asyncio.create_task(self._acks(link, edged, till)),
                     asyncio.create_task(self._watch(link)),
                     asyncio.create_task(self._downstream(link, edged, till))]
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    t.result()  # raises what ended the session
            finally:
                for t in tasks:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    async def _publish(self, link: mqtt.Link, edged: Client, till: str) -> None:
        """`frames` events as batches; up to IN_FLIGHT batches wait for their PUBACK at once (one
        round trip to the broker per batch would cap a catch-up), any failed one ends the session.

        Nagle's rule for head office: while a batch of this session waits for head office's ack,
        the records that arrive meanwhile join the next batch until it holds `batch` records (at
        most half the window, MERGE_BYTES); with nothing owed, a batch goes at once. Under load
        head office gets full batches instead of one per append request (its cost is mostly per
        batch: a transaction, its checks and a commit); a sale that comes while an ack is owed
        waits for that ack (a head-office round trip), or for a refusal, or until `ack_timeout`
        ends the session."""
        topic = wire.up_topic(till)
        pubacks: set[asyncio.Task] = set()
        room = asyncio.Semaphore(IN_FLIGHT)
        events = _Events(edged)
        carry: dict[str, Any] | None = None  # an event read that did not fit the last batch
        fill = max(1, min(self.batch, self.window // 2))  # never wait for what the window cannot hold

        def check_pubacks() -> None:
            for done in [t for t in pubacks if t.done()]:
                pubacks.discard(done)
                reason = done.result()  # raises BrokerDown / BrokerRefused
                if reason == NOBODY:  # no ingest subscribed: nothing will be acked; try again soon
                    raise _Stalled(f"no head office ingest is listening on the broker ({reason})")

        try:
            while True:
                check_pubacks()
                ev, carry = carry or await events.next(), None
                if ev.get("event") != "frames":
                    continue
                first, last, chain_before = ev["first_seq"], ev["last_seq"], ev["chain_before"]
                frames, size, journal_last = list(ev["frames"]), sum(map(len, ev["frames"])), ev.get("journal_last")
                refusals = len(self.state.conflicts)
                while len(frames) < fill and self.state.sent_through > self.state.acked \
                        and len(self.state.conflicts) == refusals:
                    self._wake.clear()
                    check_pubacks()  # a failed publish ends the session now, not after ack_timeout
                    more = await events.next_unless(self._wake)
                    if more is None or more.get("event") != "frames":
                        continue  # woken (check again), or not a batch's event
                    if more["first_seq"] != last + 1 or len(frames) + len(more["frames"]) > fill \
                            or size + sum(map(len, more["frames"])) > MERGE_BYTES:
                        carry = more
                        break
                    frames += more["frames"]
                    size += sum(map(len, more["frames"]))
                    last, journal_last = more["last_seq"], more.get("journal_last")
                batch = wire.Batch(till, first, last, chain_before, frames, self.since, journal_last)
                # Before the PUBACK: head office may commit and ack the batch before paho hands us that.
                self.state.sent_through = batch.last_seq
                await room.acquire()
                task = asyncio.create_task(link.publish(topic, wire.encode_batch(batch)))
                task.add_done_callback(lambda _t: room.release())
                task.add_done_callback(lambda _t: self._wake.set())
                pubacks.add(task)
                self.state.batches += 1
        finally:
            events.close()
            for t in pubacks:
                t.cancel()
            await asyncio.gather(*pubacks, return_exceptions=True)

    async def _acks(self, link: mqtt.Link, edged: Client, till: str) -> None:
        while True:
            topic, payload, _mid, _qos = await link.messages.get()
            if topic in (wire.down_topic(till), wire.BROADCAST_DOWN):
                try:
                    d = wire.decode_down(payload)
                    if topic == wire.BROADCAST_DOWN and d.channel != "broadcast":
                        raise wire.WireError(f"a record of channel {d.channel} on the broadcast topic")
                except wire.WireError as e:
                    log.error("relay: ignored a message on %s: %s", topic, e)
                    continue
                self._downs.put_nowait(d)
                continue
            try:
                ack = wire.decode_ack(payload)
                if wire.till_of(topic, "ack") != till or ack.till != till:
                    raise wire.WireError(f"an ack for till {ack.till!r} on {topic}")
            except wire.WireError as e:
                log.error("relay: ignored a message on %s: %s", topic, e)
                continue
            if ack.down is not None and self.down is not None:  # head office's answer to a hello
                self.down.settled(ack.down)
                self._answered.set()
            if ack.conflict:  # edged is not acked on it: the refused records stay in the journal
                log.critical("relay: head office refused records of this till: %s", ack.conflict)
                self.state.conflicts.append(ack.conflict)
                self._wake.set()  # no ack will come for what it holds back: publish it
                continue
            # Never beyond what this session sent: head office may hold more (a day from a stick),
            # but edged's cursor moves only over records relayed or known archived in order.
            through = min(ack.archived_through, self.state.sent_through)
            if through > self.state.acked:
                r = await edged.request("ack", consumer=CONSUMER, seq=through)
                self.state.acked = r["acked"]
                self._progress.set()
                self._wake.set()

    async def _downstream(self, link: mqtt.Link, edged: Client, till: str) -> None:
        """Head office's records into the journal (down.py): a hello first, then each message as it
        comes, acked to head office once durable. A hello not answered (head office's ack with
        this till's positions) within a pause, or that no ingest heard, is said again, the pause
        5 s doubling to 60 s with jitter (kept across sessions), so tills do not all come back at
        once; so is one when records stay missing before ones that came (at most every 3 s)."""
        assert self.down is not None

        async def append(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            try:
                return (await edged.request("append", records=records))["records"]
            except ClientError as e:
                if e.code != "bad_request":  # disk full, edged gone ...: not the record's fault, try again
                    raise
                raise down.Refusal(str(e)) from None
            except ValueError as e:  # a body the client cannot even encode (nested too deep)
                raise down.Refusal(f"cannot be sent to edged: {e}") from None

        want, waiting = True, False  # a hello to say (when allowed); one said and not answered yet
        said_at = 0.0
        while True:
            now = time.monotonic()
            if want and now >= self._hello_next:
                want, said_at = False, now
                self._answered.clear()
                try:
                    waiting = await link.publish(wire.hello_topic(till), self.down.hello()) != NOBODY
                except mqtt.BrokerRefused as e:  # a broker's ACL without the hello: upstream goes on all the same
                    log.error("relay: the broker refused this till's hello (%s): head office's records cannot come "
                              "down until its ACL lets edged/v1/till/%s/hello through (docs/FLEET.md)", e, till)
                    waiting = False
                if waiting:  # a new session within the wait says it no sooner
                    self._hello_next = now + self._pause
                else:
                    want, self._pause = True, _longer(self._pause)
                    self._hello_next = now + self._pause
                    log.warning("relay: no head office ingest heard this till's hello; again in %.0f s", self._pause)
            if waiting and self._answered.is_set():
                waiting, self._pause, self._hello_next = False, HELLO_ANSWER, 0.0
            deadlines = []
            if want:
                deadlines.append(self._hello_next)
            if waiting:
                deadlines.append(said_at + self._pause)
            elif self.down.waiting_since is not None:
                deadlines.append(self.down.waiting_since + max(HELLO_AGAIN, self._pause))
            timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
            batch: list[wire.Down] = []
            try:
                batch.append(await asyncio.wait_for(self._downs.get(), timeout))
            except TimeoutError:
                pass
            while batch and len(batch) < DOWN_DRAIN and not self._downs.empty():
                batch.append(self._downs.get_nowait())
            now = time.monotonic()
            if waiting and not self._answered.is_set() and now >= said_at + self._pause:
                # heard by the broker, lost before head office answered: say it again now, wait longer
                want, waiting, self._pause, self._hello_next = True, False, _longer(self._pause), now
            for a in await self.down.take(batch, append):
                link.send(wire.down_ack_topic(till), wire.encode_down_ack(a))
            since = self.down.waiting_since
            if since is not None and not (want or waiting) and now - since >= max(HELLO_AGAIN, self._pause):
                want = True  # records still missing before ones that came: ask from what the till has
                self.down.waiting_since = now

    async def _watch(self, link: mqtt.Link) -> None:
        """Ends the session when the broker goes, or when sent batches wait too long for head office."""
        waiting_since: float | None = None
        while True:
            if not link.connected.is_set():
                raise mqtt.BrokerDown(link.last_error)
            if self.state.sent_through > self.state.acked:
                waiting_since = waiting_since or time.monotonic()
                if time.monotonic() - waiting_since > self.ack_timeout:
                    raise _Stalled(f"head office acknowledged nothing for {self.ack_timeout:g} s "
                                   f"(sent through {self.state.sent_through}, acked {self.state.acked})")
            else:
                waiting_since = None
            self._progress.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 0.5)
            if self._progress.is_set():
                waiting_since = None


class _Events:
    """edged's pushed events, read one at a time, with a wait that an asyncio.Event can cut short
    without losing the event being waited for (the pending read is kept for the next call)."""

    def __init__(self, edged: Client) -> None:
        self.edged = edged
        self._read: asyncio.Future | None = None

    async def next(self) -> dict[str, Any]:
        """The next event."""
        got = await self.next_unless(None)
        assert got is not None
        return got

    async def next_unless(self, cut: asyncio.Event | None) -> dict[str, Any] | None:
        """The next event; None when CUT was set first."""
        if self._read is None:
            self._read = asyncio.ensure_future(self.edged.next_event())
        waits: set[asyncio.Future] = {self._read}
        if cut is not None:
            waits.add(asyncio.ensure_future(cut.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits - {self._read}:
                w.cancel()
        if not self._read.done():
            return None
        read, self._read = self._read, None
        return read.result()  # raises ConnectionClosed when edged went

    def close(self) -> None:
        if self._read is not None:
            self._read.cancel()


def _longer(pause: float) -> float:
    """The next pause: doubled up to a minute, with jitter so tills spread out."""
    return min(60.0, pause * 2) * random.uniform(0.8, 1.2)


class _Stalled(Exception):
    pass
