"""relay/outbox.py against a real unix socket whose reader never reads: what the daemon holds for
such a client stays within the queue's bounds, whether a message went straight to the socket or
through the writer task, and messages arrive in the order they were sent."""
from __future__ import annotations

import asyncio
import socket

from edged.relay.outbox import CHUNK, Outbox

MAX_BYTES = 1 << 20


async def _pair(rcvbuf: int) -> tuple[Outbox, asyncio.Task, socket.socket, asyncio.StreamWriter]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    _, writer = await asyncio.open_unix_connection(sock=ours)
    outbox = Outbox(writer, max_frames=1000, max_bytes=MAX_BYTES)
    return outbox, asyncio.create_task(outbox.run()), theirs, writer


def test_a_client_that_never_reads_holds_no_more_than_the_bounds():
    async def main() -> tuple[int, int]:
        outbox, task, theirs, writer = await _pair(4096)
        high = writer.transport.get_write_buffer_limits()[1]
        worst = 0
        # Large messages back to back first: once the socket is full, a direct write of one would
        # sit in the transport's buffer beside the writer task's (9 MiB here before the check).
        sizes = [3 << 20] * 6 + [100, 60 << 10, 200 << 10, 100, 3 << 20, 100] * 4
        for size in sizes:
            try:
                await asyncio.wait_for(outbox.put(b"x" * size), 0.05)
            except TimeoutError:
                pass  # held back: the client does not read
            await asyncio.sleep(0)
            worst = max(worst, writer.transport.get_write_buffer_size() + outbox.bytes)
        outbox.close()
        task.cancel()
        writer.transport.abort()
        theirs.close()
        return worst, high
    worst, high = asyncio.run(main())
    # The queue: up to its bytes bound plus one entry of any size (max_frame bounds that). The
    # transport: one write of the writer task (a chunk, or one larger entry) and at most one direct
    # write, which is never above the high-water mark.
    largest = 3 << 20
    assert worst <= MAX_BYTES + largest + max(CHUNK, largest) + high, worst


def test_order_is_kept_between_direct_writes_and_queued_ones():
    async def main() -> bytes:
        outbox, task, theirs, writer = await _pair(1 << 16)
        theirs.setblocking(False)
        loop = asyncio.get_running_loop()
        messages = [bytes([65 + i % 26]) * (1 + (i * 7919) % 150_000) for i in range(60)]
        got = bytearray()

        async def read_all() -> None:
            want = sum(map(len, messages))
            while len(got) < want:
                got.extend(await loop.sock_recv(theirs, 1 << 16))
        reader = asyncio.create_task(read_all())
        for m in messages:
            await outbox.put(m)
        await asyncio.wait_for(reader, 30)
        outbox.close()
        await task
        writer.close()
        theirs.close()
        return bytes(got), b"".join(messages)
    got, sent = asyncio.run(main())
    assert got == sent
