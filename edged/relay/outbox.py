"""A connection's bounded send queue and the task that writes it out.

Everything a connection is sent goes through its Outbox, in order. Responses
and journal records wait for room (`put`): a client that stops reading stops
being read, and a subscriber is held, without holding anybody else. Device
events never wait (`offer`): a watcher whose queue is full is dropped, so one
stuck client can neither slow the daemon down nor grow its memory.
"""
from __future__ import annotations

import asyncio
import collections

CHUNK = 256 << 10  # frames are joined into writes of up to this many bytes


class OutboxClosed(ConnectionError):
    """The connection is gone; nothing more can be sent."""


class Outbox:
    def __init__(self, writer: asyncio.StreamWriter, max_frames: int, max_bytes: int) -> None:
        self.writer = writer
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.bytes = 0
        self.sent = 0
        self.count = 0  # messages queued (an entry may hold several)
        self._frames: collections.deque[tuple[bytes, int]] = collections.deque()
        self._data = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self.closed = False

    @property
    def depth(self) -> int:
        return self.count

    def full(self) -> bool:
        # An empty queue always takes one entry, however large (max_frame bounds it).
        return bool(self._frames) and (self.count >= self.max_frames or self.bytes >= self.max_bytes)

    def offer(self, frame: bytes) -> bool:
        """Queue without waiting; False when full (the caller drops the client)."""
        if self.closed or self.full():
            return False
        self._append(frame)
        return True

    async def put(self, frames: bytes, count: int = 1) -> None:
        """Queue `count` messages (encoded back to back), waiting for room first."""
        while self.full() and not self.closed:
            self._room.clear()
            await self._room.wait()
        if self.closed:
            raise OutboxClosed("connection closed")
        self._append(frames, count)

    def _append(self, frames: bytes, count: int = 1) -> None:
        transport = self.writer.transport
        if (not self._frames and len(frames) <= transport.get_write_buffer_limits()[1]
                and not transport.is_closing() and not transport.get_write_buffer_size()):
            # Nothing queued and the socket took everything so far: write now, in order, instead of
            # a loop turn later in the writer task. Once the socket holds bytes back, frames queue
            # (and the queue's bounds apply) until the writer task has drained them. Only up to the
            # transport's high-water mark (64 KiB): a larger message the socket could not take would
            # sit in the transport's buffer uncounted by the queue's bounds.
            self.writer.write(frames)
            self.sent += count
            return
        self._frames.append((frames, count))
        self.bytes += len(frames)
        self.count += count
        self._data.set()

    def close(self) -> None:
        self.closed = True
        self._room.set()  # wake waiting putters so they see it
        self._data.set()

    async def run(self) -> None:
        """The writer task: drain the queue into the socket until it is closed and empty."""
        try:
            while True:
                while not self._frames:
                    if self.closed:
                        return
                    self._data.clear()
                    await self._data.wait()
                parts, size, count = [], 0, 0
                while self._frames and size < CHUNK:
                    frames, n = self._frames.popleft()
                    parts.append(frames)
                    size += len(frames)
                    count += n
                self.bytes -= size
                self.count -= count
                self.sent += count
                self._room.set()
                self.writer.write(b"".join(parts) if len(parts) > 1 else parts[0])
                await self.writer.drain()
        finally:
            self.close()
