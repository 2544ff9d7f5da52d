"""`edged demo`, steps 2 to 8: a client says hello, reads status, watches the printer, prints a
receipt that opens the drawer, and the cashier scans. Every answer and event is shown as
`edged status` and `edged events` show them (cli/format.py): clock times, words, no reprs.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from ..client import Client
from . import format as fmt
from .status import device_lines, format_status


class DemoTill:
    """The simulated till's directory, the processes started in it, and how the demo is stopped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.socket = str(root / "edged.sock")
        self.state = root / "state"
        # What the daemon and the commands put in $TMPDIR goes with the demo's directory.
        self.env = dict(os.environ, TMPDIR=str(root / "tmp"))
        self._holding = False
        self._stop: int | None = None

    def on_stop(self, signum: int, frame: FrameType | None) -> None:
        """SIGTERM, SIGHUP, SIGINT: unwind, so the daemon is stopped and the directory removed. Not while
        held (see held())."""
        if self._holding:
            self._stop = signum
        elif signum == signal.SIGINT:
            raise KeyboardInterrupt
        else:
            raise SystemExit(128 + signum)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Stop signals wait meanwhile: while a process is started (one started but not yet known
        would be left running unowned), and while the daemon is stopped at the end."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def spawn(self, args: list[str], **kwargs: Any) -> subprocess.Popen:
        """Start a process in the demo's directory; the caller owns it (check_stop() once it does)."""
        with self.held():
            return subprocess.Popen(args, cwd=self.root, env=kwargs.pop("env", self.env), **kwargs)

    def check_stop(self) -> None:
        """A stop signal that came while a process was being started, acted on now."""
        if self._stop is not None:
            signum, self._stop = self._stop, None
            self.on_stop(signum, None)

    def rel(self, text: str) -> str:
        """Paths under the demo's directory as the commands are typed there: relative."""
        return text.replace(f"{self.root}/", "")

    def cli(self, *args: str, note: str = "") -> None:
        print("$ edged " + " ".join(args) + (f"   # {note}" if note else ""), flush=True)
        proc = self.spawn([sys.executable, "-m", "edged", *args])
        try:
            self.check_stop()
            proc.wait()
        finally:
            if proc.poll() is None:  # the demo was stopped meanwhile
                proc.kill()
                proc.wait()


def step(n: int, title: str) -> None:
    print(f"\n== {n}. {title}", flush=True)


def show_event(till: DemoTill, ev: dict[str, Any], said: str = "") -> None:
    """An event as `edged events` prints it; after what it means, if said."""
    shown = f"{said}: event {ev['event']}  {fmt.fields(ev, {'export_id'})}" if said else \
        f"event {fmt.event(ev, {'export_id'})}"
    print(f"  {till.rel(shown)}")


async def next_event(client: Client, name: str, timeout: float = 5) -> dict[str, Any]:
    while True:
        ev = await client.next_event(timeout)
        if ev["event"] == name:
            return ev


async def device_steps(client: Client, till: DemoTill) -> None:
    step(2, "connect as a client and say hello")
    hello = dict(client.server_info)
    hello["journal"] = fmt.seq_range(hello["journal"]["first_seq"], hello["journal"]["last_seq"])
    print("\n".join(fmt.key_values((k, fmt.value(k, v)) for k, v in hello.items())))
    step(3, "ask for status (what `edged status` prints)")
    _indented(format_status(await client.request("status")))
    step(4, "the printer runs out of paper: edged reads it from the printer (DLE EOT), "
            "and a client watching `printer` hears it at once (`edged events printer`)")
    async with await Client.connect(till.socket, client="demo-watcher") as watcher:
        watching = await watcher.request("watch", topics=["printer"])
        print(f"  a second client watches: {', '.join(watching['topics'])}")
        answer = await client.request("sim", set={"paper_out": True})
        print(f"  the simulated printer now: {', '.join(k for k, v in answer['state'].items() if v)}")
        show_event(till, await watcher.next_event(5))
        _indented("\n".join(device_lines(await client.request("status"))))
        step(5, "paper refilled")
        await client.request("sim", set={"paper_out": False})
        show_event(till, await watcher.next_event(5))
    _indented("\n".join(device_lines(await client.request("status"))))
    await _print_steps(client, till)
    await _scan_step(till)


