"""Fuzzing the socket of a real daemon process: 5,500 hypothesis cases (x10 with --long).

Random bytes, mutated frames, non-map msgpack, deep nesting, huge strings and
wrong (and right) types for every parameter of every op the daemon registers
(read from its op registry, so a new op is fuzzed as it lands). Each case runs on its own
connection; throughout, a well-behaved client on another connection must keep
getting correct answers, the daemon must stay up and its memory bounded.
"""
from __future__ import annotations

import os
import socket
import struct
import subprocess
import sys
import threading
import time

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edged.client import BlockingClient
from edged.relay import framing
from registered import registered_ops

pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")  # huge params, on purpose
SCALE = int(os.environ.get("EDGED_FUZZ_SCALE", "1"))
CODES = {"bad_frame", "frame_too_large", "hello_required", "unsupported_protocol", "unknown_op", "bad_request",
         "not_permitted", "not_found", "device_unavailable", "range_exhausted", "journal_unavailable", "busy"}
MAX_FRAME = 64 << 10
FUZZED: set[str] = set()  # the ops the fuzzer sent


@pytest.fixture(scope="module")
def ops():
    """Every op the (simulated) daemon registers, with its declared parameters."""
    return registered_ops()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    import tempfile
    tmp = tempfile.mkdtemp(prefix="edged-fz-", dir="/tmp")
    cfg = os.path.join(tmp, "edged.toml")
    with open(cfg, "w") as f:
        f.write(f"[daemon]\nmax_frame = {MAX_FRAME}\nmax_connections = 64\nclient_timeout = 2.0\n"
                "[numbering.receipt]\nfirst = 1\nlast = 1000000\n")
    sock = os.path.join(tmp, "s.sock")
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--simulate", "--config", cfg,
                             "--state-dir", os.path.join(tmp, "state"), "--socket", sock],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not os.path.exists(sock):
        assert proc.poll() is None and time.time() < deadline, "daemon did not start"
        time.sleep(0.05)
    good = GoodClient(sock)
    good.start()
    rss0 = _rss(proc.pid)
    yield proc, sock
    good.stop()
    assert proc.poll() is None, "the daemon died under fuzzing"
    assert good.errors == [] and good.rounds > 0
    assert _rss(proc.pid) - rss0 < 64 << 20, "daemon memory grew by more than 64 MiB"
    proc.terminate()
    assert proc.wait(20) == 0
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)


def _rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class GoodClient(threading.Thread):
    """Appends and asks for status all along; every answer must be right."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.path, self.errors, self.rounds = path, [], 0
        self._stop_flag = threading.Event()

    def run(self) -> None:
        with BlockingClient.connect(self.path, "good") as c:
            last = 0
            while not self._stop_flag.is_set():
                try:
                    seq = c.request("append", records=[{"kind": "good", "body": self.rounds}])["records"][0]["seq"]
                    if seq <= last:
                        self.errors.append(f"seq went from {last} to {seq}")
                    last = seq
                    if c.request("status")["journal"]["last_seq"] < seq:
                        self.errors.append("status behind an acked append")
                    self.rounds += 1
                except Exception as e:  # any failure of a good client is a finding
                    self.errors.append(repr(e))
                    return
                time.sleep(0.01)

    def stop(self) -> None:
        self._stop_flag.set()
        self.join(10)


def _connect(path: str, hello: bool) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(path)
    if hello:
        s.sendall(framing.encode({"op": "hello", "id": 0, "protocol": 1, "client": "fuzz"}))
        assert _read(s)["ok"] is True
    return s


def _read(s: socket.socket) -> dict | None:
    """One message, or None when the daemon closed the connection."""
    head = b""
    while len(head) < 4:
        chunk = s.recv(4 - len(head))
        if not chunk:
            return None
        head += chunk
    (n,) = struct.unpack(">I", head)
    body = b""
    while len(body) < n:
        chunk = s.recv(n - len(body))
        assert chunk, "connection closed inside a frame from the daemon"
        body += chunk
    return framing.decode_body(body)


def _check_answer(s: socket.socket, req_id) -> bool:
    """Read until the answer to req_id (skipping events); False if the daemon closed the connection.

    Every answer must be well formed, with a known error code; a frame-level
    error (id nil) must be followed by the close."""
    while True:
        msg = _read(s)
        if msg is None:
            return False
        if "event" in msg:
            continue
        assert set(msg) == ({"id", "ok", "result"} if msg["ok"] else {"id", "ok", "error"}), msg
        if not msg["ok"]:
            code = msg["error"]["code"]
            assert code in CODES, msg
            assert isinstance(msg["error"]["message"], str) and msg["error"]["message"]
            if code in ("bad_frame", "frame_too_large"):
                assert msg["id"] is None
                assert _read(s) is None, "the connection stays open after a bad frame"
                return False
        assert msg["id"] == req_id, (msg, req_id)
        return True


def _str_keys(value) -> bool:
    """Map keys are str at every depth (the framing rule); anything else is a bad frame."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _str_keys(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_str_keys(v) for v in value)
    return True


