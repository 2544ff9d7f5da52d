"""Many lightweight tills in one process, for `edged bench fleet --tills N` (bench/chainsim.py).

Each till speaks the relay's protocol (docs/FLEET.md) over its own MQTT connection, on one asyncio
loop (paho-mqtt driven by the loop's readers and writers, no thread per till): its journal is a
synthetic one (real frames, chained, of bench sales: head office checks them as any till's); it
sends batches with the relay's rule (a batch at once when nothing is owed, else the records wait
for head office's ack and go as one), says hello with its applied positions on every connect, and
takes head office's records with the relay's own code (fleet/down.py) into an in-memory journal
that refuses a tx_id twice, as edged does. It reconnects as the relay does (paho's delay: a random
1-4 s doubling to 60 s). Commands on stdin, one JSON line each; answers on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from ..fleet import down, wire
from ..journal import frame as fr
from .common import RECORD

BATCH = 500
ACK_TIMEOUT = 10.0
NOBODY = "No matching subscribers"
PAYLOAD = fr.payload_of("sale", RECORD, None, None, None)


class SimTill:
    def __init__(self, name: str, host: str, port: int, password: str, tls: str | None) -> None:
        self.name, self.host, self.port = name, host, port
        self.frames: list[bytes] = []  # the journal: frame i is seq i + 1
        self.chains: list[bytes] = [fr.GENESIS]  # chains[i]: the link after seq i
        self.acked = self.sent_through = 0
        self.sent_at = 0.0
        self.since = 1
        self.down = down.Downstream(name, None)
        self.tx_ids: set[str] = set()
        self.inbox: asyncio.Queue[wire.Down] = asyncio.Queue()
        self.connected = False
        self.connects = 0
        self.delay = random.randint(1, 4)
        self.hello_mid: int | None = None
        self.hello_at: float | None = None  # a hello said and not answered yet (as the relay, fleet/relay.py)
        self.hello_wait = 5.0
        self.loop = asyncio.get_running_loop()
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5)
        if tls:  # its certificate's CN is its name: the broker's username for the ACL
            c.tls_set(ca_certs=f"{tls}/ca.pem", certfile=f"{tls}/{name}.pem", keyfile=f"{tls}/{name}.key")
        else:
            c.username_pw_set(name, password)
        c.will_set(wire.status_topic(name), b"offline", qos=1, retain=True)
        c.on_connect, c.on_disconnect, c.on_message, c.on_publish = (self._connected, self._disconnected,
                                                                      self._message, self._published)
        c.on_socket_open = lambda client, ud, sock: self.loop.add_reader(sock, client.loop_read)
        c.on_socket_close = lambda client, ud, sock: None if self.loop.remove_reader(sock) else None
        c.on_socket_register_write = lambda client, ud, sock: self.loop.add_writer(sock, client.loop_write)
        c.on_socket_unregister_write = lambda client, ud, sock: None if self.loop.remove_writer(sock) else None
        self.client = c
        self.task = asyncio.ensure_future(self._take())

    # --- the journal ---
    def sell(self, n: int) -> None:
        now = time.time_ns()
        for _ in range(n):
            seq = len(self.frames) + 1
            raw, chain = fr.encode(seq, now, PAYLOAD, seq, seq, self.chains[-1])
            self.frames.append(raw)
            self.chains.append(chain)
        self.send()

    # --- the connection ---
    def connect(self) -> None:
        try:
            self.client.connect(self.host, self.port, keepalive=30)
        except OSError:
            self.loop.call_later(self._backoff(), self.connect)

    def _backoff(self) -> float:
        d, self.delay = self.delay, min(60, self.delay * 2)
        return d

    def _connected(self, client: paho.Client, ud: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            return
        self.connected, self.delay = True, random.randint(1, 4)
        self.connects += 1
        for topic in (wire.ack_topic(self.name), wire.down_topic(self.name), wire.BROADCAST_DOWN):
            client.subscribe(topic, 1)
        client.publish(wire.status_topic(self.name), b"online", qos=1, retain=True)
        self._session()

    def _session(self) -> None:
        """As the relay's session: a hello, then everything from head office's last ack."""
        if not self.connected:
            return
        self.hello_mid = self.client.publish(wire.hello_topic(self.name), self.down.hello(), qos=1).mid
        self.hello_at = time.monotonic()
        self.sent_through = self.acked
        self.since = self.acked + 1
        self.send()

    def _disconnected(self, client: paho.Client, ud: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.connected = False
        self.loop.call_later(self._backoff(), self.connect)

    def _published(self, client: paho.Client, ud: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        if str(reason) == NOBODY:  # head office's ingest not there (yet): the relay tries again soon
            self.loop.call_later(2.0 * random.uniform(0.8, 1.2) if mid == self.hello_mid else 1.0, self._session)

    def tick(self) -> None:
        """Every second: the keepalive, and a resend when head office owes an ack for too long."""
        if self.connected:
            self.client.loop_misc()
            if self.sent_through > self.acked and time.monotonic() - self.sent_at > ACK_TIMEOUT:
                self._session()
            elif self.hello_at is not None and time.monotonic() - self.hello_at > self.hello_wait:
                self.hello_wait = min(60.0, self.hello_wait * 2) * random.uniform(0.8, 1.2)
                self._session()

    # --- upstream ---
    def send(self) -> None:
        """A batch when nothing is owed (the relay's rule); the rest waits for head office's ack."""
        last = len(self.frames)
        if not self.connected or self.sent_through > self.acked or last <= self.sent_through:
            return
        first, end = self.sent_through + 1, min(last, self.sent_through + BATCH)
        batch = wire.Batch(self.name, first, end, self.chains[first - 1], self.frames[first - 1:end], self.since, last)
        self.client.publish(wire.up_topic(self.name), wire.encode_batch(batch), qos=1)
        self.sent_through, self.sent_at = end, time.monotonic()

    def _message(self, client: paho.Client, ud: Any, msg: paho.MQTTMessage) -> None:
        try:
            if msg.topic == wire.ack_topic(self.name):
                ack = wire.decode_ack(bytes(msg.payload))
                if ack.down is not None:  # the answer to its hello
                    self.down.settled(ack.down)
                    self.hello_at, self.hello_wait = None, 5.0
                if ack.archived_through > self.acked and not ack.conflict:
                    self.acked = min(ack.archived_through, self.sent_through)
                    self.send()
            else:
                self.inbox.put_nowait(wire.decode_down(bytes(msg.payload)))
        except wire.WireError as e:
            print(f"{self.name}: {e}", file=sys.stderr)

    # --- downstream, with the relay's own code ---
    async def _append(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for r in records:
            out.append({"seq": 0, "duplicate": r["tx_id"] in self.tx_ids})
            self.tx_ids.add(r["tx_id"])
        return out

    async def _take(self) -> None:
        while True:
            batch = [await self.inbox.get()]
            while not self.inbox.empty():
                batch.append(self.inbox.get_nowait())
            for a in await self.down.take(batch, self._append):
                if self.connected:
                    self.client.publish(wire.down_ack_topic(self.name), wire.encode_down_ack(a), qos=1)
            if self.down.waiting_since is not None and time.monotonic() - self.down.waiting_since > 3:
                self.down.waiting_since = time.monotonic()
                self._session()


async def main(names: list[str], host: str, port: int, password: str, tls: str | None) -> None:
    tills = [SimTill(n, host, port, password, tls) for n in names]
    for t in tills:
        t.connect()
        await asyncio.sleep(0)

    async def ticks() -> None:
        while True:
            await asyncio.sleep(1)
            for t in tills:
                t.tick()

    ticking = asyncio.ensure_future(ticks())
    reader = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["op"] == "sell":
            for t in tills:
                t.sell(cmd["n"])
        answer = {"connected": sum(t.connected for t in tills), "connects": sum(t.connects for t in tills),
                  "journal": sum(len(t.frames) for t in tills), "acked": sum(t.acked for t in tills),
                  "down_records": sum(t.down.records for t in tills)}
        print(json.dumps(answer), flush=True)
    ticking.cancel()


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--password", default="")
    p.add_argument("--tls", metavar="DIR", help="ca.pem and each till's NAME.pem and NAME.key")
    p.add_argument("names", nargs="+")
    a = p.parse_args()
    asyncio.run(main(a.names, a.host, a.port, a.password, a.tls))
