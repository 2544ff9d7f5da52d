"""The day ops: `day_close`, `days`, `export` (PROTOCOL.md); the writing is carry.py's."""
from __future__ import annotations

from typing import Any

from ..relay import protocol as p
from ..relay.registry import Level, may, needs, op
from . import export as ex
from .book import DayBook, business_day
from .carry import Carrier


class DayOps:
    def __init__(self, book: DayBook, carrier: Carrier) -> None:
        self.book = book
        self.carrier = carrier

    @op("day_close", Level.PRIVILEGED, business_day=needs(str))
    async def op_day_close(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        day = business_day(p.param(params, "business_day", str))
        who = {"client": session.client, "pid": session.peer.pid, "uid": session.peer.uid}
        closed, existed = await self.book.close(day, who)
        if not existed and self.carrier.on_day_close:
            self.carrier.kick(day)  # onto the stick plugged in, or `waiting` for one
        return {**_public(closed), "duplicate": existed}

    @op("days", Level.ANY)
    async def op_days(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        pending = set(self.carrier.pending())
        return {"days": [{**_public(c), "exported": _exported(self.book.exported.get(d)), "pending": d in pending}
                         for d, c in sorted(self.book.closed.items())]}

    @op("export", Level.PRIVILEGED, business_day=needs(str), target=may(str))
    async def op_export(self, session: Any, params: dict[str, Any]) -> dict[str, Any]:
        day = business_day(p.param(params, "business_day", str))
        target = p.param(params, "target", str, required=False, default="usb")
        if day not in self.book.closed:
            raise p.RequestError(p.NOT_FOUND, f"business day {day} is not closed (close it first: day_close)")
        if target == "usb":
            if self.carrier.sticks is None:
                raise p.RequestError(p.DEVICE_UNAVAILABLE, "this till has no USB stick support running; "
                                                           "give a target directory")
            return {"business_day": day, "target": "usb", "queued": True, "stick": self.carrier.request(day)}
        if not target.startswith("/"):
            raise p.RequestError(p.BAD_REQUEST, "target: \"usb\" or an absolute directory path")
        try:
            w = await self.carrier.write(day, target)
        except ex.ExportError as e:
            raise p.RequestError(p.DEVICE_UNAVAILABLE, f"export of {day} failed: {e}") from None
        done = await self.carrier.mark(w)
        return {"export_id": w.export_id, "business_day": day, "target": target, "path": w.path,
                "first_seq": w.manifest["first_seq"], "last_seq": w.manifest["last_seq"], "exported_seq": done["seq"]}


def _public(closed: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in closed.items() if k not in ("pid", "uid")}
    out["chain"] = closed["chain"].hex() if isinstance(closed["chain"], bytes) else closed["chain"]
    sig = closed.get("signature")
    if isinstance(sig, dict) and isinstance(sig.get("ed25519"), bytes):  # hex like `chain`: JSON can carry it
        out["signature"] = {**sig, "ed25519": sig["ed25519"].hex()}
    return out


def _exported(body: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if body is None else {k: body[k] for k in ("path", "export_id", "seq") if k in body}
