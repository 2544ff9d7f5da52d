"""The simulated receipt printer and cash drawer, reachable on loopback TCP and a pty.

Like a real printer it answers DLE EOT at once from its state (also while
offline), holds printing commands while it cannot print (offline, cover open,
paper out, cutter error) and prints them on recovery, and opens its drawer
when kicked. It can be told to change state with `set_state`.
"""
from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tty
from collections.abc import Callable
from dataclasses import dataclass

from ..devices.printer import status as st
from .escpos_codec import Command, next_command
from .paper import Paper, Receipt

log = logging.getLogger("edged.sim.printer")


@dataclass
class EmulatorState:
    offline: bool = False
    cover_open: bool = False
    paper_near_end: bool = False
    paper_out: bool = False
    cutter_error: bool = False
    drawer_open: bool = False
    mute: bool = False  # answers nothing at all, like a printer with a broken return channel

    @property
    def printable(self) -> bool:
        return not (self.offline or self.cover_open or self.paper_out or self.cutter_error)


STATE_KEYS = tuple(f.name for f in dataclasses.fields(EmulatorState))


class _Stream:
    """Per-connection parse buffer (commands may be split across reads), and the way
    back to that connection for answers that come late (GS r after held data)."""

    def __init__(self, write: Callable[[bytes], None] | None = None) -> None:
        self.buf = bytearray()
        self.write = write or (lambda data: None)


