"""Storage that lied about a flush: recovery finds fewer records than a consumer acked.
Seqs are never reused; the gap is journaled as journal.lost and reaches every consumer."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edged.client import BlockingClient
from edged.journal import frame as fr
from edged.journal import highwater
from edged.journal.disk import RealDisk
from edged.journal.store import Entry, Store
from edged.systemd import NotifyListener


class Daemon:
    def __init__(self, short_dir: Path) -> None:
        self.dir, self.sock, self.proc, self.runs = short_dir, str(short_dir / "edged.sock"), None, 0

    def start(self) -> None:
        self.runs += 1
        notify = NotifyListener(self.dir / f"notify{self.runs}")
        env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "JOURNAL_STREAM")}
        self.proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", os.devnull, "--state-dir",
                                      str(self.dir / "state"), "--socket", self.sock],
                                     env=dict(env, NOTIFY_SOCKET=notify.path), stderr=subprocess.DEVNULL)
        assert notify.wait_for("READY=1", 30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(30) == 0

    def client(self, name: str) -> BlockingClient:
        return BlockingClient.connect(self.sock, name, timeout=10)


def _cut_after(segment: Path, keep: int) -> None:
    """Truncate the segment right after record `keep`, as storage that dropped acked writes would."""
    data = segment.read_bytes()
    pos = fr.SEG_HEAD_SIZE
    while pos < len(data):
        rec = fr.decode(data, pos, None)
        pos += rec.size
        if rec.seq == keep:
            break
    with open(segment, "r+b") as f:
        f.truncate(pos)


def _records(c: BlockingClient, n: int) -> list[dict]:
    out = []
    while len(out) < n:
        event = c.next_event()
        if event.get("event") == "record":
            out.append(event)
    return out


@pytest.fixture
def daemon(short_dir):
    d = Daemon(short_dir)
    yield d
    if d.proc is not None and d.proc.poll() is None:
        d.proc.kill()
        d.proc.wait()


def test_a_lost_acked_tail_is_journaled_never_reused_and_reaches_every_consumer(daemon, short_dir):
    daemon.start()
    with daemon.client("pos") as pos:
        for n in range(1, 11):  # one batch each: the cut below leaves whole batches
            pos.request("append", records=[{"kind": "sale", "body": {"n": n}, "tx_id": f"pos:{n}"}])
    with daemon.client("ho") as ho:
        ho.request("subscribe", consumer="ho", **{"from": 1})
        assert [r["seq"] for r in _records(ho, 10)] == list(range(1, 11))
        ho.request("ack", consumer="ho", seq=8)
    with daemon.client("pos-orders") as orders:  # reads one kind only
        orders.request("subscribe", consumer="orders", **{"from": 1}, kinds=["order.web"])
    daemon.stop()

    segments = sorted((short_dir / "state" / "journal" / "segments").glob("*.seg"))
    _cut_after(segments[-1], 5)  # records 6..10 gone, though ho acked up to 8
    daemon.start()
    with daemon.client("tech") as tech:
        journal = tech.request("status")["journal"]
    top = 1 + highwater.STEP  # the first append moved the mark STEP seqs ahead
    assert journal["lost"] == [{"first_seq": 6, "last_seq": top}]
    assert journal["last_seq"] == top + 1 and journal["state"] == "ok"
    with daemon.client("pos") as pos:
        new = pos.request("append", records=[{"kind": "sale", "body": {"n": 6}, "tx_id": "pos:6"}])
        assert new["records"][0] == {"seq": top + 2, "duplicate": False}  # above every seq handed out
        lags = pos.request("consumers")["consumers"]
        assert lags["ho"] == {"acked": 8, "lag": 2, "owner": 0}  # the lost seqs are not records it owes

    with daemon.client("ho") as ho:
        ho.request("subscribe", consumer="ho", **{"from": "acked"})
        lost, after = _records(ho, 2)
        assert lost["seq"] == top + 1 and lost["kind"] == "journal.lost"
        assert lost["body"]["first_seq"] == 6 and lost["body"]["last_seq"] == top and lost["body"]["acked"] == 8
        assert after["seq"] == top + 2 and after["body"] == {"n": 6}
    with daemon.client("pos-orders") as orders:  # its kinds filter never hides a gap
        orders.request("subscribe", consumer="orders", **{"from": "acked"}, kinds=["order.web"])
        assert [(r["seq"], r["kind"]) for r in _records(orders, 1)] == [(top + 1, "journal.lost")]

    shown = subprocess.run([sys.executable, "-m", "edged", "status", "--socket", daemon.sock],
                           capture_output=True, text=True, timeout=60).stdout
    assert f"; LOST 6..{top}" in shown

    daemon.stop()  # a second start neither repeats the record nor forgets the gap
    daemon.start()
    with daemon.client("tech") as tech:
        journal = tech.request("status")["journal"]
        assert journal["last_seq"] == top + 2 and journal["lost"] == [{"first_seq": 6, "last_seq": top}]
    daemon.stop()
    verify = subprocess.run([sys.executable, "-m", "edged", "journal", "verify", "--state-dir",
                             str(short_dir / "state")], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"seqs 6..{top} journaled as lost" in verify.stdout


def test_a_torn_unacked_tail_is_cut_without_a_gap(short_dir):
    """The usual crash: the last batch never reached the disk whole and nobody acked it."""
    root = str(short_dir / "j")
    store = Store(RealDisk(root))
    store.open()
    for n in range(5):  # a batch each
        store.append([[Entry("sale", n)]])
    store.save_cursors({"ho": 3})
    store.close()
    seg = sorted(Path(root, "segments").glob("*.seg"))[-1]
    with open(seg, "r+b") as f:
        f.truncate(seg.stat().st_size - 10)  # seq 5's frame torn
    again = Store(RealDisk(root))
    again.open()
    assert again.last_seq == 4 and again.gaps() == [] and not again.problems
    assert again.append([[Entry("sale", "next")]])[0][0].seq == 5


def test_lost_records_with_nothing_left_and_a_crash_before_the_lost_record(short_dir):
    """Every record gone (the segment cut to its header), and a crash right after the new
    segment was made: the next start makes it again, exactly once."""
    root = str(short_dir / "j")
    store = Store(RealDisk(root))
    store.open()
    store.append([[Entry("sale", n)] for n in range(3)])
    store.save_cursors({"ho": 2})
    store.close()
    seg = sorted(Path(root, "segments").glob("*.seg"))[-1]
    with open(seg, "r+b") as f:
        f.truncate(fr.SEG_HEAD_SIZE)
    top = 3 + highwater.STEP
    # The crash: a header-only segment starting above the lost range, no journal.lost in it.
    Path(root, "segments", f"{top + 1:020d}.seg").write_bytes(fr.encode_segment_head(top + 1, fr.GENESIS))
    again = Store(RealDisk(root))
    again.open()
    assert not again.problems and again.gaps() == [(1, top)]
    records = list(again.records(1))
    assert [(r.seq, r.kind) for r in records] == [(top + 1, "journal.lost")]
    assert records[0].body["first_seq"] == 1 and records[0].body["last_seq"] == top
    again.close()
    third = Store(RealDisk(root))
    third.open()
    assert third.last_seq == top + 1 and third.gaps() == [(1, top)]


def test_a_damaged_high_water_mark_stops_startup_with_one_line(short_dir):
    journal = short_dir / "state" / "journal"
    journal.mkdir(parents=True)
    (journal / "highwater").write_bytes(b"\x82\xa8reserved\xa1x\xa7durable\x00")
    run = subprocess.run([sys.executable, "-m", "edged", "run", "--config", os.devnull, "--state-dir",
                          str(short_dir / "state"), "--socket", str(short_dir / "edged.sock")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"edged: {journal}/highwater holds reserved='x'") and "remove it" in last
