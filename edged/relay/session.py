"""One client connection: its state, its read loop, its queue of frames to send.

Leaf of the relay: the server (server.py) accepts connections and answers
requests; the op handlers everywhere take a Session. It knows the server only
as a Host, a Protocol of what a session reads from it, so that neither the
registry's handler type nor watch.py need to import server.py.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any, Protocol

from . import framing
from . import protocol as p
from .access import Access, Peer
from .outbox import Outbox

log = logging.getLogger("edged.relay")


class Host(Protocol):
    """What a session and the op handlers use of the server that accepted the connection."""
    access: Access
    max_frame: int
    send_queue: int
    client_timeout: float
    hello_info: Callable[[], dict[str, Any]]

    async def answer(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]: ...


class Session:
    """State of one client connection."""

    def __init__(self, server: Host, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: Peer) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.client: str | None = None  # set by hello
        self.peer = peer
        self.outbox = Outbox(writer, server.send_queue, max(server.max_frame, 4 << 20))
        self.topics: set[str] = set()  # watched, see watch.py
        self.after_response: list[Callable[[], None]] = []  # e.g. start streaming once `subscribe` is answered
        self.tasks: set[asyncio.Task] = set()  # per-connection work (subscriptions), cancelled on close
        self.subscriptions: dict[str, Any] = {}  # consumer name -> its live subscription (at most one)
        self.dropped = False
        self.refused_frame = False  # closed for a bad frame: linger so the client reads why

    async def send(self, message: dict[str, Any]) -> None:
        """Queue a message, waiting while this client's queue is full (never for other clients)."""
        await self.outbox.put(framing.encode(message))

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{name} ({self.client})")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def drop(self) -> None:
        """Close this connection at once (a watcher that stopped reading)."""
        self.dropped = True
        self.outbox.close()
        self.writer.transport.abort()

    def describe(self) -> dict[str, Any]:
        return {"client": self.client, "pid": self.peer.pid, "uid": self.peer.uid, "gid": self.peer.gid,
                "topics": sorted(self.topics), "queue": self.outbox.depth, "sent": self.outbox.sent,
                "subscriptions": {name: sub.describe() for name, sub in self.subscriptions.items()}}

    async def run(self) -> None:
        timeout = self.server.client_timeout
        while not self.dropped:
            try:
                # Idle is fine once introduced (a watcher may wait for hours); silence before
                # hello, or inside a frame, holds a connection slot and is cut off.
                msg = await framing.read_frame(self.reader, self.server.max_frame,
                                               None if self.client else timeout, timeout)
            except framing.FrameError as e:
                who = f"client {self.client!r}" if self.client else "a client before hello"
                log.warning("%s (%s): %s: %s; closing", who, self.peer, e.code, e.message)
                self.outbox.offer(framing.encode(p.error(None, e.code, e.message)))
                self.refused_frame = True
                return
            if msg is None:
                return
            await self.send(await self.server.answer(self, msg))
            for start in self.after_response:
                start()
            self.after_response.clear()

    def hello(self, params: dict[str, Any]) -> dict[str, Any]:
        version = p.param(params, "protocol", int)
        client = p.param(params, "client", str)
        if version != p.PROTOCOL_VERSION:
            raise p.RequestError(p.UNSUPPORTED_PROTOCOL,
                                 f"protocol {version} not supported; this server speaks {p.PROTOCOL_VERSION}")
        if not 0 < len(client) <= 128:
            raise p.RequestError(p.BAD_REQUEST, "'client' must be 1 to 128 characters")
        if self.client is None:
            log.info("client %r connected (%s)", client, self.peer)
        self.client = client
        return {"protocol": p.PROTOCOL_VERSION, "max_frame": self.server.max_frame, **self.server.hello_info()}
