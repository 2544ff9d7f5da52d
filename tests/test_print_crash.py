"""SIGKILL while a job is printing: after the restart that job is `unknown` and not printed again,
the jobs behind it print once each, and job_ids stay taken across the restart."""
from __future__ import annotations

import asyncio
import signal
import subprocess
import sys

from edged.client import Client
from edged.sim.printer import PrinterEmulator
from printing import receipt_doc, until


def _start(short_dir, port: int) -> subprocess.Popen:
    cfg = short_dir / "edged.toml"
    cfg.write_text(f'till_id = "t1"\n[printers.receipt]\nhost = "127.0.0.1"\nport = {port}\n'
                   'status_interval = 0.2\ntimeout = 0.5\nconfirm_timeout = 600\n')
    return subprocess.Popen([sys.executable, "-m", "edged", "run", "--config", str(cfg), "--state-dir",
                             str(short_dir / "state"), "--socket", str(short_dir / "s.sock")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _connect(short_dir) -> Client:
    for _ in range(500):
        try:
            return await Client.connect(str(short_dir / "s.sock"), "pos")
        except OSError:
            await asyncio.sleep(0.02)
    raise AssertionError("the daemon did not come up")


async def _state(client: Client, job_id: str, *states: str) -> dict:
    async def get():
        return await client.request("job", job_id=job_id)
    for _ in range(1000):
        job = await get()
        if job["state"] in states:
            return job
        await asyncio.sleep(0.02)
    raise AssertionError(f"{job_id}: {job}")


def test_sigkill_while_printing(short_dir):
    async def scenario():
        emu = PrinterEmulator(use_pty=False)
        await emu.start()
        proc = _start(short_dir, emu.port)
        try:
            async with await _connect(short_dir) as c:
                emu.set_state(mute=True)  # it prints, but never confirms: the job stays `printing`
                for job_id in ("k-1", "k-2", "k-3"):
                    await c.request("print", job_id=job_id, document=receipt_doc(job_id))
                await _state(c, "k-1", "printing")
                await until(lambda: len(emu.receipts) == 1, what="k-1 on paper")
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            emu.set_state(mute=False)
            proc = _start(short_dir, emu.port)
            async with await _connect(short_dir) as c:
                k1 = await _state(c, "k-1", "unknown")
                assert "edged stopped while the job was printing" in k1["error"]
                await _state(c, "k-2", "done")
                await _state(c, "k-3", "done")
                for job_id in ("k-1", "k-2"):  # the POS retries after the crash: nothing new prints
                    again = await c.request("print", job_id=job_id, document=receipt_doc(job_id))
                    assert again["duplicate"] is True
                await asyncio.sleep(0.5)
                firsts = [r.text().splitlines()[0] for r in emu.receipts]
                assert firsts == ["k-1", "k-2", "k-3"]
                await c.request("reprint", job_id="k-1")  # the cashier sees `unknown`, checks, reprints
                await _state(c, "k-1.copy1", "done")
                assert "*** COPY ***" in emu.receipts[-1].text() and len(emu.receipts) == 4
                jobs = (await c.request("jobs"))["jobs"]
                assert [(j["job_id"], j["state"]) for j in jobs] == [
                    ("k-1", "unknown"), ("k-2", "done"), ("k-3", "done"), ("k-1.copy1", "done")]
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            await emu.stop()
    asyncio.run(scenario())
