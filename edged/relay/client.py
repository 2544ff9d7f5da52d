"""The Python client library: what the CLI and the demo use to talk to edged.

One reader task matches responses to requests by id and queues events, so
requests may be issued concurrently from several tasks.
"""
from __future__ import annotations

import asyncio
import itertools
from typing import Any

from . import framing
from .protocol import PROTOCOL_VERSION


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
    async def connect(cls, path: str, client: str = "edged-cli") -> "Client":
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

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, BrokenPipeError):
            pass

    async def __aenter__(self) -> "Client":
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
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(why)
            self._pending.clear()
