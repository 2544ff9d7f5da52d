"""A journal whose fdatasync hangs for real (tests/hangdisk.py), seen from outside the daemon:
the waiting append is answered journal_unavailable, never ok, and systemd's watchdog stops
getting WATCHDOG=1, so systemd would restart edged."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from edged.client import BlockingClient, ClientError
from edged.systemd import NotifyListener
from hangdisk import HangingDisk

FLUSH_TIMEOUT = 1.0


def _start(short_dir, state, notify):
    cfg = short_dir / "edged.toml"
    cfg.write_text(f"[journal]\nflush_timeout = {FLUSH_TIMEOUT}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})  # a ping every 0.5 s
    return subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", str(cfg), "--state-dir", str(state),
                             "--socket", str(short_dir / "edged.sock")],
                            env=env, stdout=subprocess.DEVNULL, stderr=open(short_dir / "edged.log", "w"))


def _pings_after(notify: NotifyListener, mark: int) -> int:
    return notify.messages[mark:].count("WATCHDOG=1")


def test_a_hung_fdatasync_withholds_the_watchdog_and_answers_journal_unavailable(short_dir):
    sock = str(short_dir / "edged.sock")
    with HangingDisk(short_dir) as disk:
        notify = NotifyListener(short_dir / "notify")
        notify.read_always()
        proc = _start(short_dir, disk.mnt / "state", notify)
        try:
            assert notify.wait_for("READY=1", 30), (short_dir / "edged.log").read_text()
            assert notify.wait_for("WATCHDOG=1", 10)
            with BlockingClient.connect(sock, "pos") as pos:
                first = pos.request("append", records=[{"kind": "sale", "body": 1, "tx_id": "pos:1"}])
                assert first["records"][0]["seq"] == 1

                disk.hang()  # from now on every fdatasync on the journal's filesystem blocks
                with pytest.raises(ClientError) as refused:
                    pos.request("append", records=[{"kind": "sale", "body": 2, "tx_id": "pos:2"}])
                assert refused.value.code == "journal_unavailable"
                assert "flush_timeout" in refused.value.message

            # The loop stays free: status answers, and says why the journal refuses writes.
            with BlockingClient.connect(sock, "tech") as tech:
                journal = tech.request("status")["journal"]
                assert journal["state"] == "read_only" and "has not returned" in journal["problem"]
                assert journal["last_seq"] == 1  # the hung record was never acknowledged
                with pytest.raises(ClientError) as later:  # refused at once, not queued behind the hang
                    tech.request("append", records=[{"kind": "sale", "body": 3}])
                assert later.value.code == "journal_unavailable"

            # Pings sent before the refusal may still be on their way: look from a moment later.
            time.sleep(0.5)
            mark = len(notify.messages)
            notify.collect("never", timeout=3.0)  # six ping periods
            assert _pings_after(notify, mark) == 0, "the watchdog is still fed while the journal hangs"
            assert any(m.startswith("STATUS=") and "journal read_only" in m for m in notify.messages)

            disk.release()  # the flush returns; the journal stays read-only until restart
            mark = len(notify.messages)
            notify.collect("never", timeout=1.5)
            assert _pings_after(notify, mark) == 0
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            disk.release()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log = (short_dir / "edged.log").read_text()
        assert "withholding the systemd watchdog ping" in log and "part journal reports unhealthy" in log

        # After the restart systemd would do: serving again, and a retry with the tx_id is safe.
        notify2 = NotifyListener(short_dir / "notify2")
        notify2.read_always()
        proc = _start(short_dir, disk.mnt / "state", notify2)
        try:
            assert notify2.wait_for("WATCHDOG=1", 30)
            with BlockingClient.connect(sock, "pos") as pos:
                again = pos.request("append", records=[{"kind": "sale", "body": 2, "tx_id": "pos:2"}])
                # The hung flush did complete once released: the record is there, once.
                assert again["records"][0]["seq"] == 2
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
