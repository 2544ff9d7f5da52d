"""The one narrow layer all journal file I/O goes through.

Production uses `RealDisk` (os calls under one directory). Tests swap in a
simulated disk that can "lose power" after any call. Paths are relative to
the journal directory and use "/".
"""
from __future__ import annotations

import os
import time
from typing import Protocol


class Disk(Protocol):
    def listdir(self, rel: str) -> list[str]: ...
    def read(self, rel: str) -> bytes: ...
    def mkdir(self, rel: str) -> None: ...
    def open(self, rel: str, create: bool) -> int: ...
    def write_at(self, handle: int, offset: int, data: bytes) -> None: ...
    def fdatasync(self, handle: int) -> None: ...
    def truncate(self, handle: int, size: int) -> None: ...
    def close(self, handle: int) -> None: ...
    def rename(self, src: str, dst: str) -> None: ...
    def unlink(self, rel: str) -> None: ...
    def fsync_dir(self, rel: str) -> None: ...


class RealDisk:
    def __init__(self, root: str) -> None:
        self.root = root
        os.makedirs(root, exist_ok=True)
        # When the call that writes or syncs now started (time.monotonic()), None between calls:
        # the journal's watchdog check reads it from the loop (docs/JOURNAL.md, "A flush that hangs").
        self.busy_since: float | None = None

    def _p(self, rel: str) -> str:
        return os.path.join(self.root, rel) if rel else self.root

    def listdir(self, rel: str) -> list[str]:
        return sorted(os.listdir(self._p(rel)))

    def read(self, rel: str) -> bytes:
        with open(self._p(rel), "rb") as f:
            return f.read()

    def mkdir(self, rel: str) -> None:
        os.makedirs(self._p(rel), exist_ok=True)

    def open(self, rel: str, create: bool) -> int:
        return os.open(self._p(rel), os.O_RDWR | (os.O_CREAT if create else 0) | os.O_CLOEXEC, 0o640)

    def write_at(self, handle: int, offset: int, data: bytes) -> None:
        self.busy_since = time.monotonic()
        try:
            done = os.pwrite(handle, data, offset)
            view = memoryview(data)[done:]
            while view:  # pwrite may write less than asked
                offset += done
                done = os.pwrite(handle, view, offset)
                view = view[done:]
        finally:
            self.busy_since = None

    def fdatasync(self, handle: int) -> None:
        self.busy_since = time.monotonic()
        try:
            os.fdatasync(handle)
        finally:
            self.busy_since = None

    def truncate(self, handle: int, size: int) -> None:
        os.ftruncate(handle, size)

    def close(self, handle: int) -> None:
        os.close(handle)

    def rename(self, src: str, dst: str) -> None:
        os.rename(self._p(src), self._p(dst))

    def unlink(self, rel: str) -> None:
        os.unlink(self._p(rel))

    def fsync_dir(self, rel: str) -> None:
        fd = os.open(self._p(rel), os.O_RDONLY | os.O_DIRECTORY)
        self.busy_since = time.monotonic()
        try:
            os.fsync(fd)
        finally:
            self.busy_since = None
            os.close(fd)


def write_atomic(disk: Disk, rel: str, data: bytes) -> None:
    """The one way small state files are written: tmp -> fdatasync -> rename -> fsync(dir)."""
    tmp = rel + ".tmp"
    handle = disk.open(tmp, create=True)
    try:
        disk.truncate(handle, 0)
        disk.write_at(handle, 0, data)
        disk.fdatasync(handle)
    finally:
        disk.close(handle)
    disk.rename(tmp, rel)
    parent = rel.rsplit("/", 1)[0] if "/" in rel else ""
    disk.fsync_dir(parent)
