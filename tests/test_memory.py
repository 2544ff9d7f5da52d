"""Bounded memory per client: a hostile client's heaviest requests, sent to the real daemon,
grow its resident memory (VmRSS) by less than the bound docs/PROTOCOL.md documents."""
from __future__ import annotations

import os
import signal
import socket
import struct
import subprocess
import sys

import msgpack
import pytest

from edged.client import BlockingClient, ClientError
from edged.relay import framing
from edged.systemd import NotifyListener

BOUND = 64 << 20  # docs/PROTOCOL.md, "Limits"


def _rss(pid: int) -> int:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) << 10
    raise AssertionError("no VmRSS")


def _raw_append(body_bytes: bytes, tx_id: str | None = None) -> bytes:
    """An append request whose record body is `body_bytes`, already msgpack: frames no client
    library would build."""
    head = {"op": "append", "id": 2}
    record = msgpack.packb({"kind": "sale", **({"tx_id": tx_id} if tx_id else {})})
    # {"op", "id", "records": [ {kind, [tx_id], "body": <body_bytes>} ]}
    rec_map = bytes([record[0] + 1]) + record[1:] + msgpack.packb("body") + body_bytes
    body = bytes([0x80 + len(head) + 1]) + msgpack.packb(head)[1:] + msgpack.packb("records") + b"\x91" + rec_map
    return struct.pack(">I", len(body)) + body


def _array_of(n: int, item: bytes) -> bytes:
    return b"\xdd" + struct.pack(">I", n) + item * n


def _send(sock_path: str, frame: bytes) -> dict:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sock_path)
    try:
        s.sendall(framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "hostile"}) + frame)
        f = s.makefile("rb")
        answers = []
        for _ in range(2):
            (n,) = struct.unpack(">I", f.read(4))
            answers.append(msgpack.unpackb(f.read(n), raw=False))
        return answers[1]
    finally:
        s.close()


@pytest.fixture
def daemon(short_dir):
    notify = NotifyListener(short_dir / "notify")
    sock = str(short_dir / "edged.sock")
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "JOURNAL_STREAM")}
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", os.devnull, "--state-dir",
                             str(short_dir / "state"), "--socket", sock],
                            env=dict(env, NOTIFY_SOCKET=notify.path), stderr=subprocess.DEVNULL)
    try:
        assert notify.wait_for("READY=1", 30)
        yield proc, sock
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_a_hostile_clients_heaviest_requests_stay_under_the_memory_bound(daemon):
    proc, sock = daemon
    with BlockingClient.connect(sock, "warm-up") as c:  # idle size: after the first requests of each kind
        for i in range(50):
            c.request("append", records=[{"kind": "sale", "body": {"i": i, "pad": "x" * 100}, "tx_id": f"w{i}"}])
        c.request("status")
        c.request("subscribe", consumer="warm", **{"from": 1})
    idle = _rss(proc.pid)

    # The attack from the issue: 1 MiB bodies of ~1M empty arrays. Refused before decoding.
    for _ in range(12):
        answer = _send(sock, _raw_append(_array_of(1_040_000, b"\x90")))
        assert answer["ok"] is False and answer["error"]["code"] == "frame_too_large"
    # Just under the limit, accepted: each decodes to several MiB while it is appended.
    for i in range(12):
        answer = _send(sock, _raw_append(_array_of(99_000, b"\x80"), tx_id=f"maps-{i}"))
        assert answer["ok"] is True, answer
        answer = _send(sock, _raw_append(_array_of(33_000, b"\x81\xa0\x00"), tx_id=f"dicts-{i}"))
        assert answer["ok"] is True, answer
    # Near-max_frame bodies with the longest tx_ids: the record cache holds bytes, bounded.
    with BlockingClient.connect(sock, "big") as c:
        for i in range(40):
            c.request("append", records=[{"kind": "sale", "body": os.urandom(1000 << 10),
                                          "tx_id": f"{i:04d}" + "t" * 252}])
        with pytest.raises(ClientError) as long_tx:
            c.request("append", records=[{"kind": "sale", "body": 1, "tx_id": "t" * 257}])
        assert long_tx.value.code == "bad_request"
    # A subscriber that asks for everything and never reads: its queue is bounded.
    deaf = socket.socket(socket.AF_UNIX)
    deaf.connect(sock)
    deaf.sendall(framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "deaf"})
                 + framing.encode({"op": "subscribe", "id": 2, "consumer": "deaf", "from": 1, "window": 100_000}))
    try:
        with BlockingClient.connect(sock, "tech") as c:
            assert c.request("status")["journal"]["state"] == "ok"  # and still serving
        grown = _rss(proc.pid) - idle
        print(f"idle {idle >> 20} MiB, grown {grown / 2**20:.1f} MiB")
        assert grown < BOUND, f"RSS grew by {grown / 2**20:.0f} MiB (bound {BOUND >> 20} MiB)"
    finally:
        deaf.close()


def test_the_value_limit_counts_every_key_element_and_scalar():
    n = framing.MAX_VALUES - 3  # the map, its key, the array, then n elements
    at_limit = msgpack.packb({"a": [0] * n})
    assert len(framing.decode_body(at_limit)["a"]) == n
    with pytest.raises(framing.FrameError) as over:
        framing.decode_body(msgpack.packb({"a": [0] * (n + 1)}))
    assert over.value.code == "frame_too_large"
    # Few values in many bytes (a raw print, an image) cost one value each.
    assert framing.decode_body(msgpack.packb({"raw": os.urandom(1 << 20)}, use_bin_type=True))["raw"]
