"""Printer I/O with deadlines: devices that flood, echo, garble or never read, on real fds (loopback
TCP, ptys), against the real daemon. Status says what is wrong, every op still answers, SIGTERM
stops edged (the waits below are hang guards, not speed assertions), and no such device gets a
job `done`."""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import tty
from collections.abc import Callable
from pathlib import Path

import pytest

from edged.client import Client
from edged.daemon import Daemon
from edged.sim.printer import PrinterEmulator
from printing import daemon_config, receipt_doc, until

STOP_WITHIN = 30.0  # edged.service's TimeoutStopSec: a hang guard only


def _flood(_: bytes) -> bytes:
    return b""


def _echo(data: bytes) -> bytes:
    return data


def _garble(data: bytes) -> bytes:
    """Answers every status query with a byte no printer sends, and confirms every job."""
    return b"\x7f" * data.count(b"\x10\x04") + b"\x00" * data.count(b"\x1dr\x01")


BEHAVIOURS: dict[str, Callable[[bytes], bytes]] = {"flood": _flood, "echo": _echo, "garble": _garble}


class Device:
    """A misbehaving printer in a thread of the test: on loopback TCP (port 0) or a pty.
    `flood` sends without pause; the others answer what they read; `deaf` never reads."""

    def __init__(self, behaviour: str, use_pty: bool) -> None:
        self.behaviour = behaviour
        self.use_pty = use_pty
        self.stopping = False
        self.received = 0
        self._threads: list[threading.Thread] = []
        self._fds: list[int] = []
        if use_pty:
            master, slave = os.openpty()
            tty.setraw(slave)
            self._fds = [master, slave]  # the slave stays open: no EIO while edged reconnects
            self.path = os.ttyname(slave)
            self._start(self._serve, master)
        else:
            self._listener = socket.create_server(("127.0.0.1", 0))
            self.port = self._listener.getsockname()[1]
            self._start(self._accept)

    def printer(self, **over) -> dict:
        table = {"status_interval": 0.2, "timeout": 0.5, "confirm_timeout": 3.0} | over
        if self.use_pty:
            return table | {"backend": "serial", "device": self.path}
        return table | {"backend": "network", "host": "127.0.0.1", "port": self.port}

    def _start(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self.stopping:
            if select.select([self._listener], [], [], 0.1)[0]:
                conn, _ = self._listener.accept()
                self._start(self._serve, conn.detach())

    def _serve(self, fd: int) -> None:
        os.set_blocking(fd, False)
        answer = BEHAVIOURS.get(self.behaviour)
        out = b""
        try:
            while not self.stopping:
                want_write = self.behaviour == "flood" or out
                readable, writable, _ = select.select([] if self.behaviour == "deaf" else [fd],
                                                      [fd] if want_write else [], [], 0.1)
                if readable:
                    data = os.read(fd, 65536)
                    if not data and not self.use_pty:
                        return  # edged closed the connection (it re-opens a flooding one)
                    self.received += len(data)
                    out += answer(data) if answer else b""
                if writable:
                    if self.behaviour == "flood":
                        os.write(fd, b"\x12\x00\x7f" * 1365)  # status-like, confirmation-like, garbage
                    else:
                        out = out[os.write(fd, out):]
        except OSError:
            return
        finally:
            if not self.use_pty:
                os.close(fd)

    def unread(self) -> int:
        """Bytes edged wrote to the pty that the device has not read (a deaf one: all)."""
        return struct.unpack("i", fcntl.ioctl(self._fds[0], termios.FIONREAD, b"\0\0\0\0"))[0]

    def close(self) -> None:
        self.stopping = True
        for thread in self._threads:
            thread.join(5)
        if not self.use_pty:
            self._listener.close()
        for fd in self._fds:
            os.close(fd)


def _start_edged(short_dir: Path, printer: dict) -> subprocess.Popen:
    lines = ['till_id = "t1"', "[printers.receipt]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in printer.items()]
    (short_dir / "edged.toml").write_text("\n".join(lines) + "\n")
    return subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", str(short_dir / "edged.toml"),
                             "--state-dir", str(short_dir / "state"), "--socket", str(short_dir / "s.sock")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


async def _connect(short_dir: Path) -> Client:
    for _ in range(1000):
        try:
            return await Client.connect(str(short_dir / "s.sock"), "pos")
        except OSError:
            await asyncio.sleep(0.02)
    raise AssertionError("edged did not come up")


def _stop(proc: subprocess.Popen) -> str:
    """SIGTERM; edged must exit cleanly (within TimeoutStopSec, as a hang guard)."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(STOP_WITHIN)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"edged did not stop within {STOP_WITHIN:g} s of SIGTERM") from None
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 0, err
    return err


@pytest.mark.parametrize("use_pty", [False, True], ids=["tcp", "pty"])
def test_a_flooding_printer_is_an_error_edged_still_serves_and_stops(short_dir, use_pty):
    device = Device("flood", use_pty)
    proc = _start_edged(short_dir, device.printer())

    async def scenario():
        async with await _connect(short_dir) as c:
            async def printer():
                return (await c.request("status"))["devices"]["receipt"]
            for _ in range(500):
                if (await printer())["reasons"] == ["flooding"]:
                    break
                await asyncio.sleep(0.02)
            shown = await printer()
            assert shown["state"] == "error" and shown["reasons"] == ["flooding"], shown
            assert "sends bytes nobody asked for" in shown["detail"]
            refreshed = await c.request("status", refresh=True)  # answers, and still says why
            assert refreshed["devices"]["receipt"]["reasons"] == ["flooding"]
            answer = await c.request("append", records=[{"kind": "sale", "body": {"total": 1}}])
            assert answer["records"][0]["seq"] >= 1
            await c.request("print", job_id="f-1", document=receipt_doc("f-1"))
            for _ in range(500):
                job = await c.request("job", job_id="f-1")
                if job["state"] == "held":
                    break
                await asyncio.sleep(0.02)
            assert job["state"] == "held" and "flooding" in job["reason"], job
            assert (await c.request("jobs"))["counts"] == {"held": 1}
    try:
        asyncio.run(scenario())
        err = _stop(proc)
        assert "edged stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
        device.close()


@pytest.mark.parametrize("behaviour,use_pty", [("echo", False), ("echo", True), ("garble", False)],
                         ids=["echo-tcp", "echo-pty", "garble-tcp"])
def test_an_echoing_or_garbling_device_never_gets_a_job_done(short_dir, behaviour, use_pty):
    device = Device(behaviour, use_pty)

    async def scenario():
        cfg = daemon_config(short_dir, device.printer())
        async with Daemon(cfg).parts() as daemon:
            async with await Client.connect(cfg.daemon.socket, "pos") as c:
                shown = (await c.request("status", refresh=True))["devices"]["receipt"]
                assert shown["state"] == "unknown" and shown["reasons"] == ["malformed_reply"], shown
                await c.request("print", job_id="doc", document=receipt_doc("doc"))
                # bytes an echo sends back first that look like a confirmation, then status replies
                await c.request("print", job_id="raw", raw=b"\x00\x12\x12\x12\x12\x12\x12\x12\x12hi\n")
                for job_id in ("doc", "raw"):
                    for _ in range(500):
                        job = await c.request("job", job_id=job_id)
                        if job["state"] not in ("queued", "printing"):
                            break
                        await asyncio.sleep(0.02)
                    assert job["state"] == "unknown", job
                    assert "replies are not well-formed" in job["error"], job
                states = [r.body["state"] for r in await daemon.till.journal.scan(1, ("print.state",))]
                assert "done" not in states
                assert device.received > 0
    try:
        asyncio.run(scenario())
    finally:
        device.close()


def test_sigterm_stops_edged_while_a_job_waits_or_a_write_is_stuck(short_dir):
    """A job waiting for a confirmation that never comes (a mute printer), and a job stuck in its
    write to a serial port nobody reads (a printer holding BUSY): SIGTERM stops edged either way."""
    async def mute_printer():
        emu = PrinterEmulator(use_pty=False)
        await emu.start()
        proc = _start_edged(short_dir, {"host": "127.0.0.1", "port": emu.port, "status_interval": 0.2,
                                        "timeout": 0.5, "confirm_timeout": 600})
        try:
            async with await _connect(short_dir) as c:
                emu.set_state(mute=True)
                await c.request("print", job_id="m-1", document=receipt_doc("m-1"))
                await until(lambda: len(emu.receipts) == 1, what="m-1 on paper")
                assert (await c.request("job", job_id="m-1"))["state"] == "printing"
            await asyncio.get_running_loop().run_in_executor(None, _stop, proc)
        finally:
            if proc.poll() is None:
                proc.kill()
            await emu.stop()
    asyncio.run(mute_printer())

    deaf = Device("deaf", use_pty=True)
    (short_dir / "2").mkdir()
    proc = _start_edged(short_dir / "2", deaf.printer(confirm_timeout=600))

    async def stuck_write():
        async with await _connect(short_dir / "2") as c:
            await c.request("print", job_id="big", raw=b"x" * 40 + b"\n" * 300_000)
            await until(lambda: deaf.unread() > 1000, what="the job's write under way")
            await asyncio.sleep(0.5)  # the port's buffer full: the write waits for room
            assert (await c.request("job", job_id="big"))["state"] == "printing"
    try:
        asyncio.run(stuck_write())
        _stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
        deaf.close()
