"""Reading an export's manifest.json as hostile input: strict JSON, then a strict shape.

A stick passes through a shop, so anything can be in it. The JSON is refused
when it repeats a key (two parsers could take different values), holds NaN or
Infinity, a number of more than 18 digits, or nesting deeper than Python's
parser allows; then every field the checks rely on must have its type and
range (ints where ints are due, hex of the right length, plain file names), so
no later step meets a value it did not expect. One ManifestError, one line.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from .. import identity
from ..journal.shapes import DATE, STR, Int, ListOf, Map, MapOf, Shape, _shown
from .export import FORMAT, FORMAT_EXCLUDED, FORMAT_SIGNED

FORMATS = (FORMAT, FORMAT_EXCLUDED, FORMAT_SIGNED)
UNSIGNED = (FORMAT, FORMAT_EXCLUDED)  # written before tills signed their days
MAX_BYTES = 1 << 20
MAX_FILES = 16
MAX_DIGITS = 18  # below 2**63: every seq and size fits SQLite's integer


class ManifestError(Exception):
    """manifest.json cannot be used; str() is the one line that says why."""


@dataclass(frozen=True)
class Hex(Shape):
    size: int  # in bytes

    def problem(self, value: Any, where: str) -> str | None:
        if isinstance(value, str) and len(value) == 2 * self.size and re.fullmatch(r"[0-9a-f]*", value):
            return None
        return f"{where} is {_shown(value)}, not {2 * self.size} lowercase hex digits"


@dataclass(frozen=True)
class Id(Shape):
    """A till id or a kind: printable text of a sensible length."""

    def problem(self, value: Any, where: str) -> str | None:
        if isinstance(value, str) and 0 < len(value) <= 128 and value.isprintable():
            return None
        return f"{where} is {_shown(value)}, not a printable name of 1 to 128 characters"


@dataclass(frozen=True)
class FileName(Shape):
    """A plain file name inside the export directory: no path, nothing hidden, no . or .."""

    def problem(self, value: Any, where: str) -> str | None:
        if (isinstance(value, str) and 0 < len(value) <= 255 and "/" not in value and "\0" not in value
                and not value.startswith(".") and value.isprintable()):
            return None
        return f"{where}: {_shown(value)} is not a plain file name inside the export directory"


class Anything(Shape):
    def problem(self, value: Any, where: str) -> str | None:
        return None


POS, COUNT, HEX32 = Int(1), Int(0), Hex(32)
_FILE = Map({"size": COUNT, "sha256": HEX32})
SHAPE = Map({"format": STR, "till_id": Id(), "business_day": DATE, "first_seq": POS, "last_seq": POS,
             "day_close_seq": POS, "chain_before": HEX32, "chain_after": HEX32, "counts": MapOf(Id(), COUNT),
             "files": MapOf(FileName(), _FILE)},
            {"numbers": MapOf(STR, ListOf(Int(), 2)), "edged_version": STR,
             "excluded": Map({"kinds": ListOf(Id()), "counts": MapOf(Id(), COUNT),
                              "runs": ListOf(ListOf(Anything(), 3))})})
_RUN = (POS, POS, HEX32)
_KEY = Map({"epoch": POS, "fingerprint": STR, "public_key": STR})


def parse(raw: bytes) -> dict[str, Any]:
    """The manifest, checked; ManifestError naming the first thing wrong."""
    try:
        value = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant,
                           parse_int=_int, parse_float=_float)
    except RecursionError:
        raise ManifestError("manifest.json: nested too deeply") from None
    except UnicodeDecodeError:
        raise ManifestError("manifest.json: not UTF-8 text") from None
    except ValueError as e:  # JSONDecodeError too
        raise ManifestError(f"manifest.json: {e}") from None
    if not isinstance(value, dict):
        raise ManifestError(f"manifest.json: a {type(value).__name__}, not a JSON object")
    fmt = value.get("format")
    if fmt not in FORMATS:
        raise ManifestError(f"manifest.json: format is {_shown(fmt)}, not one of {', '.join(FORMATS)}")
    why = SHAPE.problem(value, "manifest")
    if why is None and fmt == FORMAT_SIGNED:
        why = _KEY.problem(value.get("key"), "manifest.key") or Hex(64).problem(value.get("signature"),
                                                                                   "manifest.signature")
    if why is None:
        why = _exported_at(value) or _consistent(value) or _bounded(value)
    if why is not None:
        raise ManifestError(why)
    return value


_KNOWN = {"format", "till_id", "business_day", "first_seq", "last_seq", "day_close_seq", "chain_before",
          "chain_after", "counts", "files", "numbers", "edged_version", "excluded", "exported_at", "key",
          "signature"}
# Far above any real day (a few dozen kinds, one run per block of left-out records), low enough that
# the manifests held for a whole stick stay small once parsed (docs/JOURNAL.md, "Days and exports").
LIMITS = {"counts": 4096, "numbers": 1024, "excluded.kinds": 1024, "excluded.counts": 4096, "excluded.runs": 20000}


def _bounded(m: dict[str, Any]) -> str | None:
    unknown = sorted(set(m) - _KNOWN)
    if unknown:
        return f"manifest: unknown member {_shown(unknown[0])}"
    ex = m.get("excluded") or {}
    sizes = {"counts": m["counts"], "numbers": m.get("numbers", {}), "excluded.kinds": ex.get("kinds", []),
             "excluded.counts": ex.get("counts", {}), "excluded.runs": ex.get("runs", [])}
    for name, value in sizes.items():
        if len(value) > LIMITS[name]:
            return f"manifest.{name}: {len(value)} entries, at most {LIMITS[name]}"
    return None


def _exported_at(m: dict[str, Any]) -> str | None:
    t = m.get("exported_at")
    if m["format"] == FORMAT_SIGNED:  # an int since signing: a float's text differs between languages
        return Int(0).problem(t, "manifest.exported_at")
    if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float))):
        return f"manifest.exported_at is {_shown(t)}, not a number"
    return None


def _consistent(m: dict[str, Any]) -> str | None:
    if m["last_seq"] < m["first_seq"] or m["day_close_seq"] != m["last_seq"]:
        return (f"manifest: seqs first {m['first_seq']}, last {m['last_seq']}, day close {m['day_close_seq']} "
                "do not make a day ending in its day.close")
    if "journal.seg" not in m["files"] or len(m["files"]) > MAX_FILES:
        return f"manifest.files must name journal.seg and at most {MAX_FILES} files"
    excluded = m.get("excluded")
    if (m["format"] == FORMAT_EXCLUDED) != (excluded is not None) and m["format"] != FORMAT_SIGNED:
        return f"manifest: format {m['format']} and 'excluded' do not go together"
    if excluded is not None:
        for i, run in enumerate(excluded["runs"]):
            for j, shape in enumerate(_RUN):
                if (why := shape.problem(run[j], f"manifest.excluded.runs[{i}][{j}]")) is not None:
                    return why
    if m["format"] == FORMAT_SIGNED:
        key = m["key"]
        try:
            raw = identity.parse_public(key["public_key"])
        except ValueError as e:
            return f"manifest.key: {e}"
        if key["fingerprint"] != identity.fingerprint(raw):
            return "manifest.key: its fingerprint is not its public key's"
    return None


def public_key(m: dict[str, Any]) -> bytes:
    """The raw public key a signed manifest names (parse() checked it)."""
    return identity.parse_public(m["key"]["public_key"])


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {_shown(k)} appears twice in one object")
        out[k] = v
    return out


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"number {text[:24]} is out of range")
    return value


def _int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_DIGITS:
        raise ValueError(f"number {text[:24]}... has more than {MAX_DIGITS} digits")
    return int(text)
