"""An MQTT 5 connection for asyncio code: paho-mqtt's client on its own network thread, its
callbacks handed to the event loop (docs/FLEET.md).

paho keeps unsent QoS 1 messages in memory only; nothing here relies on the broker or paho to keep
anything: the till's journal is the buffer and the relay resends from its cursor. So a publish made
while the connection is down is refused at once (BrokerDown) instead of piling up in paho's queue.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("edged.fleet")


class BrokerDown(Exception):
    """Not connected to the broker (or the connection went while waiting)."""


class BrokerRefused(Exception):
    """The broker answered with a failure reason code (e.g. "Not authorized")."""


@dataclass
class Endpoint:
    """Where the broker is and how to prove who we are: mqtt://host:port (plain, tests and a
    loopback broker) or mqtts://host:port (TLS; a client certificate when cert and key are given)."""

    url: str
    ca: str = ""
    cert: str = ""
    key: str = ""
    username: str = ""  # for a broker using passwords instead of client certificates (tests)
    password: str = ""

    def parts(self) -> tuple[str, int, bool]:
        u = urlsplit(self.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ValueError(f"{self.url!r}: write the broker as mqtts://HOST:PORT (or mqtt:// without TLS)")
        tls = u.scheme == "mqtts"
        return u.hostname, u.port or (8883 if tls else 1883), tls


Message = tuple[str, bytes, int, int]  # topic, payload, mid (for manual acks), qos
RECEIVE_MAXIMUM = 16  # QoS 1 messages the broker may send before we acknowledge one: bounds what waits here
QOS0_HELD = 64  # QoS 0 messages (no till sends one) beyond this wait here are dropped, not queued


class Link:
    """One client connection; reconnects by itself (1 s doubling to 60 s, with jitter)."""

    def __init__(self, endpoint: Endpoint, client_id: str, *, will: tuple[str, bytes] | None = None,
                 manual_ack: bool = False, on_connect: Callable[[], None] | None = None,
                 reconnect_max: int = 60) -> None:
        self.endpoint = endpoint
        self.reconnect_max = reconnect_max
        self.loop = asyncio.get_running_loop()
        self.messages: asyncio.Queue[Message] = asyncio.Queue()
        self.connected = asyncio.Event()
        self.last_error = "not connected yet"
        self._on_connect = on_connect
        self._subscriptions: list[tuple[str, int]] = []
        self._pending: dict[int, asyncio.Future] = {}
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5,
                        manual_ack=manual_ack)
        host, port, tls = endpoint.parts()
        if tls:
            c.tls_set(ca_certs=endpoint.ca or None, certfile=endpoint.cert or None, keyfile=endpoint.key or None,
                      cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if endpoint.username:
            c.username_pw_set(endpoint.username, endpoint.password or None)
        if will is not None:
            c.will_set(will[0], will[1], qos=1, retain=True)
        c.reconnect_delay_set(1, reconnect_max)
        c.on_connect, c.on_disconnect = self._connected, self._disconnected
        c.on_message, c.on_publish, c.on_subscribe = self._message, self._published, self._subscribed
        c.on_socket_open = _no_delay
        self.client = c
        self._host, self._port = host, port

    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        self.client.connect_async(self._host, self._port, keepalive=30, properties=props)
        self.client.loop_start()

    async def stop(self) -> None:
        await asyncio.to_thread(self._stop_thread)

    def _stop_thread(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def subscribe(self, topic: str, qos: int = 1) -> None:
        """Subscribed now if connected, and again on every reconnect."""
        self._subscriptions.append((topic, qos))
        if self.connected.is_set():
            self.client.subscribe(topic, qos)

    async def publish(self, topic: str, payload: bytes, retain: bool = False, timeout: float = 30) -> str:
        """QoS 1: returns once the broker acknowledged it, with its reason ("Success", or "No matching
        subscribers": nobody got it); BrokerRefused on a failure reason code, BrokerDown when not
        connected or the connection went first."""
        if not self.connected.is_set():
            raise BrokerDown(self.last_error)
        fut = self.loop.create_future()
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            raise BrokerDown(paho.error_string(info.rc))
        self._pending[info.mid] = fut  # before the loop runs paho's PUBACK callback (call_soon_threadsafe)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise BrokerDown(f"no PUBACK within {timeout:g} s") from None
        finally:
            self._pending.pop(info.mid, None)

    def send(self, topic: str, payload: bytes) -> None:
        """QoS 1, not waited for: an ack head office sends. One lost with the connection costs only
        time: the till sends the batch again after its ack_timeout, and that resend is acked."""
        if not self.connected.is_set():
            log.warning("mqtt: %s not sent: %s", topic, self.last_error)
            return
        info = self.client.publish(topic, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            log.warning("mqtt: %s not sent: %s", topic, paho.error_string(info.rc))

    def ack(self, mid: int, qos: int) -> None:
        """With manual_ack: the PUBACK for a QoS 1 message taken over (after it is committed). A QoS 0
        message has none: a PUBACK for packet id 0 would make the broker drop the connection."""
        if qos == 1:
            self.client.ack(mid, 1)

    # --- paho's thread ---
    def _connected(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self.last_error = f"the broker refused the connection: {reason}"
            self.loop.call_soon_threadsafe(log.error, "mqtt: %s", self.last_error)
            return
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos)
        self.loop.call_soon_threadsafe(self._up)

    def _subscribed(self, client: paho.Client, userdata: Any, mid: int, reasons: list[ReasonCode], props: Any) -> None:
        failed = [str(r) for r in reasons if r.is_failure]
        if failed:
            self.loop.call_soon_threadsafe(log.error, "mqtt: subscription refused: %s", ", ".join(failed))
        else:
            self.loop.call_soon_threadsafe(log.info, "mqtt: subscribed")

    def _disconnected(self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.last_error = f"disconnected from the broker ({reason})"
        self.loop.call_soon_threadsafe(self._down)
        # paho reconnects by itself; its delay doubles but has no jitter: a shop's tills that lost the
        # broker together do not all come back in the same second
        client.reconnect_delay_set(random.randint(1, 4), self.reconnect_max)

    def _message(self, client: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        self.loop.call_soon_threadsafe(self._held, (msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def _published(self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any) -> None:
        self.loop.call_soon_threadsafe(self._settle, mid, str(reason), reason.is_failure)

    # --- back on the loop ---
    def _held(self, message: Message) -> None:
        if message[3] == 0 and self.messages.qsize() >= QOS0_HELD:
            log.warning("mqtt: dropped a QoS 0 message on %s: %d messages wait already", message[0][:200],
                        self.messages.qsize())
            return
        self.messages.put_nowait(message)

    def _up(self) -> None:
        self.last_error = ""
        self.connected.set()
        if self._on_connect is not None:
            self._on_connect()

    def _down(self) -> None:
        if self.connected.is_set():
            log.warning("mqtt: %s", self.last_error)
        self.connected.clear()
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(BrokerDown(self.last_error))

    def _settle(self, mid: int, reason: str, failed: bool) -> None:
        fut = self._pending.get(mid)
        if fut is None or fut.done():
            return
        if failed:
            fut.set_exception(BrokerRefused(reason))
        else:
            fut.set_result(reason)


def _no_delay(client: paho.Client, userdata: Any, sock: Any) -> None:
    """No Nagle on the broker connection: a batch, its PUBACK and head office's ack are small
    messages one after another, each would wait for the last one's TCP ACK (40 ms with delayed ACKs)."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
