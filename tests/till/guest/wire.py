"""edged's socket protocol as docs/PROTOCOL.md states it (a 4-byte big-endian length, then one
msgpack map), for the guest's per-call scripts: importing edged.client pulls in asyncio, which
under TCG costs more than a second per call, and these scripts run hundreds of times a run."""
from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import msgpack

HEADER = struct.Struct(">I")


class Refused(Exception):
    """edged answered with an error: its code and message."""


class NotSent(ConnectionError):
    """The connection was gone before the request went out: edged never saw it (safe to send
    again on a new connection, whatever the request)."""


class Wire:
    def __init__(self, client: str, path: str = "/run/edged/edged.sock", timeout: float = 30) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.file = self.sock.makefile("rb")
        self.ids = 0
        self.request("hello", protocol=1, client=client)

    def _read(self) -> dict[str, Any]:
        header = self.file.read(HEADER.size)
        if len(header) < HEADER.size:
            raise ConnectionError("edged closed the connection")
        size = HEADER.unpack(header)[0]
        body = self.file.read(size)
        if len(body) < size:
            raise ConnectionError("edged closed the connection inside a frame")
        return msgpack.unpackb(body, raw=False)

    def request(self, op: str, **params: Any) -> dict[str, Any]:
        self.ids += 1
        body = msgpack.packb({"op": op, "id": self.ids, **params}, use_bin_type=True)
        try:
            self.sock.sendall(HEADER.pack(len(body)) + body)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise NotSent(f"{type(e).__name__}: {e}") from e
        while True:
            msg = self._read()
            if msg.get("id") is None and "error" in msg:  # bad_frame, frame_too_large: then edged closes
                raise Refused(f"{msg['error'].get('code')}: {msg['error'].get('message')}")
            if msg.get("id") != self.ids:  # an event, or an answer that came too late
                continue
            if msg.get("ok"):
                return msg.get("result", {})
            raise Refused(f"{msg['error'].get('code')}: {msg['error'].get('message')}")

    def events(self) -> Iterator[dict[str, Any]]:
        """Every event from now on (after a `watch`), until edged closes the connection."""
        self.sock.settimeout(None)
        while True:
            try:
                msg = self._read()
            except ConnectionError:
                return
            if "event" in msg:
                yield msg

    def close(self) -> None:
        self.sock.close()
