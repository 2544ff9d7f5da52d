"""The unix-socket server: one session per connection, requests answered in order.

A bad frame is answered and closes its own connection only; a failing op
handler answers `internal` and the session goes on. Ops not registered
answer `unknown_op`.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import struct
from pathlib import Path
from typing import Any, Awaitable, Callable

from . import framing
from . import protocol as p

log = logging.getLogger("edged.relay")

Handler = Callable[["Session", dict[str, Any]], Awaitable[dict[str, Any]]]
_UCRED = struct.Struct("3i")


class Session:
    """State of one client connection."""

    def __init__(self, server: "Server", reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.client: str | None = None  # set by hello
        self.pid, self.uid, self.gid = _peer_credentials(writer)
        self.after_response: list[Callable[[], None]] = []  # e.g. start streaming once `subscribe` is answered
        self.tasks: set[asyncio.Task] = set()  # per-connection work (subscriptions), cancelled on close
        self.subscriptions: dict[str, Any] = {}  # consumer name -> its live subscription
        self._send_lock = asyncio.Lock()

    @property
    def peer(self) -> str:
        return f"pid={self.pid} uid={self.uid} gid={self.gid}"

    async def send(self, message: dict[str, Any]) -> None:
        async with self._send_lock:  # responses and events from several tasks, one frame at a time
            self.writer.write(framing.encode(message))
            await self.writer.drain()

    def spawn(self, coro, name: str) -> asyncio.Task:
        task = asyncio.create_task(coro, name=f"{name} ({self.client})")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def run(self) -> None:
        while True:
            try:
                msg = await framing.read_frame(self.reader, self.server.max_frame)
            except framing.FrameError as e:
                log.warning("client %s (%s): %s: %s; closing", self.client, self.peer, e.code, e.message)
                await self.send(p.error(None, e.code, e.message))
                return
            if msg is None:
                return
            await self.send(await self._answer(msg))
            for start in self.after_response:
                start()
            self.after_response.clear()

    async def _answer(self, msg: dict[str, Any]) -> dict[str, Any]:
        req_id = msg.get("id")
        if isinstance(req_id, bool) or not isinstance(req_id, int):
            return p.error(None, p.BAD_REQUEST, "request needs an integer 'id'")
        op = msg.get("op")
        if not isinstance(op, str):
            return p.error(req_id, p.BAD_REQUEST, "request needs a string 'op'")
        params = {k: v for k, v in msg.items() if k not in ("op", "id")}
        try:
            if op == "hello":
                return p.ok(req_id, self._hello(params))
            if self.client is None:
                return p.error(req_id, p.HELLO_REQUIRED, f"send 'hello' before {op!r}")
            handler = self.server.handlers.get(op)
            if handler is None:
                return p.error(req_id, p.UNKNOWN_OP, f"unknown op {op!r}")
            return p.ok(req_id, await handler(self, params))
        except p.RequestError as e:
            return p.error(req_id, e.code, e.message)
        except Exception:
            log.exception("op %r from client %s failed", op, self.client)
            return p.error(req_id, p.INTERNAL, f"op {op!r} failed inside edged; see its log")

    def _hello(self, params: dict[str, Any]) -> dict[str, Any]:
        version = p.param(params, "protocol", int)
        client = p.param(params, "client", str)
        if version != p.PROTOCOL_VERSION:
            raise p.RequestError(p.UNSUPPORTED_PROTOCOL,
                                 f"protocol {version} not supported; this server speaks {p.PROTOCOL_VERSION}")
        if self.client is None:
            log.info("client %r connected (%s)", client, self.peer)
        self.client = client
        return {"protocol": p.PROTOCOL_VERSION, "max_frame": self.server.max_frame, **self.server.hello_info()}


def _peer_credentials(writer: asyncio.StreamWriter) -> tuple[int, int, int]:
    sock = writer.get_extra_info("socket")
    try:
        return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except (OSError, AttributeError):
        return (-1, -1, -1)


class SocketBusy(Exception):
    """The socket path is taken: by a live edged, or by something that is not a socket."""


class Server:
    """Listens on a unix socket (mode 0660) and runs a Session per connection."""

    name = "socket"

    def __init__(self, path: str, handlers: dict[str, Handler],
                 hello_info: Callable[[], dict[str, Any]], max_frame: int = framing.DEFAULT_MAX_FRAME) -> None:
        self.path = Path(path)
        self.handlers = handlers
        self.hello_info = hello_info
        self.max_frame = max_frame
        self.sessions: set[Session] = set()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._inode = -1

    async def start(self) -> None:
        self._clear_stale_socket()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # With the usual umask the socket is not connectable by others until chmod.
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        os.chmod(self.path, 0o660)
        self._inode = self.path.stat().st_ino
        log.info("listening on %s", self.path)

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()
        try:
            if self.path.stat().st_ino == self._inode:  # never remove a socket someone else bound since
                self.path.unlink()
        except FileNotFoundError:
            pass

    def healthy(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def summary(self) -> str:
        n = len(self.sessions)
        return f"{n} client{'s' if n != 1 else ''}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(self, reader, writer)
        self.sessions.add(session)
        try:
            await session.run()
        except (ConnectionError, BrokenPipeError):
            pass  # the client went away; nothing to answer
        finally:
            for sub in list(session.tasks):
                sub.cancel()
            self.sessions.discard(session)
            self._tasks.discard(task)
            if session.client is not None:
                log.info("client %r disconnected (%s)", session.client, session.peer)
            writer.close()

    def _clear_stale_socket(self) -> None:
        """Remove a socket left by a crashed edged; refuse if one is still answering."""
        try:
            mode = self.path.lstat().st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise SocketBusy(f"{self.path} exists and is not a socket; not touching it")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(self.path))
        except OSError:
            self.path.unlink()  # nobody listens: left over from an unclean stop
            return
        finally:
            probe.close()
        raise SocketBusy(f"another edged is already listening on {self.path}")