def _indented(text: str) -> None:
    print("\n".join(f"  {line}".rstrip() for line in text.rstrip("\n").splitlines()))


SAMPLE = {"blocks": [
    {"text": "Bäckerei Müller", "align": "center", "size": "double", "bold": True},
    {"text": "Hauptstraße 1 · 12345 Musterstadt", "align": "center"},
    {"rule": "-"},
    {"row": ["Roggenbrot 750 g", "4,50 €"]}, {"row": ["Smørrebrød (æ ø å)", "3,20 €"]},
    {"row": ["Käsekuchen, ein Stück mit Sahne und Früchten der Saison", "3,80 €"]},
    {"rule": "="}, {"row": ["SUMME", "11,50 €"]}, {"text": "bar 20,00 €  zurück 8,50 €", "align": "right"},
    {"barcode": "4006381333931", "type": "EAN13"},
    {"qr": "https://example.test/r/3000001?sum=11,50", "size": 4},
    {"text": "Vielen Dank!", "align": "center"}, {"cut": "partial"}],
    "open_drawer": True}


def _job(job: dict[str, Any]) -> str:
    return f"job {job['job_id']} on {job['printer']}: {job['state']}"


async def _print_steps(client: Client, till: DemoTill) -> None:
    step(6, "the POS app prints a receipt that opens the drawer: journaled before the answer, "
            "done once the printer confirms it (GS r)")
    paper = till.state / "sim" / "receipt" / "00001.txt"
    async with await Client.connect(till.socket, client="demo-watcher") as watcher:
        await watcher.request("watch", topics=["printer", "drawer"])
        print(f"  print -> {_job(await client.request('print', job_id='sale-3000001', document=SAMPLE))}")
        while True:
            ev = await watcher.next_event(10)
            show_event(till, ev)
            if ev["event"] == "drawer.state":
                break
        again = await client.request("print", job_id="sale-3000001", document=SAMPLE)
        print(f"  the same job_id again (a retry) -> {_job(again)}"
              + (", a duplicate: not printed again" if again["duplicate"] else ""))
        print(f"\n  the simulated printer printed ({till.rel(str(paper))}):")
        for line in paper.read_text(encoding="utf-8").rstrip().splitlines():
            print(f"  | {line}".rstrip())
        step(7, "the cashier shuts the drawer; later a manager opens it (`edged drawer open`: privileged, "
                "journaled with the reason and who asked)")
        await client.request("sim", set={"drawer_open": False})
        show_event(till, await _drawer_event(watcher))
        answer = await client.request("drawer_open", reason="change for the float")
        print(f"  drawer_open -> drawer {answer['drawer']} kicked open at {fmt.clock(answer['opened_at'])}")
        show_event(till, await _drawer_event(watcher))
        await client.request("sim", set={"drawer_open": False})
        show_event(till, await _drawer_event(watcher))


async def _drawer_event(watcher: Client) -> dict[str, Any]:
    while True:
        ev = await watcher.next_event(10)
        if ev["event"].startswith("drawer."):
            return ev


async def _scan_step(till: DemoTill) -> None:
    step(8, "the cashier scans two items; the POS app hears them (`edged scan send CODE` feeds the "
            "simulated scanners)")
    async with await Client.connect(till.socket, client="demo-pos") as pos:
        await pos.request("watch", topics=["scanner"], kept=True)
        for code in ("]E04006381333931", "]C1010950600013435217211231\x1d10AB123"):
            await pos.request("sim", scan=code)
            show_event(till, await pos.next_event(10))
        print("  the keyboard-wedge scanner (programmed German, QWERTZ) types key codes; edged reads them "
              "with libxkbcommon's de layout:")
        await pos.request("sim", scan="Zoo@Straße-42", device="wedge")
        show_event(till, await pos.next_event(10))
        answer = await pos.request("scan_layouts", device="wedge", layouts=["us", "gb", "de", "fr", "no"])
        print("  a technician unsure of the setting runs `edged scan layouts`: the same keys under other layouts")
        rows = [(layout, fmt.text(read), "<- configured" if layout == answer["layout"] else "")
                for layout, read in answer["read_as"].items()]
        print("\n".join(fmt.table(rows, indent="    ")))
