"""The real daemon as a process, and its clients under other uids (fork + setuid, as root).

A child process drops to a uid in the socket's group and runs a function;
its JSON result comes back through a pipe. With `hold=True` it then stays
alive, keeping its connections open, until the test releases it.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edged.client import BlockingClient, ClientError

SOCKET_GROUP, SOCKET_GID = "nogroup", 65534  # the tests' socket group
PRIVILEGED_USER, PRIVILEGED_UID = "daemon", 1  # listed in daemon.privileged_users
POS_UID, SYNC_UID = 4101, 4102  # ordinary members of the socket group
ATTACKER_UID = 4666

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client under another uid")
KEEP: list[Any] = []  # in a holding child: what must stay open (its connections)


class AsUser:
    def __init__(self, uid: int, fn: Callable[[], Any], *, hold: bool = False, gid: int = SOCKET_GID,
                 groups: tuple[int, ...] = (SOCKET_GID,)) -> None:
        r, w = os.pipe()
        release_r, release_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into pytest
            try:
                # Other children's release pipes too: a copy held here would keep them waiting.
                for fd in map(int, os.listdir("/proc/self/fd")):
                    if fd > 2 and fd not in (w, release_r):
                        try:
                            os.close(fd)
                        except OSError:
                            pass  # the listing's own fd, gone already
                try:
                    os.setgroups(list(groups))
                    os.setgid(gid)
                    os.setuid(uid)
                    out = {"ok": fn()}
                except BaseException as e:  # reported to the parent, which fails the test
                    out = {"error": f"{type(e).__name__}: {e}"}
                data = json.dumps(out).encode()
                while data:
                    data = data[os.write(w, data):]
                os.close(w)
                if hold:
                    os.read(release_r, 1)  # until the parent closes its end
            finally:
                os._exit(0)
        os.close(w)
        os.close(release_r)
        self.uid, self.pid, self._r, self._release = uid, pid, r, release_w
        self._result: Any = None
        self._read = False

    def result(self) -> Any:
        if not self._read:
            data = b""
            while chunk := os.read(self._r, 1 << 16):
                data += chunk
            os.close(self._r)
            self._read = True
            out = json.loads(data) if data else {"error": "the child wrote nothing"}
            if "error" in out:
                raise AssertionError(f"client under uid {self.uid}: {out['error']}")
            self._result = out["ok"]
        return self._result

    def release(self) -> None:
        os.close(self._release)
        os.waitpid(self.pid, 0)


def as_user(uid: int, fn: Callable[[], Any]) -> Any:
    """Run fn as uid in a child and return what it returned."""
    child = AsUser(uid, fn)
    try:
        return child.result()
    finally:
        child.release()


NOBODY = 65534  # nobody:nogroup on Debian


def answer(c: BlockingClient, op: str, **params: Any) -> dict[str, Any]:
    """The result, or {"error": code, "message": ...}: a refusal is an answer to report, not a failure."""
    try:
        return c.request(op, **params)
    except ClientError as e:
        return {"error": e.code, "message": e.message}


async def as_user_async(path: str, body: Callable[[BlockingClient], Any], uid: int = NOBODY,
                        gid: int = NOBODY, groups: tuple[int, ...] = ()) -> Any:
    """body(a client connected as uid) in a child, for a daemon running in this test's event loop:
    the loop keeps serving while the child talks to it."""
    def connected() -> Any:
        with BlockingClient.connect(path, f"uid-{uid}", timeout=20) as c:
            return body(c)

    child = AsUser(uid, connected, gid=gid, groups=groups)
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, child.result)
    finally:
        await loop.run_in_executor(None, child.release)


class Edged:
    """`edged run --simulate` with a config, its socket in the socket group, its log in a file."""

    def __init__(self, tmp: Path, daemon_table: str = "", more: str = "") -> None:
        os.chmod(tmp, 0o755)  # other uids reach the socket through it
        self.tmp = tmp
        self.sock = str(tmp / "edged.sock")
        self.cfg = tmp / "edged.toml"
        self.cfg.write_text(f"[daemon]\nsocket_group = \"{SOCKET_GROUP}\"\n"
                            f"privileged_users = [\"{PRIVILEGED_USER}\"]\n{daemon_table}\n{more}")
        self.log = tmp / "edged.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Edged:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--simulate", "--config",
                                          str(self.cfg), "--state-dir", str(self.tmp / "state"),
                                          "--socket", self.sock], stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(self.sock)
                return self
            except OSError:
                assert self.proc.poll() is None, f"edged did not start:\n{self.log.read_text()}"
                assert time.monotonic() < deadline, "edged did not start in 30 s"
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            assert self.proc.wait(30) == 0
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Edged:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        if exc[0] is None:
            self.stop()
        else:
            self.kill()
