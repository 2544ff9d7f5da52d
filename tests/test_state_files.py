"""A corrupted state file stops `edged run` with one line: the file, what is wrong, what to do."""
from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from edged import config
from edged.client import Client
from edged.daemon import Daemon

TOML = '[deadlines."order.web"]\nconsumer = "pos"\nwithin = 300\n'
REPORT = {"kind": "order.web", "seq": 1, "consumer": "pos", "due_at": 1.0, "overdue_seq": 2}


def _pack(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


# file, its content (None: a directory in its place), what the one line must say is wrong
CASES = [
    ("cursors", b"\xc1", "not readable as msgpack (FormatError)"),
    ("consumer-kinds", _pack({"pos": ["order.web"]}) + b"\x00", "not readable as msgpack (ExtraData: unpack(b) received extra data.)"),
    ("cursors", _pack({"head-office": "12"}), "cursors['head-office'] is str, not an integer"),
    ("cursors", _pack({"head-office": -3}), "cursors['head-office'] is -3, below 0"),
    ("cursors", _pack([1, 2]), "cursors is list, not a map"),
    ("checkpoint", b"", "not readable as msgpack (empty)"),
    ("checkpoint", _pack({"first_seq": 1, "counters": {}, "sealed": [{"name": "x.seg"}]}),
     "checkpoint.sealed[0].first_seq is missing"),
    ("consumer-kinds", _pack({"pos": "order.web"}), "consumer-kinds['pos'] is str, not a list"),
    ("deadlines", _pack({"seq": 0, "reported": {"1": REPORT}}), "deadlines.reported key '1' is str, not an integer"),
    ("deadlines", _pack({"seq": 0, "reported": {1: {**REPORT, "due_at": None}}}),
     "deadlines.reported[1].due_at is nil, not a number"),
    ("print-jobs", _pack({"from_seq": "7"}), "print-jobs.from_seq is str, not an integer"),
    ("days", _pack({"closed": {"2026-11-19": {"business_day": "2026-11-19"}}, "exported": {}, "from_seq": 1}),
     "days.closed['2026-11-19'].till_id is missing"),
    ("days", _pack({"closed": {}, "exported": {}}), "days.from_seq is missing"),
    ("days", None, "cannot be read (Is a directory)"),
    ("segments/notes.seg", b"hello", "not a segment name edged writes (20 digits, then .seg)"),
]


@pytest.fixture(scope="module")
def used_state(tmp_path_factory):
    """A state directory a daemon has used: cursors, consumer kinds, a closed day, deadlines."""
    d = Path(tmp_path_factory.mktemp("used"))
    short = Path(os.path.join("/tmp", f"edged-sf-{os.getpid()}"))
    short.mkdir(exist_ok=True)
    cfg = config.from_dict({"till_id": "till-1", "deadlines": {"order.web": {"consumer": "pos", "within": 300}},
                            "daemon": {"socket": str(short / "s.sock"), "state_dir": str(d / "st")}})

    async def use():
        async with Daemon(cfg, simulate=True).parts():
            async with await Client.connect(str(short / "s.sock"), "pos") as c:
                await c.request("subscribe", consumer="pos", kinds=["order.web"], **{"from": 1})
                await c.request("append", records=[{"kind": "order.web", "body": {"o": 1}}])
                await c.request("ack", consumer="pos", seq=1)
                await c.request("day_close", business_day="2026-11-19")
    asyncio.run(use())
    shutil.rmtree(short, ignore_errors=True)
    names = set(os.listdir(d / "st" / "journal"))
    assert {"cursors", "checkpoint", "consumer-kinds", "days"} <= names, names
    return d / "st"


@pytest.mark.parametrize("name,content,problem", CASES, ids=[f"{c[0]}:{c[2][:40]}" for c in CASES])
def test_a_corrupted_state_file_stops_the_start_with_one_line(used_state, short_dir, name, content, problem):
    state = short_dir / "st"
    shutil.copytree(used_state, state)
    target = state / "journal" / name
    target.unlink(missing_ok=True)
    if content is None:
        target.mkdir()
    else:
        target.write_bytes(content)
    (short_dir / "edged.toml").write_text(TOML)
    run = subprocess.run([sys.executable, "-m", "edged", "run", "--simulate", "--config", str(short_dir / "edged.toml"),
                          "--state-dir", str(state), "--socket", str(short_dir / "s.sock")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith(f"edged: {target}: {problem}; "), last
    assert any(what in last for what in ("remove it", "restore it", "move it out"))
    assert sum(str(target) in line for line in run.stderr.splitlines()) == 1  # said once
    assert not (short_dir / "s.sock").exists()  # never served
