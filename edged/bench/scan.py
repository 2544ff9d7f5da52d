"""`edged bench scan`: from a scanner's last key event to the `scanner.scan` event at a client.

The daemon's parts run here with one keyboard-wedge scanner whose device is
a pipe fed with packed input_event structs (the same bytes the kernel
writes); a client on the unix socket watches `scanner`. Measured: from
writing the scan's last key event (the Enter) to the client holding the
event. Baseline from the same run: a `status` round trip on the same socket.
"""
from __future__ import annotations

import asyncio
import os
import time

from .. import config
from ..client import Client
from ..daemon import Daemon
from ..sim.wedge import packed, pipe_device, typing
from .common import p50_p99, pct, scratch


def _keys(code: str) -> tuple[bytes, bytes]:
    """The scan's key events, and its last one (Enter) apart, as the kernel packs them."""
    events = typing(code, "us", start=time.time(), gap=0.0)
    return packed(events[:-2]), packed(events[-2:])


async def measure(base: str, samples: int) -> tuple[list[float], list[float]]:
    dev, w = pipe_device("bench scanner")

    cfg = config.from_dict({"daemon": {"socket": os.path.join(base, "s.sock"), "state_dir": os.path.join(base, "st")},
                            "scanners": {"bench": {"device": "pipe:bench"}}})
    scan_lat, rtt = [], []
    async with Daemon(cfg, input_opener=lambda path: dev).parts():
        async with await Client.connect(cfg.daemon.socket, "bench-scan") as client:
            await client.request("watch", topics=["scanner"])
            for i in range(samples):
                body, enter = _keys(f"{4000000000000 + i}")
                os.write(w, body)
                await asyncio.sleep(0.002)  # the digits arrive first, as from a scanner
                t0 = time.perf_counter()
                os.write(w, enter)
                await client.next_event(5)
                scan_lat.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                await client.request("status")
                rtt.append(time.perf_counter() - t0)
    os.close(w)
    return scan_lat, rtt


def run(samples: int, where: str | None) -> int:
    with scratch(where) as base:
        lat, rtt = asyncio.run(measure(base, samples))
        print(f"edged bench scan ({samples} scans of 13 digits + Enter; {base})")
        print(f"  last key event -> scanner.scan at a client  {p50_p99(lat)}  (target p99 <= 5 ms)")
        print(f"  status round trip, same socket (baseline)   {p50_p99(rtt)}"
              f"  scan/status p50 = {pct(lat, 0.5) / pct(rtt, 0.5):.2f}")
        return 0
