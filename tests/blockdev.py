"""USB sticks as the kernel sees them, without USB: a loop device over an image
with a partition table and one filesystem.

`plug()` / `unplug()` add and delete the partition with partx, which gives the
daemon's monitor real kernel add/remove uevents for loopNp1. `pull()` is a
stick yanked out mid-export: the exfat FUSE process serving the mount is
killed (every later write, fsync and rename on it fails with ENOTCONN, as
writes to a vanished USB device fail with EIO), the dead mount is detached and
the partition deleted, so the daemon also hears the remove event. This
kernel has no device-mapper and no fault injection, so the pull happens at
the filesystem, not the block layer; the bytes that reached the image are
exactly those exfat-fuse wrote before it died.
"""
from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

_numbers = itertools.count(1)
TOOLS = ("losetup", "partx", "sfdisk", "blkid", "mkfs.exfat", "mkfs.ext4", "mount.exfat-fuse")


def require_blockdev() -> None:
    if os.geteuid() != 0:
        pytest.skip("loop devices and mounts need root (CI runs as root)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (make test installs them as root: fdisk exfatprogs exfat-fuse)")
    probe = subprocess.run(["losetup", "-f"], capture_output=True, text=True)
    if probe.returncode:
        pytest.skip(f"no free loop device: {probe.stderr.strip()}")


def sh(*argv: str) -> str:
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if out.returncode:
        raise AssertionError(f"{' '.join(argv)}: {out.stderr.strip()}")
    return out.stdout


def _forget_partitions(loop: str) -> None:
    """A loop device detached with its partitions still added (a run killed mid-test) keeps them on
    this kernel (6.x): the next image on that device then gets EBUSY from `partx -a`."""
    subprocess.run(["partx", "-d", loop], capture_output=True, timeout=60)


class StickImage:
    def __init__(self, where: Path, fs: str = "exfat", size_mb: int = 32, read_only: bool = False) -> None:
        self.image = where / f"stick-{fs}-{next(_numbers)}.img"
        with open(self.image, "wb") as f:
            f.truncate(size_mb << 20)
        part_type = "7" if fs == "exfat" else "83"
        subprocess.run(["sfdisk", "-q", str(self.image)], input=f"label: dos\n,,{part_type}\n", text=True,
                       check=True, capture_output=True)
        self.loop = sh("losetup", "-f", "--show", str(self.image)).strip()
        self.part = f"{self.loop}p1"
        _forget_partitions(self.loop)
        sh("partx", "-a", self.loop)
        sh(f"mkfs.{fs}", *(["-q"] if fs == "ext4" else []), self.part)
        sh("partx", "-d", self.loop)
        if read_only:  # a write-protected stick: the whole device refuses writes
            sh("losetup", "-d", self.loop)
            self.loop = sh("losetup", "-f", "--show", "-r", str(self.image)).strip()
            self.part = f"{self.loop}p1"
            _forget_partitions(self.loop)
        self.device = os.path.basename(self.part)

    def plug(self) -> None:
        sh("partx", "-a", self.loop)

    def unplug(self) -> None:
        sh("partx", "-d", self.loop)

    def fuse_pid(self) -> int | None:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"mount.exfat-fuse") and self.part.encode() in cmd:
                return int(pid)
        return None

    def pull(self) -> None:
        """The stick yanked out: its filesystem dies at once and the dead mount is detached. The
        partition goes as soon as the kernel lets it (once the writer has closed its files on the
        dead mount), in the background, which the daemon hears as a remove event."""
        pid = self.fuse_pid()
        assert pid is not None, "the stick is not mounted through exfat-fuse"
        os.kill(pid, signal.SIGKILL)
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[fields.index("-") + 2] == self.part:
                subprocess.run(["umount", "-l", fields[4]], capture_output=True)
        self._gone = threading.Thread(target=self._delete_partition, daemon=True)
        self._gone.start()

    def _delete_partition(self) -> None:
        deadline = time.monotonic() + 20
        while subprocess.run(["partx", "-d", self.loop], capture_output=True).returncode:
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.part} stays busy after the pull")
            time.sleep(0.05)

    def look(self, where: Path, mode: str = "ro") -> Path:
        """Mount the (plugged) partition at where, to see what the daemon left (umount it after)."""
        where.mkdir(exist_ok=True)
        fs = sh("blkid", "-p", "-o", "value", "-s", "TYPE", self.part).strip()
        sh("mount", "-t", "exfat-fuse" if fs == "exfat" else fs, "-o", mode, self.part, str(where))
        return where

    def close(self) -> None:
        if getattr(self, "_gone", None):
            self._gone.join()
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            fields = line.split()
            if fields[fields.index("-") + 2] == self.part:
                subprocess.run(["umount", "-l", fields[4]], capture_output=True)
        subprocess.run(["partx", "-d", self.loop], capture_output=True)
        subprocess.run(["losetup", "-d", self.loop], capture_output=True)


UDISKS_TOOLS = ("udisksctl", "/usr/libexec/udisks2/udisksd", "/lib/systemd/systemd-udevd", "dbus-daemon", "pgrep")


@contextlib.contextmanager
def udisks_running(where: Path) -> Iterator[None]:
    """udevd, a system bus and udisksd, as a till has them: started here unless already running,
    and stopped again (with udevd's /run/udev removed, so later tests see a machine without udevd).
    No bus activation: udisksd would start polkitd, which root does not need."""
    missing = [t for t in UDISKS_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"missing {', '.join(missing)} (make test installs udisks2 and procps as root)")
    started: list[subprocess.Popen] = []
    made_udev = not os.path.exists("/run/udev/control")
    bus = Path("/run/dbus/system_bus_socket")
    try:
        if not bus.exists():
            conf = Path("/usr/share/dbus-1/system.conf").read_text()
            conf = conf.replace("<standard_system_servicedirs/>", "").replace(
                "<includedir>system.d</includedir>", "<includedir>/usr/share/dbus-1/system.d</includedir>")
            (where / "bus.conf").write_text(conf)
            bus.parent.mkdir(exist_ok=True)
            started.append(subprocess.Popen(["dbus-daemon", "--config-file", str(where / "bus.conf"), "--nofork"]))
        if made_udev:
            started.append(subprocess.Popen(["/lib/systemd/systemd-udevd"], stderr=subprocess.DEVNULL))
        if subprocess.run(["pgrep", "-x", "udisksd"], capture_output=True).returncode:
            started.append(subprocess.Popen(["/usr/libexec/udisks2/udisksd"], stdout=subprocess.DEVNULL,
                                            stderr=open(where / "udisksd.log", "wb")))
        deadline = time.monotonic() + 20
        while subprocess.run(["udisksctl", "status"], capture_output=True).returncode or \
                not os.path.exists("/run/udev/control"):
            assert time.monotonic() < deadline, "udisksd or udevd did not come up"
            time.sleep(0.05)
        yield
    finally:
        for proc in reversed(started):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if made_udev:
            shutil.rmtree("/run/udev", ignore_errors=True)
            shutil.rmtree("/run/udisks2", ignore_errors=True)
        if started and started[0].args[0] == "dbus-daemon":
            for name in ("system_bus_socket", "pid"):
                (bus.parent / name).unlink(missing_ok=True)
