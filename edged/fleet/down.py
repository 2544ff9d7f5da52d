"""The relay's downstream half: head office's outbox records into the till's journal, each once,
in order (docs/FLEET.md, "Head office talks back").

On every session the relay says how far it applied each channel (a hello); head office sends what
follows. Each record is appended to edged's journal with tx_id `ho:<channel>:<pos>`: edged refuses
a second record with the same tx_id of the same user, so a record sent again (after a lost ack, a
relay killed between the append and the ack, a lost positions file) is one record. Only once the
append is durable is the position saved and head office acknowledged. The POS app reads these
records as any others: a consumer subscribed to their kinds.

The positions file (STATE_DIR/down.json) only spares head office resends: when it is behind the
journal, the records come again and edged answers "duplicate".
"""
from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from . import wire

log = logging.getLogger("edged.fleet")
FILE = "down.json"
REQUEST_BYTES = 512 << 10
REQUEST_VALUES = 50_000
HELD = 1000  # records held for the ones before them (the window is 100 a channel: room for both)
Append = Callable[[list[dict[str, Any]]], Awaitable[list[dict[str, Any]]]]  # edged's `append` records -> results


class Refusal(Exception):
    """edged refused a record (its kind, its body): str() says why."""


def _spans(downs: list[wire.Down]) -> list[tuple[str, int, int]]:
    """Per channel, its first and last position (for the log)."""
    out: dict[str, tuple[int, int]] = {}
    for d in downs:
        lo, hi = out.get(d.channel, (d.pos, d.pos))
        out[d.channel] = (min(lo, d.pos), max(hi, d.pos))
    return [(c, lo, hi) for c, (lo, hi) in out.items()]


def tx_id(channel: str, pos: int) -> str:
    return f"ho:{channel}:{pos}"


class Downstream:
    """What this till applied of each channel, and how a message from head office is taken."""

    def __init__(self, till: str, state_dir: str | None) -> None:
        self.till = till
        self.path = Path(state_dir) / FILE if state_dir else None
        self.applied = {c: 0 for c in wire.CHANNELS}
        self.records = 0  # appended in this process (a resend edged called duplicate not counted)
        self.held: dict[tuple[str, int], wire.Down] = {}  # came before the records they follow
        self.waiting_since: float | None = None  # since when something is missing before what is held
        self._load()

    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            if data.get("till_id") != self.till:  # another till's file (a disk moved): start over, edged dedups
                log.warning("relay: %s is till %r's: head office sends this till's records again", self.path,
                            data.get("till_id"))
                return
            for c in wire.CHANNELS:
                if type(data.get(c)) is int and 0 <= data[c] < wire.MAX_POS:
                    self.applied[c] = data[c]
        except (OSError, ValueError, AttributeError) as e:
            log.warning("relay: %s unreadable (%s): head office sends its records again; the journal keeps each "
                        "once", self.path, e)

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump({"till_id": self.till, **self.applied}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def settled(self, down: dict[str, int]) -> None:
        """Head office's answer to a hello: each channel as far as this till acknowledged it (an
        ack is sent only after a durable append, so the journal has them even when this file was
        lost or behind)."""
        if any(down.get(c, 0) > self.applied[c] for c in wire.CHANNELS):
            for c in wire.CHANNELS:
                self.applied[c] = max(self.applied[c], down.get(c, 0))
            self._save()

    def hello(self) -> bytes:
        return wire.encode_hello(wire.Hello(self.till, dict(self.applied)))

    async def take(self, downs: list[wire.Down], append: Append) -> list[wire.DownAck]:
        """Messages as they came, applied where they follow what the till has: the acks to send.
        One whose `prev` is above what the till has waits here (HELD at most) for the records
        before it: two topics (the broadcast one, and the till's own while it catches up) and two
        head-office workers do not keep order between them; `waiting_since` says since when
        something is missing (the relay asks again with a hello when it stays missing)."""
        todo: list[wire.Down] = []
        acks: dict[str, wire.DownAck] = {}
        applied = dict(self.applied)
        for d in downs:
            if d.pos > applied[d.channel]:
                self.held[(d.channel, d.pos)] = d
            else:  # had it: its ack was lost, or it came twice
                acks.setdefault(d.channel, wire.DownAck(self.till, d.channel, applied[d.channel]))
        for key in sorted(self.held):
            d = self.held[key]
            if d.pos <= applied[d.channel]:
                del self.held[key]
            elif d.prev <= applied[d.channel]:
                todo.append(self.held.pop(key))
                applied[d.channel] = d.pos
        for key in sorted(self.held)[HELD:]:  # full: the furthest ahead go (they come again)
            del self.held[key]
        if not self.held:
            self.waiting_since = None
        elif self.waiting_since is None or todo:  # missing since now, or since the last progress
            self.waiting_since = time.monotonic()
        before = self.records
        refused = await self._append(todo, append)
        if todo:
            new = self.records - before
            log.info("relay: head office's records %s: %d appended, %d already in the journal, %d refused",
                     ", ".join(f"{c} {lo}..{hi}" for c, lo, hi in _spans(todo)), new, len(todo) - new - len(refused),
                     len(refused))
        out = [wire.DownAck(self.till, c, p, why) for (c, p), why in refused.items()]  # each says why
        for d in todo:
            # max: head office's answer to a hello (settled) may have moved it on meanwhile
            self.applied[d.channel] = max(self.applied[d.channel], d.pos)
            acks[d.channel] = wire.DownAck(self.till, d.channel, self.applied[d.channel])
        if todo:
            self._save()
        return out + list(acks.values())

    async def _append(self, todo: list[wire.Down], append: Append) -> dict[tuple[str, int], str]:
        """In requests of at most REQUEST_BYTES and REQUEST_VALUES (one fdatasync each, well inside
        edged's 1 MiB and 100,000 values a request); a request edged refuses is tried one record at
        a time: the offender is refused (head office is told why), the others are appended."""
        refused: dict[tuple[str, int], str] = {}
        chunk: list[dict[str, Any]] = []
        size = values = 0
        for d in todo:
            try:
                body, n = wire.body(d.body)
            except wire.WireError as e:
                refused[(d.channel, d.pos)] = str(e)
                continue
            if chunk and (size + len(d.body) > REQUEST_BYTES or values + n > REQUEST_VALUES):
                await self._request(chunk, append, refused)
                chunk, size, values = [], 0, 0
            chunk.append({"kind": d.kind, "body": body, "tx_id": tx_id(d.channel, d.pos),
                          "at": (d.channel, d.pos)})
            size, values = size + len(d.body), values + n
        if chunk:
            await self._request(chunk, append, refused)
        for (channel, pos), why in refused.items():
            log.error("relay: head office's %s record %d not appended: %s", channel, pos, why)
        return refused

    async def _request(self, chunk: list[dict[str, Any]], append: Append,
                       refused: dict[tuple[str, int], str]) -> None:
        records = [{k: v for k, v in r.items() if k != "at"} for r in chunk]
        try:
            self._count(await append(records))
            return
        except Refusal as e:
            if len(chunk) == 1:
                refused[chunk[0]["at"]] = str(e)
                return
        for r, one in zip(chunk, records):
            try:
                self._count(await append([one]))
            except Refusal as e:
                refused[r["at"]] = str(e)

    def _count(self, results: list[dict[str, Any]]) -> None:
        self.records += sum(1 for r in results if not r.get("duplicate"))
