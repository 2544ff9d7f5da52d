"""A simulated disk for the journal's Disk layer that can lose power after any call.

Each file keeps the bytes it had at its last fdatasync plus the writes and
truncations since; each directory keeps the entries it had at its last fsync
plus the changes since. `crash(mode)` gives the disk as it could look after a
power cut at this moment:

- "drop":   every unsynced write and directory change is lost
- "torn":   unsynced writes kept, the last one torn mid-way; directory changes kept
- "zeros":  files have their new size, but unsynced bytes read as zeros
- "garble": some 512-byte sectors of unsynced writes hold garbage, others made it
"""
from __future__ import annotations

import errno
import random
from dataclasses import dataclass, field


@dataclass
class Inode:
    synced: bytes = b""
    ops: list[tuple] = field(default_factory=list)  # ("w", offset, data) | ("t", size)

    def current(self, upto: int | None = None) -> bytearray:
        data = bytearray(self.synced)
        for op in self.ops[:upto]:
            _apply(data, op)
        return data


def _apply(data: bytearray, op: tuple) -> None:
    if op[0] == "w":
        _, offset, chunk = op
        if len(data) < offset:
            data.extend(bytes(offset - len(data)))
        data[offset:offset + len(chunk)] = chunk
    else:
        del data[op[1]:]


def _dir(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


class SimDisk:
    def __init__(self) -> None:
        self.names: dict[str, Inode] = {}  # what the OS shows now
        self.durable_names: dict[str, Inode] = {}  # what survives a crash, per directory fsync
        self.dirs: set[str] = {""}
        self.handles: dict[int, Inode] = {}
        self._next = 3
        self.steps = 0  # I/O calls so far
        self.on_step = None  # called after every call: crash-point hooks
        self.fail: dict[str, int] = {}  # op name -> errno to raise once

    def _step(self, name: str) -> None:
        code = self.fail.pop(name, None)
        if code is not None:
            raise OSError(code, f"simulated {errno.errorcode[code]} in {name}")
        self.steps += 1
        if self.on_step:
            self.on_step(self)

    # --- Disk protocol ---

    def listdir(self, rel: str) -> list[str]:
        prefix = rel + "/" if rel else ""
        return sorted(n[len(prefix):] for n in self.names if _dir(n) == rel and n.startswith(prefix))

    def read(self, rel: str) -> bytes:
        if rel not in self.names:
            raise FileNotFoundError(errno.ENOENT, "no such file", rel)
        return bytes(self.names[rel].current())

    def mkdir(self, rel: str) -> None:
        self.dirs.add(rel)

    def open(self, rel: str, create: bool) -> int:
        if rel not in self.names:
            if not create:
                raise FileNotFoundError(errno.ENOENT, "no such file", rel)
            self.names[rel] = Inode()
            self._step("create")
        h = self._next
        self._next += 1
        self.handles[h] = self.names[rel]
        return h

    def write_at(self, handle: int, offset: int, data: bytes) -> None:
        self._step("write")
        self.handles[handle].ops.append(("w", offset, bytes(data)))

    def fdatasync(self, handle: int) -> None:
        inode = self.handles[handle]
        self._step("fdatasync")
        inode.synced, inode.ops = bytes(inode.current()), []

    def truncate(self, handle: int, size: int) -> None:
        self._step("truncate")
        self.handles[handle].ops.append(("t", size))

    def close(self, handle: int) -> None:
        del self.handles[handle]

    def rename(self, src: str, dst: str) -> None:
        self._step("rename")
        self.names[dst] = self.names.pop(src)

    def unlink(self, rel: str) -> None:
        if rel not in self.names:
            raise FileNotFoundError(errno.ENOENT, "no such file", rel)
        self._step("unlink")
        del self.names[rel]

    def fsync_dir(self, rel: str) -> None:
        self._step("fsync_dir")
        for name in [n for n in self.durable_names if _dir(n) == rel]:
            del self.durable_names[name]
        for name, inode in self.names.items():
            if _dir(name) == rel:
                self.durable_names[name] = inode

    # --- power loss ---

    def crash(self, mode: str, rng: random.Random) -> SimDisk:
        """A new disk holding what a power cut now would leave."""
        names = self.durable_names if mode == "drop" else self.names
        out = SimDisk()
        out.dirs = set(self.dirs)
        done: dict[int, Inode] = {}
        for name, inode in names.items():
            if id(inode) not in done:
                done[id(inode)] = Inode(bytes(_lose(inode, mode, rng)))
            out.names[name] = out.durable_names[name] = done[id(inode)]
        return out


def _lose(inode: Inode, mode: str, rng: random.Random) -> bytearray:
    if mode == "drop" or not inode.ops:
        return bytearray(inode.synced)
    if mode == "torn":
        data = inode.current(upto=len(inode.ops) - 1)
        last = inode.ops[-1]
        if last[0] == "w":
            _apply(data, ("w", last[1], last[2][:rng.randrange(len(last[2]) + 1)]))
        return data
    data = inode.current()
    for op in inode.ops:
        if op[0] != "w":
            continue
        start, end = op[1], op[1] + len(op[2])
        if mode == "zeros":
            data[start:end] = bytes(min(end, len(data)) - start)
        else:  # garble: each touched sector is new, old, or garbage
            for sector in range(start // 512, (end - 1) // 512 + 1):
                lo, hi = max(sector * 512, start), min(sector * 512 + 512, end, len(data))
                pick = rng.randrange(3)
                if pick == 1:
                    data[lo:hi] = bytes(hi - lo)
                elif pick == 2:
                    data[lo:hi] = rng.randbytes(hi - lo)
    return data
