"""The unix-socket server: one session per connection, requests answered in order.

A bad frame is answered and closes its own connection only; a failing op
handler answers `internal` and the session goes on. Ops not registered
answer `unknown_op`; each registered one is checked for the caller's access
level and its parameters (registry.py) before its handler runs.

Connections are admitted per uid: one uid holds at most
`max_connections_per_uid` (root and edged's own user excepted), and the last
`reserved_connections` slots are kept for root, edged's user and the
privileged users and groups, so no one uid can lock the others out.
"""
from __future__ import annotations

import asyncio
import collections
import grp
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import framing
from . import protocol as p
from .access import Access, Peer, peer_of
from .registry import Level, Registry, needs, op
from .session import Session
from .watch import Watchers

log = logging.getLogger("edged.relay")


async def _linger(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Before closing on a client that may still be sending: closing with its bytes unread
    would reset the connection before it reads our last answer. So: end our side, then
    read and drop what it sends, for a moment at most."""
    try:
        writer.write_eof()
        async with asyncio.timeout(1.0):
            while await reader.read(1 << 16):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass


class SocketBusy(Exception):
    """The socket path is taken: by a live edged, or by something that is not a socket."""


class Server:
    """Listens on a unix socket (mode 0660) and runs a Session per connection."""

    name = "socket"

    def __init__(self, path: str, ops: Registry, hello_info: Callable[[], dict[str, Any]], *,
                 max_frame: int = framing.DEFAULT_MAX_FRAME, max_connections: int = 64, send_queue: int = 1000,
                 max_connections_per_uid: int | None = None, reserved_connections: int = 0,
                 client_timeout: float = 10.0, access: Access | None = None, group: str = "",
                 activated: socket.socket | None = None) -> None:
        # A socket from systemd (edged.socket) is used as it is: its path, owner and mode are
        # the socket unit's, and it outlives this process.
        self.activated = activated
        self.path = Path(activated.getsockname() if activated is not None else path)
        self.watchers = Watchers()
        self.ops = Registry.of(self, self.watchers).merge(ops)  # a name declared twice raises here
        self.hello_info = hello_info
        self.max_frame = max_frame
        self.max_connections = max_connections
        self.max_per_uid = max_connections if max_connections_per_uid is None else max_connections_per_uid
        self.reserved = reserved_connections
        self.send_queue = send_queue
        self.client_timeout = client_timeout
        self.access = access or Access()
        self.access.levels = self.ops.levels()
        self.group = group
        self.sessions: set[Session] = set()
        self.per_uid: collections.Counter[int] = collections.Counter()  # connections held, by peer uid
        self.refused_busy = 0
        self._lingering = 0  # refused connections still being answered
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task] = set()
        self._inode = -1

    async def start(self) -> None:
        if self.activated is not None:
            self._server = await asyncio.start_unix_server(self._serve, sock=self.activated)
            log.info("listening on %s (from systemd's edged.socket; privileged: %s)", self.path,
                     self.access.describe())
            return
        self._clear_stale_socket()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # With the usual umask the socket is not connectable by others until chmod.
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path),
                                                       backlog=min(self.max_connections * 2, 4096))
        if self.group:
            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
        os.chmod(self.path, 0o660)
        self._inode = self.path.stat().st_ino
        log.info("listening on %s (group %s, mode 0660; privileged: %s)", self.path,
                 self.group or "the daemon's", self.access.describe())

    async def stop(self) -> None:
        if self._server:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server:
            await self._server.wait_closed()
        if self.activated is not None:
            return  # systemd's socket: it stays for the next edged
        try:
            if self.path.stat().st_ino == self._inode:  # never remove a socket someone else bound since
                self.path.unlink()
        except FileNotFoundError:
            pass

    def healthy(self) -> bool:
        return self._server is not None and self._server.is_serving()

    @op("hello", Level.ANY, protocol=needs(int), client=needs(str))
    async def op_hello(self, session: Session, params: dict[str, Any]) -> dict[str, Any]:
        return session.hello(params)

    async def answer(self, session: Session, msg: dict[str, Any]) -> dict[str, Any]:
        """The answer to one request of a session: checks in order (hello, known op, access level,
        parameters), then the op's handler."""
        req_id = msg.get("id")
        if isinstance(req_id, bool) or not isinstance(req_id, int):
            return p.error(None, p.BAD_REQUEST, "request needs an integer 'id'")
        op = msg.get("op")
        if not isinstance(op, str):
            return p.error(req_id, p.BAD_REQUEST, "request needs a string 'op'")
        params = {k: v for k, v in msg.items() if k not in ("op", "id")}
        try:
            if session.client is None and op != "hello":
                return p.error(req_id, p.HELLO_REQUIRED, f"send 'hello' before {p.shown(op)}")
            entry = self.ops.get(op)
            if entry is None:
                return p.error(req_id, p.UNKNOWN_OP, f"unknown op {p.shown(op)}")
            if not self.access.allows(session.peer, entry.spec.level):
                log.warning("refused %r to client %r (%s): not allowed at level %s",
                            op, session.client, session.peer, entry.spec.level)
                return p.error(req_id, p.NOT_PERMITTED, self.access.refusal(op, entry.spec.level))
            entry.spec.check(params)
            return p.ok(req_id, await entry.handler(session, params))
        except p.RequestError as e:
            return p.error(req_id, e.code, e.message)
        except Exception:
            log.exception("op %r from client %r failed", op, session.client)
            return p.error(req_id, p.INTERNAL, f"op {p.shown(op)} failed inside edged; see its log")

    def summary(self) -> str:
        n = len(self.sessions)
        return f"{n} client{'s' if n != 1 else ''}"

    def publish(self, event: dict[str, Any]) -> int:
        return self.watchers.publish(event)

    def info(self) -> dict[str, Any]:
        return {"connections": [s.describe() for s in self.sessions], "max_connections": self.max_connections,
                "max_connections_per_uid": self.max_per_uid, "reserved_connections": self.reserved,
                "refused_busy": self.refused_busy, "dropped_watchers": self.watchers.dropped,
                "events_published": self.watchers.published}

    def _refusal(self, peer: Peer) -> str | None:
        """Why this peer may not have a connection now (busy), or None."""
        trusted = peer.uid in self.access.daemon_uids  # could stop edged anyway: no per-uid limit
        if not trusted and self.per_uid[peer.uid] >= self.max_per_uid:
            return (f"uid {peer.uid} already holds {self.per_uid[peer.uid]} connections "
                    f"(daemon.max_connections_per_uid); close one or try again later")
        if len(self.sessions) >= self.max_connections:
            return f"edged serves at most {self.max_connections} clients at once; try again later"
        if len(self.sessions) >= self.max_connections - self.reserved and not self.access.privileged(peer):
            return (f"edged serves at most {self.max_connections - self.reserved} clients at once besides "
                    f"root and the privileged users (daemon.reserved_connections); try again later")
        return None

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer,
                      why: str) -> None:
        self.refused_busy += 1
        log.warning("connection refused (%s): %s", peer, why)
        writer.write(framing.encode(p.error(None, p.BUSY, why)))
        # A client hammering the socket gets its answer without the linger once many are
        # lingering: each holds a file descriptor for up to a second.
        if self._lingering < self.max_connections:
            self._lingering += 1
            try:
                await _linger(reader, writer)
            finally:
                self._lingering -= 1
        writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = peer_of(writer.get_extra_info("socket"))
        why = self._refusal(peer)
        if why is not None:
            return await self._refuse(reader, writer, peer, why)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(self, reader, writer, peer)
        self.sessions.add(session)
        self.per_uid[peer.uid] += 1
        sender = asyncio.create_task(session.outbox.run(), name="socket-writer")
        try:
            await session.run()
        except (ConnectionError, BrokenPipeError):
            pass  # the client went away; nothing to answer
        except asyncio.CancelledError:
            pass  # the server stops; end this connection quietly (asyncio logs cancelled handlers)
        finally:
            for sub in list(session.tasks):
                sub.cancel()
            self.sessions.discard(session)
            self.per_uid[peer.uid] -= 1
            if not self.per_uid[peer.uid]:
                del self.per_uid[peer.uid]
            self.watchers.forget(session)
            self._tasks.discard(task)
            session.outbox.close()
            try:  # what is queued (a last error, say) gets a moment to go out
                await asyncio.wait_for(sender, 1.0)
                if session.refused_frame:
                    await _linger(reader, writer)
            except (TimeoutError, ConnectionError):
                pass
            except asyncio.CancelledError:
                sender.cancel()
                raise
            finally:
                writer.close()
            if session.client is not None:
                log.info("client %r disconnected (%s)%s", session.client, session.peer,
                         " after being dropped" if session.dropped else "")

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
