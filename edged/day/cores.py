"""Head office's checks on more than one core: `edged verify` checks exports side by side, and
`edged import` checks an export in one process while it archives the frames already checked in
another.

Why processes: the per-record loop (day/segread.py) is Python and holds the GIL, and an import
spends about as long in SQLite as in checking; threads would take turns on one core. The workers
are forked, so they start at once and share the keys and manifests already read; each ends with
os._exit (multiprocessing's fork start), never closing the archive's SQLite connection it
inherited, and never writes to it.

What crosses between processes is what one process would have handed itself: a worker reads
journal.seg once and sends each chunk's checked frames, as segread's sink gets them, over a pipe.
The pipe holds at most one batch in flight (the worker blocks on a full pipe), so memory stays
bounded as in one process. The archive writes exactly the bytes the worker checked, and commits
only after the worker's final answer (SHA-256, counts, day.close) passed every check.
"""
from __future__ import annotations

import dataclasses
import fcntl
import multiprocessing
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from . import segread

_FORK = multiprocessing.get_context("fork")
PIPE_BYTES = 1 << 20
T = TypeVar("T")


def workers() -> int:
    """Processes to check with: the cores this process may run on."""
    return max(1, len(os.sched_getaffinity(0)))


def in_order(items: list[T], check: Callable[[T], T], count: int | None = None) -> Iterator[T]:
    """check(item) for each item on up to `count` forked workers (default: one per core), yielded in
    the order given as each is done; one item or one core: here, without a worker."""
    count = min(len(items), count or workers())
    if count <= 1:
        yield from map(check, items)
        return
    global _check
    _check = check  # the forked workers inherit it: a function given here is never pickled
    with ProcessPoolExecutor(count, mp_context=_FORK) as pool:
        yield from pool.map(_run_check, items)


_check: Callable[[Any], Any] | None = None


def _run_check(item: T) -> T:
    assert _check is not None  # set before the pool forked this worker
    return _check(item)


def copy_into(target: Any, done: Any) -> None:
    """A worker's result (a copy) back into the caller's own dataclass object."""
    for f in dataclasses.fields(target):
        setattr(target, f.name, getattr(done, f.name))


def read_beside(fd: int, size: int, runs: list[tuple[int, int, bytes]], sink: segread.Sink) -> segread.Segment:
    """segread.read() in a forked worker; the batches it checks are given to `sink` here as they
    come. Raises what read() raises (SegmentError, OSError); whatever `sink` raises stops the worker."""
    receiver, sender = _FORK.Pipe(duplex=False)
    _widen(sender)
    worker = _FORK.Process(target=_read_and_send, args=(fd, size, runs, sender), name="edged-segread",
                           daemon=True)
    worker.start()
    sender.close()  # the worker holds the only sending end: its death is an EOF here
    try:
        while True:
            try:
                tag, value = receiver.recv()
            except EOFError:
                worker.join()
                raise RuntimeError(f"the process checking journal.seg ended without an answer (exit code "
                                   f"{worker.exitcode})") from None
            if tag == "batch":
                sink(value)
            elif tag == "done":
                seg, runs[:] = value  # read() consumes the runs it met; the caller looks at what is left
                return seg
            elif tag == "segment":
                raise segread.SegmentError(value)
            elif tag == "os":
                raise OSError(*value)
            else:
                raise RuntimeError(f"checking journal.seg failed: {value}")
    finally:
        receiver.close()  # a worker still sending gets EPIPE and ends
        worker.join(5)
        if worker.is_alive():
            worker.kill()
            worker.join()


def _widen(conn: Connection) -> None:
    """A batch (a 1 MiB chunk's frames, pickled) through the default 64 KiB pipe takes ~20 turns of
    the two processes; through 1 MiB, one or two."""
    try:
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size for this user: the default works, only slower
        pass


def _read_and_send(fd: int, size: int, runs: list[tuple[int, int, bytes]], sender: Connection) -> None:
    """The worker: every outcome goes back as one message, never as a traceback on the terminal."""
    answer: tuple[str, Any]
    try:
        seg = segread.read(fd, size, runs, lambda batch: sender.send(("batch", batch)))
        answer = ("done", (seg, runs))
    except segread.SegmentError as e:
        answer = ("segment", str(e))
    except BrokenPipeError:
        return  # the importer stopped listening (it refused the export): nothing to say
    except OSError as e:
        answer = ("os", (e.errno, e.strerror or str(e)))
    except BaseException as e:  # a bug: the importer refuses this export and goes on
        answer = ("bug", f"{type(e).__name__}: {e}")
    try:
        sender.send(answer)
    except OSError:
        pass
