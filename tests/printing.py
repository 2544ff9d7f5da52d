"""Helpers for the print job tests: the real daemon in-process against the emulator."""
from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged import config
from edged.client import Client
from edged.daemon import Daemon
from edged.sim.printer import PrinterEmulator

SPECIALS = "€ ä ö ü ß æ ø å Æ Ø Å"


async def until(cond: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def receipt_doc(marker: str, lines: int = 3, **extra: Any) -> dict[str, Any]:
    blocks = [{"text": marker, "bold": True}] + [{"row": [f"{marker} item {i}", f"{i},00 €"]}
                                                for i in range(lines)]
    return {"blocks": blocks + [{"cut": "full"}], **extra}


def printer_table(emu: PrinterEmulator, backend: str = "network", **over: Any) -> dict[str, Any]:
    table: dict[str, Any] = {"status_interval": 0.2, "timeout": 0.5, "confirm_timeout": 3.0}
    if backend == "network":
        table |= {"backend": "network", "host": "127.0.0.1", "port": emu.port}
    else:  # serial, or usblp: a pty stands in for /dev/usb/lp0
        table |= {"backend": backend, "device": emu.pty_path}
    return table | over


@dataclass
class Till:
    emu: PrinterEmulator
    daemon: Daemon
    client: Client
    events: list[dict]

    def texts(self) -> list[str]:
        return [r.text(42) for r in self.emu.receipts]

    async def job(self, job_id: str) -> dict[str, Any]:
        return await self.client.request("job", job_id=job_id)

    async def state_of(self, job_id: str, *states: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = await self.job(job_id)
            if job["state"] in states:
                return job
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job_id} is {job['state']} ({job}), expected {states}")
            await asyncio.sleep(0.02)

    def job_states(self, job_id: str) -> list[str]:
        return [e["state"] for e in self.events if e["event"] == "printer.job" and e["job_id"] == job_id]


def daemon_config(short_dir: Path, printer: dict[str, Any], drawer: dict[str, Any] | None = None) -> config.Config:
    data: dict[str, Any] = {"till_id": "t1", "daemon": {"socket": str(short_dir / "s.sock"),
                                                        "state_dir": str(short_dir / "state")},
                            "printers": {"receipt": printer}}
    if drawer is not None:
        data["drawers"] = {"cash": drawer}
    return config.from_dict(data)


@contextlib.asynccontextmanager
async def running_till(short_dir: Path, backend: str = "network", printer: dict[str, Any] | None = None,
                       drawer: dict[str, Any] | None = None, emu: PrinterEmulator | None = None,
                       ) -> AsyncIterator[Till]:
    own = emu is None
    if emu is None:
        emu = PrinterEmulator(use_pty=backend != "network")
        await emu.start()
    cfg = daemon_config(short_dir, printer_table(emu, backend, **(printer or {})), drawer)
    daemon = Daemon(cfg)
    try:
        async with daemon.parts():
            async with await Client.connect(cfg.daemon.socket, "pos") as client:
                events: list[dict] = []
                async with await Client.connect(cfg.daemon.socket, "watcher") as watcher:
                    await watcher.request("watch", topics=["printer", "drawer"])
                    collect = asyncio.create_task(_collect(watcher, events))
                    try:
                        yield Till(emu, daemon, client, events)
                    finally:
                        collect.cancel()
    finally:
        if own:
            await emu.stop()


async def _collect(watcher: Client, events: list[dict]) -> None:
    while True:
        events.append(await watcher.events.get())
