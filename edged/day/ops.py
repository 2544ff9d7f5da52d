"""The day ops: `day_close`, `days`, `export` (PROTOCOL.md), and the export flow around the writer."""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
from typing import Any, Callable

from ..journal.service import Journal
from ..relay import protocol as p
from . import export as ex
from .book import DayBook, business_day

log = logging.getLogger("edged.day")
PROGRESS_EVERY = 0.25  # seconds between usb.export progress events


class DayOps:
    def __init__(self, book: DayBook, journal: Journal, publish: Callable[[dict], int]) -> None:
        self.book = book
        self.journal = journal
        self.publish = publish
        self._exports = 0

    def handlers(self) -> dict[str, Any]:
        return {"day_close": self.op_day_close, "days": self.op_days, "export": self.op_export}

    async def op_day_close(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        day = business_day(p.param(params, "business_day", str))
        who = {"client": session.client, "pid": session.peer.pid, "uid": session.peer.uid}
        closed, existed = await self.book.close(day, who)
        return {**_public(closed), "duplicate": existed}

    async def op_days(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        return {"days": [{**_public(c), "exported": _exported(self.book.exported.get(d))}
                         for d, c in sorted(self.book.closed.items())]}

    async def op_export(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        day = business_day(p.param(params, "business_day", str))
        target = p.param(params, "target", str)
        if day not in self.book.closed:
            raise p.RequestError(p.NOT_FOUND, f"business day {day} is not closed (close it first: day_close)")
        if not target.startswith("/"):
            raise p.RequestError(p.BAD_REQUEST, "target: an absolute directory path")
        return await self.export(day, target)

    async def export(self, day: str, root: str) -> dict[str, Any]:
        """Write closed `day` under root; journal `day.exported` once it is durable.
        Failure: usb.export failed, the day stays as it was."""
        self._exports += 1
        export_id = f"{day}.{self._exports}"
        closed = self.book.closed[day]
        frames = await self.journal.frames(closed["first_seq"], closed["seq"])
        chain_before = await self.journal.chain_before(closed["first_seq"])
        files, manifest = ex.build(closed, frames, chain_before)
        loop = asyncio.get_running_loop()
        last = [0.0]

        def progress(done: int, total: int) -> None:  # worker thread
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or done == total:
                last[0] = now
                loop.call_soon_threadsafe(self.publish, {"event": "usb.export", "export_id": export_id,
                                                         "business_day": day, "state": "writing",
                                                         "bytes": done, "total": total})
        self.publish({"event": "usb.export", "export_id": export_id, "business_day": day, "state": "started"})
        try:
            path = await asyncio.to_thread(ex.write, root, closed["till_id"], day, files, manifest, progress)
        except ex.ExportError as e:
            log.warning("export of %s to %s failed: %s", day, root, e)
            self.publish({"event": "usb.export", "export_id": export_id, "business_day": day, "state": "failed",
                          "reason": str(e)})
            raise p.RequestError(p.DEVICE_UNAVAILABLE, f"export of {day} failed: {e}") from None
        digest = hashlib.sha256((json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()).hexdigest()
        done = await self.book.mark_exported(day, {"path": path, "manifest_sha256": digest,
                                                   "first_seq": manifest["first_seq"],
                                                   "last_seq": manifest["last_seq"], "export_id": export_id})
        log.info("business day %s exported to %s (records %d..%d)", day, path, manifest["first_seq"],
                 manifest["last_seq"])
        self.publish({"event": "usb.export", "export_id": export_id, "business_day": day, "state": "done",
                      "path": path, "bytes": manifest["files"]["journal.seg"]["size"]})
        return {"export_id": export_id, "business_day": day, "path": path, "first_seq": manifest["first_seq"],
                "last_seq": manifest["last_seq"], "exported_seq": done["seq"]}


def _public(closed: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in closed.items() if k not in ("pid", "uid")}
    out["chain"] = closed["chain"].hex() if isinstance(closed["chain"], bytes) else closed["chain"]
    return out


def _exported(body: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if body is None else {k: body[k] for k in ("path", "export_id", "seq") if k in body}
