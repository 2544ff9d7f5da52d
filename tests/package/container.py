"""A booted Debian 12 with systemd as PID 1 (systemd-nspawn), and commands run inside it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rootfs import offline

UPGRADE_VERSION = "0.1.0+upgrade1"  # the rebuilt, newer package the upgrade test installs
ENV = ["PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "HOME=/root"]


def log(line: str) -> None:
    """Progress and figures of the package test, shown as it runs (pytest -s)."""
    print(f"  [package] {line}", file=sys.stderr, flush=True)


class Container:
    def __init__(self, base: Path, root: Path, packages: Path, log) -> None:
        self.base, self.root, self.packages, self.log = base, root, packages, log
        self.proc: subprocess.Popen | None = None
        self.pid = 0

    def boot(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(self.base), str(self.root)], check=True)
        offline(self.root)
        console = open(self.root.with_suffix(".console.log"), "w")
        # --private-network: the till has no network (and port 9100 stays inside).
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "--register=no", "--keep-unit", "--boot", "--private-network",
             "--console=passive", "-D", str(self.root), f"--bind-ro={self.packages}:/mnt/packages"],
            stdout=console, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        t0 = time.monotonic()
        self.pid = self._init_pid()
        state = self.wait_for("boot", lambda: self.sh("systemctl is-system-running --wait", check=False)
                              .stdout.strip() in ("running", "degraded") and
                              self.sh("systemctl is-system-running", check=False).stdout.strip(), timeout=120)
        self.log(f"container: booted in {time.monotonic() - t0:.1f} s (system {state}), init pid {self.pid}")

    def _init_pid(self, timeout: float = 30) -> int:
        """The container's systemd, as a host pid: the process under nspawn running systemd."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {self.proc.returncode}; see "
                                   f"{self.root.with_suffix('.console.log')}")
            for pid in _descendants(self.proc.pid):
                try:
                    if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                        return pid
                except FileNotFoundError:
                    continue
            time.sleep(0.1)
        raise RuntimeError("the container's systemd did not start")

    def sh(self, cmd: str, *, user: str | None = None, check: bool = True, timeout: float = 120,
           input: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell command inside the container (as `user` if given) and return its result."""
        argv = ["nsenter", "-t", str(self.pid), "-a", "--", "/usr/bin/env", "-i", *ENV]
        if user:
            argv += ["runuser", "-u", user, "--"]
        result = subprocess.run([*argv, "/bin/sh", "-c", cmd], capture_output=True, text=True,
                                timeout=timeout, input=input)
        if check and result.returncode != 0:
            raise AssertionError(f"in the container, `{cmd}` exited {result.returncode}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.sh(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait_for(self, what: str, check, timeout: float = 60, every: float = 0.5):
        deadline = time.monotonic() + timeout
        while True:
            value = check()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            time.sleep(every)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.sh("systemctl poweroff", check=False, timeout=30)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out
