"""Carrying closed days away: to a directory (`export` with a target), or to
the next USB stick.

A stick export: mount, write every pending day (export.write: temporary name,
fsyncs, rename), unmount — and only once the stick is unmounted is
`usb.safe_to_remove` announced and each day's `day.exported` journaled. Any
failure (stick pulled, full, read-only, I/O error, cannot unmount) publishes
`usb.export` failed with the reason and leaves the day pending for the next
stick. Days pending: those asked for (`export` without a target) and, with
`export.usb = "on_day_close"`, every closed day not exported yet, so the
request outlives a restart.
"""
from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any, Literal

from ..journal.service import Journal
from ..relay.protocol import Publish
from ..usb.mount import MountError
from ..usb.probe import Stick
from ..usb.sticks import Sticks
from . import export as ex
from .book import DayBook

log = logging.getLogger("edged.day")
# The states of a usb.export event, in the order an export goes through them (PROTOCOL.md).
ExportState = Literal["waiting", "started", "writing", "done", "failed"]
PROGRESS_EVERY = 0.25  # seconds between usb.export progress events


@dataclasses.dataclass
class Written:
    day: str
    export_id: str
    path: str
    manifest: dict[str, Any]
    device: str | None
    size: int  # every byte written, manifest.json too: what progress counted up to


