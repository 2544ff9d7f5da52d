"""The technician's printer commands against a running daemon: print-test, print, jobs, reprint, drawer."""
from __future__ import annotations

import asyncio
import json
import os
import sys

from printing import SPECIALS, running_till


async def edged(till, *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    env = dict(os.environ, EDGED_SOCKET=till.daemon.cfg.daemon.socket)
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edged", *args, env=env,
                                                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(stdin), 60)
    return proc.returncode, out.decode(), err.decode()


def test_print_test_print_file_jobs_and_reprint(short_dir):
    from PIL import Image

    Image.new("1", (100, 30), 0).save(short_dir / "logo.png")
    (short_dir / "r.json").write_text(json.dumps({"blocks": [{"image": "logo.png"}, {"text": "Grüße €"},
                                                            {"cut": "full"}]}))

    async def scenario():
        async with running_till(short_dir) as till:
            code, out, err = await edged(till, "print-test")
            assert code == 0, err
            assert out.splitlines()[-1].endswith(": done")
            text = till.texts()[0]
            for piece in (SPECIALS, "PRINT TEST", "[BARCODE EAN13: 4006381333931]",
                          "[BARCODE CODE128: EDGED-TEST]", "[QR: edged print test t1]", "[IMAGE", "12,50 €"):
                assert piece in text, piece
            code, out, err = await edged(till, "print", str(short_dir / "r.json"), "--job-id", "file-1")
            assert code == 0 and "job file-1: done" in out, err
            assert "Grüße €" in till.texts()[1] and "[IMAGE 512x30]" in till.texts()[1]  # centred on the paper
            code, out, _ = await edged(till, "print", str(short_dir / "r.json"), "--job-id", "file-1")
            assert code == 0 and "exists already (done); not printed again" in out
            code, out, _ = await edged(till, "reprint", "file-1")
            assert code == 0 and "job file-1.copy1: done" in out
            code, out, _ = await edged(till, "jobs")
            lines = out.splitlines()
            assert lines[0].split() == ["JOB", "PRINTER", "STATE", "AGE", "DETAIL"]
            assert lines[2].split()[:3] == ["file-1", "receipt", "done"]
            assert lines[3].split()[:3] == ["file-1.copy1", "receipt", "done"] and "copy of file-1" in lines[3]
            assert len(till.emu.receipts) == 3
            (short_dir / "bad.json").write_text('{"blocks": [{"qr": "x", "size": 99}]}')
            code, _, err = await edged(till, "print", str(short_dir / "bad.json"))
            assert code == 1 and "blocks[0].size must be an integer 1..16" in err
            till.emu.set_state(cover_open=True)
            code, out, _ = await edged(till, "print-test", "--no-wait")
            assert code == 0
            code, out, _ = await edged(till, "jobs")
            assert "held" in out.splitlines()[-1] and "cover_open" in out.splitlines()[-1]
    asyncio.run(scenario())


def test_drawer_open_status_and_calibrate(short_dir):
    async def scenario():
        async with running_till(short_dir, drawer={"sensor": "none"}) as till:
            code, out, _ = await edged(till, "drawer", "status")
            assert code == 0 and out.strip() == "cash: unknown (no_sensor), on printer receipt, sensor none"
            code, out, err = await edged(till, "drawer", "calibrate", stdin=b"\n\n")
            assert code == 0, err
            assert "pin 3 shut: low, open: high" in out
            assert out.rstrip().endswith('[drawers.cash]\nsensor = "open_high"')
            till.emu.set_state(drawer_open=False)
            code, out, _ = await edged(till, "drawer", "open", "--reason", "float count")
            assert code == 0 and out.strip() == "drawer cash opened"
            bodies = [r.body for r in await till.daemon.till.journal.scan(1, ("drawer.open",))]
            assert [b["reason"] for b in bodies] == ["sensor calibration (edged drawer calibrate)", "float count"]
            assert all(b["client"] == "edged-cli" for b in bodies)
    asyncio.run(scenario())


def test_help_texts_explain_the_printer_commands():
    import subprocess

    for args, fragment in [(["print-test", "--help"], "text styles, the characters"),
                           (["print", "--help"], "PNG file"), (["jobs", "--help"], "unknown (sent, never confirmed"),
                           (["drawer", "calibrate", "--help"], "sensor = ..."), (["reprint", "--help"], "COPY")]:
        out = subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True).stdout
        assert fragment in " ".join(out.split()), (args, out)
