"""`edged bench print`: receipt render time and request-to-first-byte latency at the printer.

Render: a 40-line receipt with a QR code and a logo, by edged (checks, code
page, layout, python-escpos), beside python-escpos alone printing the same
lines, QR and logo into a Dummy (the floor any python-escpos driver pays).
Latency: a real `edged run` process prints to the emulator running here;
from the `print` request leaving the client to the job's first byte arriving
at the printer. It includes two fdatasyncs (the job record, then `printing`)
and the status read before each job, so the append round trip of the same
daemon is measured beside it.
"""
from __future__ import annotations

import asyncio
import io
import os
import time
from typing import Any

from ..client import Client
from ..devices.printer import document  # first: loads python-escpos (devices/escpos_cache.py)

# isort: split
from escpos.printer import Dummy

from ..sim.printer import PrinterEmulator
from .common import edged_run, p50_p99, pct, scratch


def sample_receipt() -> dict[str, Any]:
    from PIL import Image, ImageDraw

    logo = Image.new("1", (384, 96), 1)
    ImageDraw.Draw(logo).ellipse((140, 4, 244, 92), outline=0, width=8)
    buf = io.BytesIO()
    logo.save(buf, "PNG")
    lines: list[dict[str, Any]] = [{"image": buf.getvalue()},
                                   {"text": "Bäckerei Müller", "align": "center", "size": "double"}]
    lines += [{"row": [f"Artikel {i:02d} Roggenbrot æøå", f"{i},50 €"]} for i in range(36)]
    lines += [{"rule": "="}, {"row": ["SUMME", "666,00 €"]}, {"qr": "https://example.test/r/3000001", "size": 4},
              {"cut": "partial"}]
    return {"blocks": lines}


def _bare(doc: dict[str, Any]) -> bytes:
    """The same receipt through python-escpos with no checks or layout: the baseline."""
    from PIL import Image

    out = Dummy()
    out.magic.force_encoding("CP858")
    for block in doc["blocks"]:
        if "row" in block:
            out.textln(f"{block['row'][0]:<34}{block['row'][1]:>8}")
        elif "text" in block:
            out.textln(block["text"])
        elif "qr" in block:
            out.qr(block["qr"], size=4, native=True)
        elif "image" in block:
            out.image(Image.open(io.BytesIO(block["image"])))
    out.cut()
    return out.output


def render_times(samples: int) -> tuple[list[float], list[float]]:
    import contextlib

    doc = document.check(sample_receipt())
    ours, bare = [], []
    for _ in range(samples):
        t0 = time.perf_counter()
        document.render(doc, dots=512)
        ours.append(time.perf_counter() - t0)
        with contextlib.redirect_stdout(io.StringIO()):  # python-escpos print()s about images
            t0 = time.perf_counter()
            _bare(doc)
            bare.append(time.perf_counter() - t0)
    return ours, bare


async def _jobs(client: Client, samples: int, arrived: list[float]) -> tuple[list[float], list[float], list[float]]:
    """Print `samples` one-line jobs, then append a record each: (request -> first byte at the printer,
    print acknowledged, append round trip)."""
    doc = {"blocks": [{"text": "bench"}, {"cut": "partial"}]}
    latencies: list[float] = []
    acks: list[float] = []
    appends: list[float] = []
    await client.request("watch", topics=["printer"])
    for i in range(samples):
        arrived.clear()
        t0 = time.perf_counter()
        await client.request("print", job_id=f"bench-{i}", document=doc)
        acks.append(time.perf_counter() - t0)
        while True:
            ev = await client.next_event(10)
            if ev.get("job_id") == f"bench-{i}" and ev["state"] == "done":
                break
        latencies.append(arrived[0] - t0)
        t0 = time.perf_counter()
        await client.request("append", records=[{"kind": "bench", "body": i}])
        appends.append(time.perf_counter() - t0)
    return latencies, acks, appends


async def first_byte(base: str, samples: int) -> tuple[list[float], list[float], list[float]]:
    emu = PrinterEmulator(use_pty=False)
    await emu.start()
    arrived: list[float] = []

    def tap(data: bytes) -> None:
        if data.replace(b"\x10\x04\x01", b"").replace(b"\x10\x04\x02", b"").replace(
                b"\x10\x04\x03", b"").replace(b"\x10\x04\x04", b""):  # not just status queries
            arrived.append(time.perf_counter())
    emu.tap = tap
    cfg = os.path.join(base, "bench.toml")
    with open(cfg, "w") as f:
        f.write(f'[printers.receipt]\nhost = "127.0.0.1"\nport = {emu.port}\n')
    sock = os.path.join(base, "s.sock")
    try:
        with edged_run(cfg, os.path.join(base, "state"), sock):
            client = None
            for _ in range(1500):
                try:
                    client = await Client.connect(sock, "bench-print")
                    break
                except OSError:
                    await asyncio.sleep(0.02)
            if client is None:
                raise SystemExit("edged bench print: the daemon did not start")
            async with client:
                return await _jobs(client, samples, arrived)
    finally:
        await emu.stop()


def run(samples: int, where: str | None) -> int:
    with scratch(where) as base:
        ours, bare = render_times(samples)
        print(f"edged bench print ({samples} samples each; {base})")
        print(f"  render a 40-line receipt with QR and logo  {p50_p99(ours)}  (target p50 <= 5 ms)")
        print(f"     python-escpos alone, same content       {p50_p99(bare)}"
              f"  edged/bare = {pct(ours, 0.5) / pct(bare, 0.5):.2f}")
        latencies, acks, appends = asyncio.run(first_byte(base, samples))
        print(f"  print request -> first byte at the printer {p50_p99(latencies)}  (target p99 <= 20 ms)")
        print(f"     print acknowledged (job journaled)      {p50_p99(acks)}")
        print(f"     append round trip, same daemon          {p50_p99(appends)}  first byte/append p50 = "
              f"{pct(latencies, 0.5) / pct(appends, 0.5):.1f}")
        return 0
