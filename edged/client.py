"""The Python client library for edged's socket (docs/PROTOCOL.md).

    async with await Client.connect("/run/edged/edged.sock", "my-pos") as c:
        await c.request("append", records=[{"kind": "sale", "body": {...}}])

    async for record in follow(path, "head-office"):   # resumes after reconnects
        relay(record)                                   # acked once this returns

    with BlockingClient.connect(path, "script") as c:   # no asyncio needed
        print(c.request("status"))

`Client` runs one reader task that matches responses to requests by id and
queues events, so requests may be issued concurrently from several tasks.
The CLI and the demo use nothing else.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .relay import framing
from .relay.protocol import PROTOCOL_VERSION
from .relay.watch import TOPICS

log = logging.getLogger("edged.client")
DEFAULT_SOCKET = "/run/edged/edged.sock"


_END: Any = {"event": None}  # queued after the last event of a closed connection


class ClientError(Exception):
    """edged answered a request with an error."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ConnectionClosed(ClientError):
    def __init__(self, why: str = "edged closed the connection") -> None:
        super().__init__("closed", why)


class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.server_info: dict[str, Any] = {}
        self._closed: ClientError | None = None
        self._task = asyncio.create_task(self._read_loop(), name="edged-client-reader")

    @classmethod
    async def connect(cls, path: str, client: str = "edged-cli") -> Client:
        """Connect and say hello; server_info holds the hello result."""
        reader, writer = await asyncio.open_unix_connection(path)
        self = cls(reader, writer)
        try:
            self.server_info = await self.request("hello", protocol=PROTOCOL_VERSION, client=client)
        except BaseException:
            await self.close()
            raise
        return self

    async def request(self, op: str, **params: Any) -> dict[str, Any]:
        """Send one request and wait for its result; raise ClientError on an error answer."""
        if self._closed:
            raise self._closed
        req_id = next(self._ids)
        fut: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[req_id] = fut
        self._writer.write(framing.encode({"op": op, "id": req_id, **params}))
        await self._writer.drain()
        return await fut

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        """The next pushed event; ConnectionClosed once the connection is gone and none are left."""
        async with asyncio.timeout(timeout):
            event = await self.events.get()
        if event is _END:
            self.events.put_nowait(_END)  # for the next caller too
            assert self._closed is not None
            raise self._closed
        return event

    async def watch(self, *topics: str) -> AsyncIterator[dict[str, Any]]:
        """Device events of these topics (all when none are given), as they happen."""
        await self.request("watch", topics=list(topics or TOPICS))
        while True:
            event = await self.next_event()
            if event.get("event") != "record":
                yield event

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _read_loop(self) -> None:
        why: ClientError = ConnectionClosed()
        try:
            while True:
                msg = await framing.read_frame(self._reader, 1 << 30)
                if msg is None:
                    break
                if "event" in msg:
                    self.events.put_nowait(msg)
                    continue
                fut = self._pending.pop(msg.get("id"), None)  # type: ignore[arg-type]
                if msg.get("ok"):
                    if fut and not fut.done():
                        fut.set_result(msg.get("result", {}))
                    continue
                err = msg.get("error") or {}
                failure = ClientError(str(err.get("code")), str(err.get("message")))
                if fut and not fut.done():
                    fut.set_exception(failure)
                elif msg.get("id") is None:
                    why = failure  # a connection-level error (bad_frame ...) precedes the close
        except (framing.FrameError, ConnectionError) as e:
            why = ConnectionClosed(str(e))
        finally:
            self._closed = why
            self.events.put_nowait(_END)
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(why)
            self._pending.clear()


async def follow(path: str, consumer: str, *, start: int | str = "acked", client: str | None = None,
                 kinds: list[str] | None = None, window: int = 1000,
                 retry: float = 1.0) -> AsyncIterator[dict[str, Any]]:
    """Every journal record for `consumer`, at least once, across reconnects and daemon restarts.

    The first subscription starts at `start`, later ones at "acked". A record
    is acked when the loop body that received it finishes (when the next one
    is asked for), so a crash in the body means it comes again."""
    while True:
        try:
            async with await Client.connect(path, client or f"follow:{consumer}") as c:
                params: dict[str, Any] = {"consumer": consumer, "from": start, "window": window}
                start = "acked"
                if kinds:
                    params["kinds"] = kinds
                await c.request("subscribe", **params)
                while True:
                    event = await c.next_event()
                    if event.get("event") != "record":
                        continue
                    yield event
                    await c.request("ack", consumer=consumer, seq=event["seq"])
        except (ConnectionClosed, OSError) as e:
            log.warning("edged connection lost (%s); resuming from the last ack in %g s", e, retry)
            await asyncio.sleep(retry)


class BlockingClient:
    """The same protocol over a plain blocking socket, for scripts and other threads."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []  # events that arrived while waiting for a response
        self.server_info: dict[str, Any] = {}

    @classmethod
    def connect(cls, path: str = DEFAULT_SOCKET, client: str = "edged-script",
                timeout: float | None = 30.0) -> BlockingClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
            self = cls(sock)
            self.server_info = self.request("hello", protocol=PROTOCOL_VERSION, client=client)
        except BaseException:
            sock.close()
            raise
        return self

    def _read(self) -> dict[str, Any]:
        header = self._file.read(framing.HEADER.size)
        if len(header) < framing.HEADER.size:
            raise ConnectionClosed()
        (length,) = framing.HEADER.unpack(header)
        body = self._file.read(length)
        if len(body) < length:
            raise ConnectionClosed("edged closed the connection inside a frame")
        return framing.decode_body(body)

    def request(self, op: str, **params: Any) -> dict[str, Any]:
        req_id = next(self._ids)
        self._sock.sendall(framing.encode({"op": op, "id": req_id, **params}))
        while True:
            msg = self._read()
            if "event" in msg:
                self.events.append(msg)
                continue
            if msg.get("id") not in (req_id, None):
                continue  # an answer to an earlier request that timed out on our side
            if msg.get("ok"):
                return msg.get("result", {})
            err = msg.get("error") or {}
            raise ClientError(str(err.get("code")), str(err.get("message")))

    def next_event(self) -> dict[str, Any]:
        """The next pushed event (blocking up to the socket timeout)."""
        if self.events:
            return self.events.pop(0)
        while True:
            msg = self._read()
            if "event" in msg:
                return msg

    def iter_events(self) -> Iterator[dict[str, Any]]:
        while True:
            yield self.next_event()

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> BlockingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
