"""The daemon as a real process under load from several clients, SIGKILLed at random moments.

Every record any client got an ack for must be there after the restart,
byte-identical, and the chain must verify."""
from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys

from edged.client import Client, ClientError
from edged.journal.disk import RealDisk
from edged.journal.verify import read_all, verify
from edged.systemd import NotifyListener

KILLS = int(os.environ.get("EDGED_KILLS", "50"))


def test_sigkill_under_load_loses_no_acked_record(short_dir):
    rng = random.Random(7)
    cfg = short_dir / "edged.toml"
    cfg.write_text("[journal]\nsegment_size = 65536\n[numbering.receipt]\nfirst = 1\nlast = 100000000\n")
    sock = str(short_dir / "edged.sock")
    acked: dict[int, tuple] = {}
    numbers: dict[int, int] = {}
    env = {k: v for k, v in os.environ.items() if k not in ("WATCHDOG_USEC", "JOURNAL_STREAM")}

    async def load(client_no: int, round_no: int) -> None:
        try:
            client = await Client.connect(sock, f"load{client_no}")
        except OSError:
            return
        n = 0
        try:
            while True:
                n += 1
                body = {"c": client_no, "r": round_no, "n": n, "pad": "p" * rng.randint(0, 300)}
                tx = f"{round_no}-{client_no}-{n}"
                r = await client.request("append", records=[{"kind": "sale", "body": body, "tx_id": tx,
                                                             "number": "receipt"}])
                rec = r["records"][0]
                acked[rec["seq"]] = ("sale", body, tx)
                numbers[rec["seq"]] = rec["number"]
        except (ClientError, OSError, ConnectionError):
            pass
        finally:
            await client.close()

    for round_no in range(KILLS):
        notify_path = short_dir / f"n{round_no}"
        notify = NotifyListener(notify_path)
        proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", str(cfg),
                                 "--state-dir", str(short_dir / "state"), "--socket", sock],
                                env=dict(env, NOTIFY_SOCKET=str(notify_path)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            assert notify.wait_for("READY=1", 30), proc.stderr.read() if proc.poll() is not None else "no READY"

            async def round_() -> None:
                tasks = [asyncio.create_task(load(i, round_no)) for i in range(4)]
                await asyncio.sleep(rng.uniform(0.05, 0.3))
                proc.send_signal(signal.SIGKILL)
                await asyncio.gather(*tasks)
            asyncio.run(round_())
            proc.wait(10)
        finally:
            proc.kill()
            proc.wait()
            notify.sock.close()
            notify_path.unlink()
        sock_path = short_dir / "edged.sock"
        if sock_path.exists():
            pass  # a killed daemon leaves its socket; the next start must cope with it

    disk = RealDisk(str(short_dir / "state" / "journal"))
    report = verify(disk)
    assert report.ok, report.problems
    on_disk = {r.seq: (r.kind, r.body, r.tx_id) for r in read_all(disk)}
    assert len(acked) > KILLS  # the load really ran
    missing = [s for s in acked if on_disk.get(s) != acked[s]]
    assert missing == []
    assert sorted(on_disk) == list(range(1, max(on_disk) + 1))
    got = [r.number for r in read_all(disk)]
    assert got == list(range(1, len(got) + 1))  # receipt numbers gapless across every kill
