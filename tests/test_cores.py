"""day/cores.py: journal.seg checked in a forked worker while the caller archives what it checked,
and exports checked side by side. The worker's answer is the one-process answer; a sink that
refuses, a worker that dies and a read error each end it without a hang or a process left over."""
from __future__ import annotations

import errno
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from edged.day import cores, segread
from edged.journal import frame as fr
from test_segread import _segment

REPO = Path(__file__).resolve().parents[1]


def _sales(n: int) -> bytes:
    return _segment([fr.payload_of("sale", {"i": i, "pad": "x" * 200}, None, None, None, 1000) for i in range(n)])


def _beside(data: bytes, sink, runs=None) -> segread.Segment:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        os.lseek(f.fileno(), 0, os.SEEK_SET)
        return cores.read_beside(f.fileno(), len(data), runs if runs is not None else [], sink)


def _alone(data: bytes, sink) -> segread.Segment:
    with tempfile.TemporaryFile() as f:
        f.write(data)
        f.flush()
        os.lseek(f.fileno(), 0, os.SEEK_SET)
        return segread.read(f.fileno(), len(data), [], sink)


def test_the_worker_gives_the_same_frames_and_answer_as_one_process():
    data = _sales(12_000)  # ~3 MiB: several chunks, several batches
    here: list = []
    there: list = []
    alone, beside = _alone(data, here.extend), _beside(data, there.extend)
    assert there == here and len(there) == 12_000
    assert b"".join(row[4] for row in there) == data[fr.SEG_HEAD_SIZE:]
    assert (beside.sha256, beside.records, beside.counts, beside.chain, beside.last_seq) == \
        (alone.sha256, alone.records, alone.counts, alone.chain, alone.last_seq)
    assert not multiprocessing.active_children()


def test_a_damaged_frame_is_refused_by_the_worker_as_in_one_process():
    data = bytearray(_sales(8_000))
    data[len(data) // 2] ^= 0x40  # one bit in the middle: a chain link no longer matches
    got: list = []
    with pytest.raises(segread.SegmentError, match="chain link mismatch|bad length|payload is not a record"):
        _beside(bytes(data), got.extend)
    assert 0 < len(got) < 8_000  # the frames before it were handed over; the damaged one never
    assert not multiprocessing.active_children()


def test_a_sink_that_refuses_stops_the_worker(caplog):
    data = _sales(20_000)
    calls = []

    def refuse(batch):
        calls.append(len(batch))
        raise ValueError("conflict in the archive")

    with pytest.raises(ValueError, match="conflict"):
        _beside(data, refuse)
    assert len(calls) == 1  # the worker, blocked on the pipe or reading on, is gone
    assert not multiprocessing.active_children()
    assert "did not end by itself" not in caplog.text  # it got EPIPE and ended: it was not killed


def test_a_killed_importer_leaves_no_worker_behind(tmp_path):
    """SIGKILL of the importer while the worker waits on a full pipe: the worker dies with it and
    does not keep the stick's file open."""
    seg = tmp_path / "journal.seg"
    seg.write_bytes(_sales(40_000))
    pidfile = tmp_path / "worker.pid"
    script = f'''
import multiprocessing, os, time
from edged.day import cores
fd = os.open({str(seg)!r}, os.O_RDONLY)
def stuck(batch):
    (child,) = multiprocessing.active_children()
    open({str(pidfile)!r}, "w").write(str(child.pid))
    time.sleep(600)
cores.read_beside(fd, os.fstat(fd).st_size, [], stuck)
'''
    importer = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not pidfile.exists() or not pidfile.read_text():
            assert importer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        worker = int(pidfile.read_text())
    finally:
        importer.kill()
        importer.wait()
    deadline = time.monotonic() + 10
    while _alive(worker):
        assert time.monotonic() < deadline, f"worker {worker} outlived its importer"
        time.sleep(0.05)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def test_a_deeply_nested_day_close_comes_back_as_in_one_process():
    """A day.close body nested deeper than pickle can go: it crosses as its frame, and the caller
    gets what one process would have (here: decoded, for its shape check to refuse)."""
    body: object = 0
    for _ in range(900):
        body = [body]
    data = _segment([fr.payload_of("sale", {"i": 1}, None, None, None, 1000),
                     fr.payload_of("day.close", body, "day.close:2026-01-05", None, None)])
    alone, beside = _alone(data, lambda b: None), _beside(data, lambda b: None)
    assert beside.close is not None and beside.close.body == alone.close.body
    assert beside.close_chain == alone.close_chain


def test_a_worker_killed_in_the_middle_of_a_message_is_an_error_not_a_read_error():
    data = _segment([fr.payload_of("sale", "z" * (2 << 20), None, None, None, 1000) for _ in range(4)])

    def kill_it(batch):
        (child,) = multiprocessing.active_children()
        os.kill(child.pid, signal.SIGKILL)
        child.join()

    with pytest.raises(RuntimeError, match="ended without an answer"):
        _beside(data, kill_it)


def test_a_worker_that_dies_is_an_error_not_a_hang():
    data = _sales(20_000)

    def kill_it(batch):
        (child,) = multiprocessing.active_children()
        os.kill(child.pid, signal.SIGKILL)
        child.join()

    with pytest.raises(RuntimeError, match="ended without an answer.*-9"):
        _beside(data, kill_it)


def test_a_read_error_comes_back_as_an_os_error():
    fd = os.open(tempfile.gettempdir(), os.O_RDONLY | os.O_DIRECTORY)  # read(2) on it: EISDIR
    try:
        with pytest.raises(OSError) as raised:
            cores.read_beside(fd, 4096, [], lambda batch: None)
        assert raised.value.errno == errno.EISDIR
    finally:
        os.close(fd)
    assert not multiprocessing.active_children()


def test_the_runs_the_worker_met_are_consumed_here_too():
    data = _sales(5)
    runs = [(100, 101, b"\x00" * 32)]  # never met: still there after the pass
    _beside(data, lambda batch: None, runs)
    assert runs == [(100, 101, b"\x00" * 32)]


def test_checks_side_by_side_come_back_in_order():
    items = list(range(40))
    out = list(cores.in_order(items, lambda i: (i, os.getpid()), count=2))
    assert [i for i, _ in out] == items
    if cores.workers() > 1:
        assert {pid for _, pid in out} != {os.getpid()}  # done by workers, not here
    assert list(cores.in_order([7], lambda i: (i, os.getpid()))) == [(7, os.getpid())]  # one item: here