class PrinterEmulator:
    name = "sim-printer"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, columns: int = 42, use_pty: bool = True,
                 on_receipt: Callable[[Receipt, str], None] | None = None, profile: str = "default") -> None:
        self.host, self.columns, self.use_pty = host, columns, use_pty
        self.port = port
        self.state = EmulatorState()
        self.receipts: list[Receipt] = []
        self.kicks: list[tuple[int, int]] = []  # (pin, on-time in ms)
        self.pty_path: str | None = None
        self._on_receipt = on_receipt
        self.tap: Callable[[bytes], None] | None = None  # sees every chunk as it arrives (benchmarks)
        self._paper = Paper(self._receipt_done, profile)
        self._held: list[tuple[Command, _Stream]] = []
        self.paper_left: int | None = None  # lines until the roll runs out; None: endless
        self._server: asyncio.Server | None = None
        self._pty: tuple[int, int] | None = None
        self._pty_stream = _Stream(self._write_pty)
        self._connections: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task] = set()

    # --- lifecycle ---

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve_tcp, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.use_pty:
            master, slave = os.openpty()
            tty.setraw(slave)  # no echo, no CR/LF translation: bytes pass untouched
            os.set_blocking(master, False)
            self._pty = (master, slave)  # keeping the slave open avoids EIO between clients
            self.pty_path = os.ttyname(slave)
            asyncio.get_running_loop().add_reader(master, self._read_pty)
        log.info("simulated printer on tcp %s:%d%s", self.host, self.port,
                 f" and pty {self.pty_path}" if self.pty_path else "")

    async def stop(self) -> None:
        if self._server:
            self._server.close()
            for writer in list(self._connections):  # a printer switched off drops its connections
                writer.close()
            await self._server.wait_closed()
            # Let each connection's handler see its end, or asyncio.run() would cancel them
            # at exit and log the cancellation as an error.
            if self._handlers:
                await asyncio.wait(self._handlers, timeout=2.0)
        if self._pty:
            asyncio.get_running_loop().remove_reader(self._pty[0])
            for fd in self._pty:
                os.close(fd)
            self._pty = None

    def healthy(self) -> bool:
        return self._server is not None and self._server.is_serving()

    def summary(self) -> str:
        return f"sim printer tcp {self.port}"

    # --- control ---

    def set_state(self, **changes: bool) -> EmulatorState:
        for key, value in changes.items():
            if key not in STATE_KEYS:
                raise ValueError(f"unknown printer state {key!r} (known: {', '.join(STATE_KEYS)})")
            setattr(self.state, key, bool(value))
        log.info("simulated printer state: %s", self.describe())
        self._release_held()
        return self.state

    def stall(self) -> None:
        """Take no more bytes on the pty, as a printer whose cable is being pulled (tests: the
        job must not finish between the moment a test sees it under way and its unplug)."""
        if self._pty:
            asyncio.get_running_loop().remove_reader(self._pty[0])

    def run_out_after(self, lines: int) -> None:
        """The roll ends after this many more printed lines (paper runs out mid-receipt)."""
        self.paper_left = lines

    def describe(self) -> str:
        on = [k for k in STATE_KEYS if getattr(self.state, k)]
        return ", ".join(on) if on else "ready"

    # --- the byte path ---

    def feed(self, stream: _Stream, data: bytes) -> bytes:
        """Consume bytes from one connection; return what the printer answers."""
        if self.tap:
            self.tap(data)
        stream.buf += data
        replies = bytearray()
        pos = 0
        while pos < len(stream.buf):
            found = next_command(stream.buf, pos)
            if found is None:
                break
            cmd, pos = found
            if cmd.realtime:
                replies += self._realtime(cmd)
            elif self.state.printable and not self._held:
                replies += self._print(cmd)
            else:
                self._held.append((cmd, stream))
        del stream.buf[:pos]
        return bytes(replies)

    def _realtime(self, cmd: Command) -> bytes:
        if cmd.name == "DLE EOT" and not self.state.mute and cmd.args[0] in st.QUERIES:
            s = self.state
            return st.encode(offline=s.offline, cover_open=s.cover_open, paper_near_end=s.paper_near_end,
                             paper_out=s.paper_out, cutter_error=s.cutter_error,
                             drawer_pin3=s.drawer_open)[cmd.args[0]]
        if cmd.name == "DLE DC4" and cmd.args[0] == 1:  # real-time drawer pulse
            self._kick(cmd.args[1], cmd.args[2] * 100)
        return b""

    def _print(self, cmd: Command) -> bytes:
        """Execute one queued command; GS r answers only now, after what came before it."""
        if cmd.name == "ESC p":
            self._kick(cmd.args[0], cmd.args[1] * 2)
        elif cmd.name == "GS r":
            if cmd.args[0] in (1, 49) and not self.state.mute:
                return st.confirmation(paper_near_end=self.state.paper_near_end)
        else:
            self._paper.execute(cmd)
            self._paper.after(cmd)
            if cmd.name == "LF" and self.paper_left is not None:
                self.paper_left -= 1
                if self.paper_left <= 0:
                    self.paper_left = None
                    self.state.paper_out = True
                    log.info("simulated printer: the paper roll ran out")
        return b""

    def _release_held(self) -> None:
        while self._held and self.state.printable:
            cmd, stream = self._held.pop(0)
            reply = self._print(cmd)
            if reply:
                stream.write(reply)

    def _kick(self, pin: int, on_ms: int) -> None:
        pin = 5 if pin in (1, 49) else 2
        self.kicks.append((pin, on_ms))
        self.state.drawer_open = True  # the drawer springs open; someone closes it by hand
        log.info("simulated drawer kicked (pin %d, %d ms): open", pin, on_ms)

    def _receipt_done(self, receipt: Receipt) -> None:
        self.receipts.append(receipt)
        text = receipt.text(self.columns)
        log.info("simulated printer printed receipt %d (%d lines)", len(self.receipts), len(receipt.lines))
        if self._on_receipt:
            self._on_receipt(receipt, text)

    # --- transports ---

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def answer(reply: bytes) -> None:
            if not writer.is_closing():
                writer.write(reply)
        stream = _Stream(answer)
        self._connections.add(writer)
        handler = asyncio.current_task()
        if handler:
            self._handlers.add(handler)
            handler.add_done_callback(self._handlers.discard)
        try:
            while data := await reader.read(65536):
                reply = self.feed(stream, data)
                if reply:
                    writer.write(reply)
                    await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._connections.discard(writer)
            writer.close()

    def _read_pty(self) -> None:
        assert self._pty is not None
        try:
            data = os.read(self._pty[0], 65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:  # EIO: no writer on the other side right now
            log.debug("pty read: %s", e)
            return
        self._write_pty(self.feed(self._pty_stream, data))

    def _write_pty(self, reply: bytes) -> None:
        if reply and self._pty:
            os.write(self._pty[0], reply)
