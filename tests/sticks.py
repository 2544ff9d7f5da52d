"""Genuine signed exports made by the real till code, and the tools a forger would use on copies of them.

genuine(base) runs a daemon in-process for two tills (till-a: four days, till-b:
one) and exports every day with `export --to`. forge() writes a whole export
from frames of one's choosing, signed (day.close and manifest) by any key: what
someone with a PC and the format spec, but not the till's private key, can do.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged import config, identity
from edged.client import Client
from edged.daemon import Daemon
from edged.day import signing
from edged.journal import frame as fr

DAYS = ["2026-03-01", "2026-03-02", "2026-03-03", "2026-03-04"]


@dataclass
class Genuine:
    root: Path  # root/<till>/<YYYYMMDD>/EDGED/<till>/<YYYYMMDD>/
    keys: dict[str, str]  # till -> ed25519:<hex>

    def stick(self, till: str, day: str) -> Path:
        """The stick root holding this one export."""
        return self.root / till / day.replace("-", "")

    def export(self, till: str, day: str) -> Path:
        d = day.replace("-", "")
        return self.root / till / d / "EDGED" / till / d


def genuine(base: Path, short: Path) -> Genuine:
    keys = {}
    for till, days in (("till-a", DAYS), ("till-b", DAYS[:1])):
        state = short / till

        async def run() -> None:
            cfg = config.from_dict({"till_id": till, "numbering": {"receipt": {"first": 100, "last": 999}},
                                    "daemon": {"socket": str(short / "s.sock"), "state_dir": str(state)}})
            async with Daemon(cfg).parts():
                async with await Client.connect(str(short / "s.sock"), "pos") as c:
                    for n, day in enumerate(days):
                        for i in range(3 + n):
                            await c.request("append", records=[{"kind": "sale", "body": {
                                "day": day, "i": i, "total": f"{i + 1}0,00 EUR"}, "tx_id": f"{day}/{i}",
                                "number": "receipt"}])
                        await c.request("day_close", business_day=day)
                        stick = base / till / day.replace("-", "")
                        stick.mkdir(parents=True)
                        await c.request("export", business_day=day, target=str(stick))
        asyncio.run(run())
        keys[till] = identity.read_info(str(state))["public_key"]
    return Genuine(base, keys)


def new_key(epoch: int = 1) -> identity.Identity:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return identity.Identity(key, epoch, raw)


def frames(export: Path) -> tuple[bytes, list[fr.Record], list[bytes]]:
    """(segment header, records, frame bytes) of an export's journal.seg."""
    seg = (export / "journal.seg").read_bytes()
    pos, recs, raw = fr.SEG_HEAD_SIZE, [], []
    while pos < len(seg):
        rec = fr.decode(seg, pos, None)
        recs.append(rec)
        raw.append(seg[pos:pos + rec.size])
        pos += rec.size
    return seg[:fr.SEG_HEAD_SIZE], recs, raw


def manifest(export: Path) -> dict[str, Any]:
    return json.loads((export / "manifest.json").read_text())


def write_manifest(export: Path, m: dict[str, Any], key: identity.Identity | None = None) -> None:
    if key is not None:
        signing.sign_manifest(m, key)
    (export / "manifest.json").write_text(json.dumps(m, indent=1))


def refresh_files(export: Path, m: dict[str, Any]) -> None:
    for name in m["files"]:
        data = (export / name).read_bytes()
        m["files"][name] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def rechain(export: Path, edit: Callable[[list[fr.Record]], list[fr.Record]],
            key: identity.Identity | None = None, sign_day: bool = True, till: str | None = None) -> dict:
    """Rewrite journal.seg from edited records, re-chained from the same chain before; the day.close
    (last record) rebuilt to match and signed by `key` (or left with its old signature); the manifest
    fixed to match and signed by `key` (or left with its old signature). Returns the manifest."""
    head, recs, _ = frames(export)
    first, chain = fr.decode_segment_head(head)
    m = manifest(export)
    recs = edit(recs)
    out, counts = [], {}
    for rec in recs:
        body = rec.body
        if rec.kind == "day.close":
            body = dict(body, chain=chain, till_id=till or body["till_id"], last_seq=rec.seq - 1,
                        counts={k: v for k, v in counts.items()})
            if key is not None and sign_day:
                signing.sign_day(body, key)
            elif not sign_day:
                body.pop("signature", None)
        raw, chain = fr.encode(rec.seq, rec.ts, fr.payload_of(rec.kind, body, rec.tx_id, rec.counter, rec.number,
                                                             rec.tx_uid), rec.batch_first, rec.batch_last, chain)
        out.append(raw)
        counts[rec.kind] = counts.get(rec.kind, 0) + 1
    (export / "journal.seg").write_bytes(head + b"".join(out))
    m.update(chain_after=chain.hex(), counts=counts, last_seq=recs[-1].seq, day_close_seq=recs[-1].seq,
             till_id=till or m["till_id"])
    refresh_files(export, m)
    write_manifest(export, m, key)
    return m


def copy_export(src: Path, stick: Path, till: str | None = None) -> Path:
    """A copy of an export on a new stick (under EDGED/<till>/<YYYYMMDD>/)."""
    dst = stick / "EDGED" / (till or src.parent.name) / src.name
    shutil.copytree(src, dst, symlinks=True)
    return dst


def synthetic(stick: Path, key: identity.Identity, records: int, body_size: int = 100, till: str = "till-big",
              day: str = "2026-03-05") -> Path:
    """A signed export of `records` sales (and a day.close) written straight to disk in pieces, for the
    memory and speed figures: its size is whatever is asked, its signatures are `key`'s."""
    export = stick / "EDGED" / till / day.replace("-", "")
    export.mkdir(parents=True)
    chain = fr.GENESIS
    h = hashlib.sha256()
    head = fr.encode_segment_head(1, chain)
    size = len(head)
    h.update(head)
    pad = "x" * body_size
    with open(export / "journal.seg", "wb") as f:
        f.write(head)
        piece = []
        for seq in range(1, records + 1):
            payload = fr.payload_of("sale", {"i": seq, "pad": pad}, None, None, None)
            raw, chain = fr.encode(seq, 1_700_000_000_000_000 + seq, payload, seq, seq, chain)
            piece.append(raw)
            if len(piece) == 4096 or seq == records:
                blob = b"".join(piece)
                f.write(blob)
                h.update(blob)
                size += len(blob)
                piece = []
        body = {"business_day": day, "till_id": till, "first_seq": 1, "last_seq": records,
                "counts": {"sale": records}, "numbers": {}, "chain": chain, "closed_at": 1.0}
        signing.sign_day(body, key)
        raw, after = fr.encode(records + 1, 1_800_000_000_000_000, fr.payload_of(
            "day.close", body, f"day.close:{day}", None, None), records + 1, records + 1, chain)
        f.write(raw)
        h.update(raw)
        size += len(raw)
    m = {"format": "edged-export/3", "till_id": till, "business_day": day, "first_seq": 1,
         "last_seq": records + 1, "day_close_seq": records + 1, "chain_before": fr.GENESIS.hex(),
         "chain_after": after.hex(), "counts": {"sale": records, "day.close": 1}, "numbers": {},
         "exported_at": 1, "edged_version": "test", "files": {"journal.seg": {"size": size,
                                                                             "sha256": h.hexdigest()}}}
    write_manifest(export, m, key)
    return export
