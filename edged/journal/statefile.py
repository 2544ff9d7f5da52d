"""Reading the small state files under STATE_DIR/journal/ (docs/JOURNAL.md, "Directory layout").

They are edged's own, written atomically, so one that does not decode or has
the wrong shape means a damaged disk, a bug or a hand edit. edged then does
not start on a guess: it stops with one line naming the file, what is wrong
and what the technician can do (each file's remedy is written beside the code
that owns the file).
"""
from __future__ import annotations

import os
from typing import Any, Protocol

import msgpack

from .disk import Disk
from .shapes import Shape


class _OnDisk(Protocol):
    @property
    def disk(self) -> Disk: ...


class StateLoader(Protocol):
    """What `load` needs of the Journal (service.py): a Protocol, since the store that service.py
    imports reads its own state files through this module."""
    @property
    def store(self) -> _OnDisk: ...
    async def load_state(self, name: str) -> bytes | None: ...


class StateFileError(Exception):
    """A state file edged cannot trust; str() is the one line `edged run` prints before it exits."""

    def __init__(self, path: str, problem: str, remedy: str) -> None:
        super().__init__(f"{path}: {problem}; {remedy}")
        self.path, self.problem, self.remedy = path, problem, remedy


def path_of(disk: Disk, name: str) -> str:
    return os.path.join(getattr(disk, "root", ""), name)


def decode(path: str, raw: bytes, shape: Shape, remedy: str) -> Any:
    """The file's value, checked against its shape; StateFileError if it does not fit."""
    name = os.path.basename(path)
    try:
        value = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except Exception as e:  # msgpack raises several types, all meaning "not what edged wrote"
        what = "empty" if not raw else f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
        raise StateFileError(path, f"not readable as msgpack ({what})", remedy) from None
    why = shape.problem(value, name)
    if why is not None:
        raise StateFileError(path, why, remedy)
    return value


def read(disk: Disk, name: str, shape: Shape, remedy: str) -> Any | None:
    """On the journal thread: the file decoded and checked, None when there is none."""
    try:
        raw = disk.read(name)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StateFileError(path_of(disk, name), f"cannot be read ({e.strerror})", remedy) from None
    return decode(path_of(disk, name), raw, shape, remedy)


async def load(journal: StateLoader, name: str, shape: Shape, remedy: str) -> Any | None:
    """On the event loop: a part's state file beside the journal, decoded and checked."""
    path = path_of(journal.store.disk, name)
    try:
        raw = await journal.load_state(name)
    except OSError as e:
        raise StateFileError(path, f"cannot be read ({e.strerror})", remedy) from None
    return None if raw is None else decode(path, raw, shape, remedy)
