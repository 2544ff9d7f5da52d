"""`edged demo`, step 14: the till's identity, and the day closed in step 13 signed by it.

The check is the one an independent verifier makes (day/signing.py): the day.close record and
the manifest on the stick against the public key `edged identity` prints, and a changed total
under the same signature refused.
"""
from __future__ import annotations

import json
import shutil

from .. import identity
from ..day.signing import day_problem, manifest_problem
from ..journal import frame as fr
from .tour_steps import DemoTill, step


def identity_steps(till: DemoTill) -> None:
    step(14, "the till's identity: the key that signs every closed day and export; "
             "head office enrolls it and imports only what it signed")
    till.cli("identity", "--config", "edged.toml", "--state-dir", "state")
    info = json.loads((till.state / identity.DIR / identity.INFO).read_text())
    public = identity.parse_public(info["public_key"])
    for manifest_path in sorted((till.root / "stick").rglob("manifest.json")):
        manifest = json.loads(manifest_path.read_text())
        data = (manifest_path.parent / "journal.seg").read_bytes()
        pos, close = fr.SEG_HEAD_SIZE, None
        while pos < len(data):  # the day.close record is the export's last
            close = fr.decode(data, pos, None)
            pos += close.size
        where = till.rel(str(manifest_path.parent))
        if close is None or close.kind != "day.close":
            print(f"  {where}: no day.close record (should not happen)")
            continue
        sig = close.body.get("signature") or {}
        print(f"  {where}: day.close seq {close.seq} signed by {sig.get('fingerprint')} (epoch {sig.get('epoch')}): "
              f"{day_problem(close.body, public) or 'signature good'}; manifest.json: "
              f"{manifest_problem(manifest, public) or 'signature good'}")
        counts = dict(close.body["counts"])
        counts["sale"] = counts.get("sale", 1) - 1
        lower = {**close.body, "counts": counts}
        print(f"  the same record with one sale fewer on it -> {day_problem(lower, public)}")
    print("  the private key stays in state/identity/ed25519.key (mode 0600, edged's user): never in the "
          "journal, an export or the log")
    if close is None:
        return
    # Head office enrolls the key once, then takes only what that key signed.
    till.cli("archive", "enroll", "head-office", close.body["till_id"], info["public_key"])
    altered = till.root / "altered-stick"
    shutil.copytree(till.root / "stick", altered)
    for manifest_path in altered.rglob("manifest.json"):
        doc = json.loads(manifest_path.read_text())
        doc["counts"]["sale"] = doc["counts"].get("sale", 1) - 1
        manifest_path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    till.cli("import", "altered-stick", "--archive", "head-office", note="a copy with one sale fewer in its manifest")
    till.cli("verify", "--archive", "head-office", "stick")
    till.cli("import", "stick", "--archive", "head-office")
    till.cli("import", "stick", "--archive", "head-office", note="the same stick again: nothing added")
    till.cli("archive", "status", "head-office")
