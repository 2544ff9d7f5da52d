"""A disk whose fdatasync hangs for real, without device-mapper (this kernel has none).

ext4 on a loop device whose backing file lives on a FUSE filesystem (exfat-fuse
over a second loop device). Stopping the FUSE process (SIGSTOP) leaves writes
landing in the page cache as usual, but every fdatasync on the ext4 waits for
the loop device, which waits for the stopped FUSE process: the call blocks in
the kernel exactly as on a hung SD card, until `release()` (SIGCONT).
"""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from blockdev import require_blockdev, sh


class HangingDisk:
    def __init__(self, where: Path) -> None:
        require_blockdev()
        self.where = where
        self.outer_img, self.outer, self.mnt = where / "outer.img", where / "outer", where / "mnt"
        self.outer.mkdir()
        self.mnt.mkdir()
        with open(self.outer_img, "wb") as f:
            f.truncate(96 << 20)
        sh("mkfs.exfat", str(self.outer_img))
        self.outer_loop = sh("losetup", "-f", "--show", str(self.outer_img)).strip()
        self.inner_loop = ""
        try:
            sh("mount.exfat-fuse", self.outer_loop, str(self.outer))
            self.fuse_pid = self._fuse_pid()
            inner = self.outer / "inner.img"
            with open(inner, "wb") as f:
                f.truncate(64 << 20)
            self.inner_loop = sh("losetup", "-f", "--show", str(inner)).strip()
            sh("mkfs.ext4", "-q", "-F", self.inner_loop)
            sh("mount", self.inner_loop, str(self.mnt))
        except BaseException:
            self.close()
            raise

    def _fuse_pid(self) -> int:
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmd and cmd[0].endswith(b"mount.exfat-fuse") and self.outer_loop.encode() in cmd:
                return int(pid)
        raise AssertionError("the exfat-fuse process serving the backing file was not found")

    def hang(self) -> None:
        os.kill(self.fuse_pid, signal.SIGSTOP)

    def release(self) -> None:
        os.kill(self.fuse_pid, signal.SIGCONT)

    def close(self) -> None:
        if getattr(self, "fuse_pid", None):
            self.release()
        subprocess.run(["umount", str(self.mnt)], capture_output=True)
        if self.inner_loop:
            subprocess.run(["losetup", "-d", self.inner_loop], capture_output=True)
        subprocess.run(["umount", str(self.outer)], capture_output=True)
        subprocess.run(["losetup", "-d", self.outer_loop], capture_output=True)

    def __enter__(self) -> HangingDisk:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