class Carrier:
    def __init__(self, book: DayBook, journal: Journal, publish: Publish,
                 sticks: Sticks | None = None, on_day_close: bool = False) -> None:
        self.book, self.journal, self.publish = book, journal, publish
        self.sticks = sticks
        self.on_day_close = on_day_close
        self.requested: set[str] = set()
        # Called before each step (export.STEPS in the writer thread, then "unmount" on the loop):
        # the tests pull the stick here, at an exact point of the export.
        self.on_step: Callable[[str], None] = lambda step: None
        self._exports = 0
        self._serving = False
        if sticks is not None:
            sticks.on_insert = self.serve

    def pending(self) -> list[str]:
        auto = {d for d in self.book.closed if d not in self.book.exported} if self.on_day_close else set()
        return sorted(self.requested | auto)

    def request(self, day: str) -> list[str]:
        """Ask for day on the next stick (now, if one is in); the devices it goes to now."""
        self.requested.add(day)
        return self.kick(day)

    def kick(self, day: str) -> list[str]:
        if self.sticks is None:
            return []
        present = list(self.sticks.present.values())
        if not present:
            self.publish(_export_event("waiting", {"business_day": day}))
        for stick in present[:1]:
            self.sticks.spawn(self.serve(stick))
        return [s.device for s in present[:1]]

    async def serve(self, stick: Stick) -> None:
        """Write what is pending onto this stick: one mount, one unmount (after `safe_to_remove` the
        cashier may already be pulling it). Days still pending afterwards wait for the next stick."""
        if self._serving or self.sticks is None:
            return
        self._serving = True
        carried: list[str] = []
        try:
            if (days := self.pending()) and stick.device in self.sticks.present:
                carried = days
                await self._carry(stick, days)
        finally:
            self._serving = False
            for day in self.pending():  # asked for meanwhile, or failed: say so, so nobody waits unknowing
                if day not in carried:
                    self.publish(_export_event("waiting", {"business_day": day}))

    async def _carry(self, stick: Stick, days: list[str]) -> None:
        assert self.sticks is not None
        try:
            root = await self.sticks.mount(stick)
        except (MountError, OSError) as e:
            why = f"the stick was removed ({e})" if self.sticks.gone(stick.device) else str(e)
            for day in days:
                self._failed(self._next_id(day), day, f"cannot mount {stick.device}: {why}", stick.device)
            return
        written: list[Written] = []
        try:
            for day in days:
                try:
                    written.append(await self.write(day, root, stick.device))
                except ex.ExportError as e:  # pulled, full or broken: the rest waits for the next stick
                    for later in days[len(written) + 1:]:
                        self._failed(self._next_id(later), later, f"not written: {e}", stick.device)
                    break
        except Exception as e:  # never leave a stick mounted, nor a day without an outcome
            log.exception("export to %s failed", stick.device)
            for day in days[len(written):]:
                self._failed(self._next_id(day), day, f"internal error: {e}", stick.device)
        try:
            self.on_step("unmount")
            await self.sticks.unmount(stick)
        except (MountError, OSError) as e:
            for w in written:
                self._failed(w.export_id, w.day, f"not unmounted, so not counted as exported: {e}", stick.device)
            return
        for w in written:
            await self.mark(w)

    def _next_id(self, day: str) -> str:
        self._exports += 1
        return f"{day}.{self._exports}"

    def _failed(self, export_id: str, day: str, reason: str, device: str | None) -> None:
        log.warning("export of %s failed: %s", day, reason)
        self.publish(_export_event("failed", {"export_id": export_id, "business_day": day}, reason=reason,
                                   device=device))

    async def write(self, day: str, root: str, device: str | None = None) -> Written:
        """Write closed `day` under root (ExportError after a `failed` event)."""
        export_id = self._next_id(day)
        closed = self.book.closed[day]
        frames = await self.journal.frames(closed["first_seq"], closed["seq"])
        chain_before = await self.journal.chain_before(closed["first_seq"])
        files, manifest = ex.build(closed, frames, chain_before, frozenset(closed.get("excluded_kinds", ())),
                                  self.book.identity)
        loop = asyncio.get_running_loop()
        last = [0.0]
        base = {"export_id": export_id, "business_day": day, "device": device}

        def progress(done: int, total: int) -> None:  # worker thread
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or done == total:
                last[0] = now
                loop.call_soon_threadsafe(self.publish, _export_event("writing", base, bytes=done, total=total))
        self.publish(_export_event("started", base))
        try:
            path = await asyncio.to_thread(ex.write, root, closed["till_id"], day, files, manifest, progress,
                                           self.on_step)
        except ex.ExportError as e:
            reason = str(e)
            if device is not None and self.sticks is not None and self.sticks.gone(device) \
                    and not reason.startswith("the stick was removed"):
                # Pulled: the error is whatever the write met first. On real USB, udisks2 cleans up the
                # dead mount's directory, and that is often "No such file or directory".
                reason = f"the stick was removed or failed ({reason})"
            elif device is not None and self.sticks is not None and _read_only(root) \
                    and not self.sticks.write_protected(device):
                # The kernel set the filesystem read-only after an error (the call that met it
                # usually gets EIO, later ones EROFS) on a device that takes writes: torn.
                reason = ex.DAMAGED
            self._failed(export_id, day, reason, device)
            raise ex.ExportError(reason) from None
        return Written(day, export_id, path, manifest, device, ex.size(files, manifest))

    async def mark(self, w: Written) -> dict[str, Any]:
        """Journal `day.exported` for a written (and, for a stick, unmounted) export."""
        digest = hashlib.sha256(ex.manifest_bytes(w.manifest)).hexdigest()
        done = await self.book.mark_exported(w.day, {"path": w.path, "manifest_sha256": digest,
                                                     "first_seq": w.manifest["first_seq"],
                                                     "last_seq": w.manifest["last_seq"], "export_id": w.export_id,
                                                     "device": w.device})
        self.requested.discard(w.day)
        log.info("business day %s exported to %s (records %d..%d)", w.day, w.path, w.manifest["first_seq"],
                 w.manifest["last_seq"])
        self.publish(_export_event("done", {"export_id": w.export_id, "business_day": w.day}, path=w.path,
                                   device=w.device, bytes=w.size))
        return done


def _read_only(root: str) -> bool:
    try:
        return bool(os.statvfs(root).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _export_event(state: ExportState, which: dict[str, Any], **detail: Any) -> dict[str, Any]:
    """A usb.export event: which export, its state, then the detail (the order events show in)."""
    return {"event": "usb.export", **which, "state": state, **detail}
