"""Exactly which bytes a till signs: a closed day's summary and an export's manifest.

Both are a context line and then canonical JSON: keys sorted by code point, no
spaces, ASCII only (everything else as \\u escapes), only strings, integers,
lists and objects (no floats: their text is not the same in every language).
docs/JOURNAL.md, "Signatures", gives the rules byte by byte; where every string
is printable ASCII they are RFC 8785 (JCS), but kinds may be any text, so a
verifier follows the rules, not a JCS library.

- day.close: the body's `signature` map holds the key's fingerprint and epoch
  and the Ed25519 signature over DAY_CONTEXT + canonical({business_day, till_id,
  first_seq, last_seq, counts, numbers, chain (hex: the chain head before the
  day.close record), excluded_kinds (sorted, [] when none), key (fingerprint),
  epoch}). The chain head commits to every record of the day and every day
  before it: no record can change, re-chained or not, without a new signature.
- manifest.json: `key` ({epoch, fingerprint, public_key}) is part of what is
  signed; `signature` (hex) is the Ed25519 signature over MANIFEST_CONTEXT +
  canonical(the manifest without `signature`).
"""
from __future__ import annotations

import json
from typing import Any

from .. import identity

DAY_CONTEXT = b"edged day.close signature 1\n"
MANIFEST_CONTEXT = b"edged export manifest signature 1\n"
_SUMMARY = ("business_day", "till_id", "first_seq", "last_seq", "counts", "numbers")


def canonical(value: Any) -> bytes:
    """RFC 8785 bytes for JSON made of str, int, list and dict; ValueError for anything else."""
    _no_floats(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _no_floats(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"key {k!r} is not a string")
            _no_floats(v)
    elif isinstance(value, list):
        for v in value:
            _no_floats(v)
    elif value is not None and not isinstance(value, (str, int)):  # bool is an int
        raise ValueError(f"{type(value).__name__} {value!r} cannot be signed (strings, integers, lists, maps only)")


def day_message(body: dict[str, Any]) -> bytes:
    """The bytes a day.close body's signature covers (KeyError/ValueError if the body lacks them)."""
    sig = body["signature"]
    summary = {k: body[k] for k in _SUMMARY}
    summary.update(chain=bytes(body["chain"]).hex(), excluded_kinds=sorted(body.get("excluded_kinds") or []),
                   key=sig["fingerprint"], epoch=sig["epoch"])
    return DAY_CONTEXT + canonical(summary)


def sign_day(body: dict[str, Any], ident: identity.Identity) -> None:
    """Add the signature map to a day.close body being built."""
    body["signature"] = {"fingerprint": ident.fingerprint, "epoch": ident.epoch, "ed25519": b""}
    body["signature"]["ed25519"] = ident.sign(day_message(body))


def day_problem(body: dict[str, Any], public: bytes) -> str | None:
    """Why this day.close body is not signed by this key (None: it is)."""
    sig = body.get("signature")
    if not isinstance(sig, dict):
        return "the day.close record is not signed"
    if sig.get("fingerprint") != identity.fingerprint(public):
        return (f"the day.close record is signed by key {str(sig.get('fingerprint'))[:40]}, "
                f"not {identity.fingerprint(public)}")
    try:
        message = day_message(body)
    except (KeyError, TypeError, ValueError) as e:
        return f"the day.close record cannot be checked ({type(e).__name__}: {e})"
    if not isinstance(sig.get("ed25519"), bytes) or not identity.verify(public, sig["ed25519"], message):
        return "the day.close signature does not match its records (changed after the day was closed)"
    return None


def manifest_message(manifest: dict[str, Any]) -> bytes:
    return MANIFEST_CONTEXT + canonical({k: v for k, v in manifest.items() if k != "signature"})


def sign_manifest(manifest: dict[str, Any], ident: identity.Identity) -> None:
    manifest["key"] = ident.describe()
    manifest["signature"] = ident.sign(manifest_message(manifest)).hex()


def manifest_problem(manifest: dict[str, Any], public: bytes) -> str | None:
    """Why this manifest is not signed by this key (None: it is)."""
    key, sig = manifest.get("key"), manifest.get("signature")
    if not isinstance(key, dict) or not isinstance(sig, str):
        return "manifest.json is not signed (no key or signature)"
    if key.get("public_key") != identity.public_text(public):
        return f"manifest.json is signed by key {str(key.get('fingerprint'))[:40]}, not {identity.fingerprint(public)}"
    try:
        raw = bytes.fromhex(sig)
        message = manifest_message(manifest)
    except ValueError as e:
        return f"manifest.json cannot be checked ({e})"
    if not identity.verify(public, raw, message):
        return "manifest.json's signature does not match it (changed after export)"
    return None
