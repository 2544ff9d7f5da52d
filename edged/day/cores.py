"""Head office's checks on more than one core: `edged verify` checks exports side by side, and
`edged import` checks an export in one process while it archives the frames already checked in
another.

Why processes: the per-record loop (day/segread.py) is Python and holds the GIL, and an import
spends about as long in SQLite as in checking; threads would take turns on one core. The workers
are forked, so they start at once and share the keys and manifests already read; each ends with
os._exit (multiprocessing's fork start) and never touches the archive's SQLite connection the
importer holds (`edged verify --archive` closes its own before forking). A worker dies with the
importer (PR_SET_PDEATHSIG), so an importer killed mid-export leaves nothing holding the stick.

What crosses between processes is what one process would have handed itself: a worker reads
journal.seg once and sends each chunk's checked frames, as segread's sink gets them, over a pipe.
The pipe holds at most one batch in flight (the worker blocks on a full pipe), so each process's
memory stays bounded as in one process (together about twice: the worker pickles each batch).
The archive writes exactly the bytes the worker checked, and commits only after the worker's
final answer (SHA-256, counts, day.close) passed every check.
"""
from __future__ import annotations

import ctypes
import dataclasses
import fcntl
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.connection import Connection
from typing import Any, TypeVar

from ..journal import frame as fr
from . import segread

log = logging.getLogger("edged.day")
_FORK = multiprocessing.get_context("fork")
PIPE_BYTES = 1 << 20
_PR_SET_PDEATHSIG = 1
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
    come. Raises what read() raises (SegmentError, OSError); whatever `sink` raises stops the worker.
    On one core: here, without a worker."""
    if workers() <= 1:
        return segread.read(fd, size, runs, sink)
    receiver, sender = _FORK.Pipe(duplex=False)
    _widen(sender)
    worker = _FORK.Process(target=_read_and_send, args=(fd, size, runs, sender, receiver, os.getpid()),
                           name="edged-segread", daemon=True)
    worker.start()
    sender.close()  # the worker holds the only sending end (and closed its reading end): its death is an EOF here
    try:
        while True:
            try:
                tag, value = receiver.recv()
            except (EOFError, OSError) as e:  # OSError: it died in the middle of a message
                worker.join()
                raise RuntimeError(f"the process checking journal.seg ended without an answer (exit code "
                                   f"{worker.exitcode}{'' if isinstance(e, EOFError) else f'; {e}'})") from None
            if tag == "batch":
                sink(value)
            elif tag == "done":
                seg, runs[:] = value  # read() consumes the runs it met; the caller looks at what is left
                if seg.close_frame:  # decoded here: a body of any nesting crosses the pipe as bytes
                    seg.close = fr.decode(seg.close_frame, 0, None)
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
            log.warning("the process checking journal.seg did not end by itself: killed")
            worker.kill()
            worker.join()


def _widen(conn: Connection) -> None:
    """A batch (a 1 MiB chunk's frames, pickled) through the default 64 KiB pipe takes ~20 turns of
    the two processes; through 1 MiB, one or two."""
    try:
        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:  # above /proc/sys/fs/pipe-max-size for this user: the default works, only slower
        pass


def _die_with(parent: int) -> None:
    """The worker ends when the importer does, however it ends (SIGKILL, the OOM killer): it must
    not hang on a full pipe holding the stick's file open."""
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before prctl took effect
        os._exit(1)


def _read_and_send(fd: int, size: int, runs: list[tuple[int, int, bytes]], sender: Connection,
                   receiver: Connection, parent: int) -> None:
    """The worker: every outcome goes back as one message, never as a traceback on the terminal."""
    receiver.close()  # else its own reading end keeps the pipe open: no EPIPE when the importer stops reading
    _die_with(parent)
    answer: tuple[str, Any]
    try:
        seg = segread.read(fd, size, runs, lambda batch: sender.send(("batch", batch)))
        seg.close = None  # crosses as close_frame: a deeply nested body cannot be pickled
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
    except Exception as e:  # it could not be pickled: say so rather than die with a traceback
        try:
            sender.send(("bug", f"the answer could not be sent: {type(e).__name__}: {e}"))
        except Exception:
            pass
