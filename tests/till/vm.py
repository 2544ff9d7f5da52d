"""A Debian 12 guest under QEMU (TCG: this machine kind has no usable KVM), with a USB controller
the tests plug devices into, and the two channels that drive it: QMP (the machine: plug, unplug,
keys, power) and the guest agent (commands in the guest, their output and exit code).

Nothing of it outlives a test run: `stop()` asks the guest to power off, then QEMU to quit, then
kills QEMU by the PID it started, whatever state the run ended in.
"""
from __future__ import annotations

import base64
import ctypes
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from image import Image


def _die_with_parent() -> None:
    """In the child before exec: the kernel kills QEMU when the test run dies, however it dies
    (SIGKILL and CI timeouts included), so no guest is ever left running."""
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class GuestError(RuntimeError):
    """A guest command failed: its exit code and output are in the message."""


@dataclass
class Result:
    rc: int
    out: str
    err: str


class _JsonChannel:
    """Newline-delimited JSON over a unix socket (QMP and the guest agent speak it)."""

    def __init__(self, path: Path, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock = socket.socket(socket.AF_UNIX)
                self.sock.connect(str(path))
                break
            except OSError:
                self.sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._buf = b""

    def send(self, msg: dict, timeout: float = 30) -> None:
        # Its own timeout: recv() leaves whatever was left of its wait, down to nothing.
        self.sock.settimeout(timeout)
        self.sock.sendall(json.dumps(msg).encode() + b"\n")

    def recv(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                raise ConnectionError("QEMU closed the channel")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line.lstrip(b"\xff"))
        except ValueError:  # the agent's resync byte or a torn line after a restart
            return {}

    def close(self) -> None:
        self.sock.close()


class VM:
    def __init__(self, img: Image, run: Path, share: Path, log: Callable[[str], None], keep: bool = False) -> None:
        self.img, self.run, self.share, self.log = img, run, share, log
        self.keep = keep  # outlive this process (a developer's loop); otherwise die with it
        self.proc: subprocess.Popen | None = None
        self.events: list[dict] = []
        self._qmp: _JsonChannel | None = None
        self._qga: _JsonChannel | None = None
        self._ids = 0
        self.spent = [0, 0.0]  # guest commands run and their wall time, for the per-test log

    # --- the machine -------------------------------------------------------------------------
    def boot(self, timeout: float = 240) -> None:
        self.run.mkdir(parents=True, exist_ok=True)
        for old in ("qmp.sock", "qga.sock"):
            (self.run / old).unlink(missing_ok=True)
        # -cpu qemu64, not max: the guest does the same work in ~20 % less emulated time (the
        # boot until edged is active 28-30 s against 33-35 s, `python3 -c pass` 0.22 s against
        # 0.33 s, a Python loop 1.9-2.6 s against 2.5-3.4 s, three runs each on this machine
        # kind). Not traced further; max offers AVX code paths and a larger XSAVE state, which
        # TCG emulates, where qemu64 offers only x86-64's baseline, all Debian 12 needs.
        # usb_storage.delay_use=0: the driver waits a second (its default) after every stick is
        # plugged before it looks for the disk, for real sticks slow to settle; QEMU's answer at
        # once, and the suite plugs about fifteen. What edged sees afterwards is the same.
        cmd = [
            "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,tb-size=256", "-cpu", "qemu64",
            "-m", "1024", "-smp", "2", "-kernel", str(self.img.kernel), "-initrd", str(self.img.initrd),
            "-append", "root=/dev/vda rw console=ttyS0 quiet loglevel=4 systemd.show_status=0 mitigations=off "
                       "usb_storage.delay_use=0",
            # snapshot=on: writes go to a temporary overlay, the cached image stays pristine.
            "-drive", f"file={self.img.disk},if=virtio,format=raw,snapshot=on",
            # A VGA console exists so tty1 is real (a scan must not reach it) and so one keyboard
            # can be bound to it for aimed key events (VM-USB.md).
            "-display", "none", "-vga", "none", "-device", "VGA,id=vga0",
            "-nic", "none", "-no-reboot", "-serial", f"file:{self.run / 'serial.log'}",
            "-qmp", f"unix:{self.run / 'qmp.sock'},server=on,wait=off",
            "-chardev", f"socket,id=qga0,path={self.run / 'qga.sock'},server=on,wait=off",
            "-device", "virtio-serial-pci", "-device", "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0",
            "-virtfs", f"local,path={self.share},mount_tag=hostshare,security_model=none,id=hs0",
            "-device", "qemu-xhci,id=xhci",
        ]
        self._kill_leftover()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=open(self.run / "qemu.log", "w"), start_new_session=True,
                                     preexec_fn=None if self.keep else _die_with_parent)
        (self.run / "qemu.pid").write_text(f"{self.proc.pid}\n")
        self._qmp = _JsonChannel(self.run / "qmp.sock", 30)
        self._qmp.recv(30)  # the greeting
        self.qmp("qmp_capabilities")
        self._qga = _JsonChannel(self.run / "qga.sock", 30)
        self._agent_sync(timeout, t0)
        self.log(f"vm: guest agent answers {time.monotonic() - t0:.1f} s after start")
        state = self.sh("systemctl is-system-running --wait", check=False, timeout=120).out.strip()
        self.log(f"vm: system {state} {time.monotonic() - t0:.1f} s after start")

    def _kill_leftover(self) -> None:
        """A QEMU an earlier run left on this run directory (killed test run, kept guest): gone."""
        try:
            pid = int((self.run / "qemu.pid").read_text())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"qemu-system" in cmdline and str(self.run).encode() in cmdline:
            os.kill(pid, signal.SIGKILL)
            self.log(f"vm: killed QEMU pid {pid} left running by an earlier run")

    def attach(self) -> bool:
        """Use a guest left running by an earlier run with EDGED_TILL_KEEP=1 (a developer's loop:
        no boot, no install); False when there is none."""
        try:
            pid = int((self.run / "qemu.pid").read_text())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return False
        self._qmp = _JsonChannel(self.run / "qmp.sock", 5)
        self._qmp.recv(5)
        self.qmp("qmp_capabilities")
        self._qga = _JsonChannel(self.run / "qga.sock", 5)
        self._agent_sync(30, time.monotonic())
        self.log(f"vm: attached to the running guest (QEMU pid {pid})")
        return True

    def detach(self) -> None:
        for ch in (self._qmp, self._qga):
            if ch is not None:
                ch.close()

    def _agent_sync(self, timeout: float, t0: float) -> None:
        assert self._qga is not None
        while time.monotonic() - t0 < timeout:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"QEMU exited {self.proc.returncode}: {self._tail('qemu.log')}")
            token = int(time.monotonic() * 1000) % 2**31
            try:
                self._qga.send({"execute": "guest-sync", "arguments": {"id": token}}, timeout=2)
            except TimeoutError:  # the agent is not up yet and QEMU holds what was sent: try again
                time.sleep(1)
                continue
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                reply = self._qga.recv(deadline - time.monotonic())
                if reply and reply.get("return") == token:
                    return
        raise RuntimeError(f"the guest agent did not answer within {timeout:.0f} s; serial console: "
                           f"{self._tail('serial.log')}")

    def _tail(self, name: str, lines: int = 15) -> str:
        try:
            return "\n".join((self.run / name).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(none)"

    def stop(self) -> None:
        """Power off; whatever the guest does, QEMU is gone when this returns."""
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None and self._qmp is not None:
                self.qmp("system_powerdown")
                self.proc.wait(timeout=30)
        except Exception as e:  # a wedged guest or a closed channel: fall through to quit, then kill
            self.log(f"vm: powerdown: {e}")
        try:
            if self.proc.poll() is None and self._qmp is not None:
                self.qmp("quit")
                self.proc.wait(timeout=10)
        except Exception as e:
            self.log(f"vm: quit: {e}")
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for ch in (self._qmp, self._qga):
            if ch is not None:
                ch.close()
        self.log(f"vm: stopped (QEMU pid {self.proc.pid} exited {self.proc.returncode})")
        self.proc = None

    # --- QMP -----------------------------------------------------------------------------------
    def qmp(self, command: str, timeout: float = 30, **arguments) -> object:
        assert self._qmp is not None
        self._ids += 1
        msg: dict = {"execute": command, "id": self._ids}
        if arguments:
            msg["arguments"] = arguments
        self._qmp.send(msg)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._qmp.recv(deadline - time.monotonic())
            if reply is None:
                break
            if "event" in reply:
                self.events.append(reply)
            elif reply.get("id") == self._ids:
                if "error" in reply:
                    raise RuntimeError(f"QMP {command}: {reply['error'].get('desc')}")
                return reply.get("return")
        raise TimeoutError(f"QMP {command}: no answer in {timeout} s")

    def wait_event(self, name: str, match: Callable[[dict], bool] = lambda d: True, timeout: float = 30) -> dict:
        """The first QMP event NAME whose data matches (already seen ones included, then consumed)."""
        assert self._qmp is not None
        deadline = time.monotonic() + timeout
        while True:
            for i, ev in enumerate(self.events):
                if ev.get("event") == name and match(ev.get("data", {})):
                    return self.events.pop(i)
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no QMP event {name} in {timeout} s")
            reply = self._qmp.recv(left)
            if reply and "event" in reply:
                self.events.append(reply)

    def hmp(self, line: str) -> str:
        return str(self.qmp("human-monitor-command", **{"command-line": line}))

    def unplug(self, dev_id: str, timeout: float = 30) -> None:
        """device_del: a surprise removal, like a cable pulled; returns once QEMU has let go."""
        self.qmp("device_del", id=dev_id)
        self.wait_event("DEVICE_DELETED", lambda d: d.get("device") == dev_id, timeout)

    # --- the guest agent -----------------------------------------------------------------------
    def _agent(self, command: str, timeout: float = 30, **arguments) -> dict:
        assert self._qga is not None
        msg: dict = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._qga.send(msg)
        reply = self._qga.recv(timeout)
        while reply == {}:
            reply = self._qga.recv(timeout)
        if reply is None:
            raise TimeoutError(f"guest agent {command}: no answer in {timeout} s")
        if "error" in reply:
            raise GuestError(f"guest agent {command}: {reply['error'].get('desc')}")
        return reply["return"]

    def write(self, path: str, data: bytes) -> None:
        """DATA written to PATH in the guest by the guest agent itself: no process started there."""
        handle = self._agent("guest-file-open", path=path, mode="w")
        try:
            self._agent("guest-file-write", handle=handle, **{"buf-b64": base64.b64encode(data).decode()})
        finally:
            self._agent("guest-file-close", handle=handle)

    def sh(self, script: str, check: bool = True, timeout: float = 60, stdin: bytes | None = None) -> Result:
        """Run SCRIPT with /bin/sh in the guest as root; `timeout` also kills it in the guest."""
        args: dict = {"path": "/usr/bin/timeout", "arg": ["-k", "5", str(int(timeout)), "/bin/sh", "-c", script],
                      "capture-output": True}
        if stdin is not None:
            args["input-data"] = base64.b64encode(stdin).decode()
        t0 = time.monotonic()
        pid = self._agent("guest-exec", **args)["pid"]
        deadline = time.monotonic() + timeout + 15
        delay = 0.02
        while True:
            status = self._agent("guest-exec-status", pid=pid)
            if status.get("exited"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"guest command did not end: {script}")
            time.sleep(delay)
            # A command seen done late costs the suite its wait (hundreds of commands a run); a
            # status call costs the guest little.
            delay = min(delay * 1.5, 0.05)
        self.spent[0] += 1
        self.spent[1] += time.monotonic() - t0
        res = Result(status.get("exitcode", -1 if "signal" in status else 0),
                     base64.b64decode(status.get("out-data", "")).decode(errors="replace"),
                     base64.b64decode(status.get("err-data", "")).decode(errors="replace"))
        if check and res.rc != 0:
            raise GuestError(f"guest command exited {res.rc}: {script}\n{res.out[-2000:]}{res.err[-2000:]}")
        return res

    def wait_for(self, what: str, script: str, timeout: float = 30, interval: float = 0.5) -> str:
        """Run SCRIPT until it exits 0; its output. Fails naming WHAT and the last output."""
        deadline = time.monotonic() + timeout
        while True:
            res = self.sh(script, check=False, timeout=max(5, interval * 4))
            if res.rc == 0:
                return res.out
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s (last: rc {res.rc} {res.out[-500:]}{res.err[-500:]})")
            time.sleep(interval)