def _still_served(s: socket.socket) -> None:
    s.sendall(framing.encode({"op": "status", "id": 424242}))
    assert _check_answer(s, 424242)


# --- strategies ---

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                    st.text(max_size=40), st.binary(max_size=40))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=5)
                      | st.dictionaries(st.text(max_size=10), inner, max_size=5)
                      | st.dictionaries(st.integers(-5, 5), inner, min_size=1, max_size=2), max_leaves=20)
huge = st.sampled_from([b"x" * (MAX_FRAME - 200), "é" * (MAX_FRAME // 3), list(range(5000))])
# The daemon under fuzzing runs as root: where it would write (a stick, an export) is never an absolute path.
WRITES_TO = {"stick", "target"}
_TYPED = {str: st.text(max_size=40), int: st.one_of(st.integers(-3, 50), st.integers(-2**63, 2**64 - 1)),
          float: st.floats(allow_nan=False), bool: st.booleans(), bytes: st.binary(max_size=64),
          list: st.lists(values, max_size=5), dict: st.dictionaries(st.text(max_size=10), values, max_size=5)}


def _param_values(name: str, kinds: tuple[type, ...]):
    """Values of the declared types (to get past the checks into the handler), or anything."""
    typed = st.one_of(*(_TYPED[k] for k in kinds)) if kinds else st.nothing()
    drawn = st.one_of(typed, typed, values, huge)
    if name in WRITES_TO:
        return drawn.filter(lambda v: not (isinstance(v, str) and v.startswith("/")))
    return drawn


def _deep(n: int) -> bytes:
    return b"\x91" * n + b"\xc0"  # n nested one-element arrays


@settings(max_examples=1500 * SCALE, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.binary(max_size=200), hello=st.booleans())
def test_random_bytes(daemon, data, hello):
    _, path = daemon
    with _connect(path, hello) as s:
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)  # then the daemon sees the end: of a frame, or inside one
        while (msg := _read(s)) is not None:
            if not msg.get("ok"):
                assert msg["error"]["code"] in CODES, msg


@settings(max_examples=1500 * SCALE, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(value=st.one_of(values, st.integers(0, 3000).map(lambda n: ("deep", n))),
       length_delta=st.sampled_from([0, 0, 0, -1, 1, 1 << 20, -(1 << 31)]), hello=st.booleans())
def test_msgpack_values_and_wrong_lengths(daemon, value, length_delta, hello):
    _, path = daemon
    body = _deep(value[1]) if isinstance(value, tuple) else msgpack.packb(value, use_bin_type=True)
    length = max(0, min(len(body) + length_delta, 2**32 - 1))
    with _connect(path, hello) as s:
        s.sendall(struct.pack(">I", length) + body)
        if length != len(body):
            s.shutdown(socket.SHUT_WR)
        a_request = isinstance(value, dict) and length == len(body) and _str_keys(value)
        if not a_request:
            assert _check_answer(s, None) is False  # bad_frame or frame_too_large, then closed
            return
        # A map: answered (hello_required, bad_request, unknown_op ...), connection kept.
        req_id = value.get("id")
        valid_id = isinstance(req_id, int) and not isinstance(req_id, bool)
        assert _check_answer(s, req_id if valid_id and isinstance(value.get("op"), str) else
                             (req_id if valid_id else None))
        _still_served(s)


@settings(max_examples=2500 * SCALE, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_wrong_types_for_every_param_of_every_op(daemon, ops, data):
    _, path = daemon
    op = data.draw(st.sampled_from(sorted(ops)), label="op")
    declared = {name: param.kinds for name, param in ops[op].params.items()} | {"extra": ()}
    params = data.draw(st.fixed_dictionaries({}, optional={name: _param_values(name, kinds)
                                                           for name, kinds in declared.items()}), label="params")
    FUZZED.add(op)
    request = {"op": op, "id": 7, **params}
    body = msgpack.packb(request, use_bin_type=True)
    with _connect(path, hello=True) as s:
        s.sendall(struct.pack(">I", len(body)) + body)
        if len(body) > MAX_FRAME or not _str_keys(request):
            assert _check_answer(s, None) is False  # frame_too_large or bad_frame, closed
            return
        assert _check_answer(s, 7)
        _still_served(s)


def test_every_registered_op_was_fuzzed(daemon, ops):
    if not FUZZED:  # run on its own: fuzz first
        test_wrong_types_for_every_param_of_every_op(daemon, ops)
    assert FUZZED == set(ops)


@pytest.mark.long
def test_coverage_guided_fuzzing_with_atheris():
    pytest.importorskip("atheris", reason="atheris not installed: pip install -e '.[fuzz]'")
    script = os.path.join(os.path.dirname(__file__), "atheris_frames.py")
    run = subprocess.run([sys.executable, script, "-atheris_runs=2000000"], capture_output=True, text=True,
                         timeout=3600)
    assert run.returncode == 0, run.stderr[-3000:]
