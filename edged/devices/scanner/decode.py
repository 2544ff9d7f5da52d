"""A scanned string -> the `scanner.scan` event's fields: code, symbology, gs1, valid.

AIM symbology identifiers (`]E0` EAN-13, `]E4` EAN-8, `]C1` GS1-128, `]Q1`
QR, `]d2` GS1 DataMatrix, ...) and GS1 element strings are interpreted by
the biip library; EAN/UPC check digits too. A code that fails a check is
reported with `valid: false`, never dropped: the POS decides.
"""
from __future__ import annotations

import re
from typing import Any

GS = "\x1d"
_AIM = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
_EAN_LENGTHS = (8, 12, 13)


def decode(raw: str) -> dict[str, Any]:
    """The event fields for one scan (`raw` as the scanner sent it, suffix removed)."""
    aim = raw[:3] if _AIM.match(raw) else None
    code = raw[3:] if aim else raw
    out: dict[str, Any] = {"code": code, "symbology": aim, "gs1": None, "valid": True}
    parser = _biip()
    try:
        parsed = parser.parse(raw)
    except parser.ParseError as e:  # nothing in it parses: plain data, e.g. CODE39 text
        if aim and aim[1] == "E":
            out["valid"] = False
            out["error"] = str(e)
        return out
    sym = parsed.symbology_identifier
    gs1_symbology = sym is not None and sym.gs1_symbology is not None and "EAN" not in sym.gs1_symbology.name \
        and "UPC" not in sym.gs1_symbology.name
    if (gs1_symbology or GS in code) and parsed.gs1_message is not None:
        out["gs1"] = {e.ai.ai: e.value for e in parsed.gs1_message.element_strings}
        errors = [e.gtin_error for e in parsed.gs1_message.element_strings if e.gtin_error]
        if errors:
            out["valid"], out["error"] = False, errors[0]
    elif gs1_symbology and parsed.gs1_message_error:
        out["valid"], out["error"] = False, parsed.gs1_message_error
    is_ean = (aim is not None and aim[1] == "E") or (aim is None and code.isdigit() and len(code) in _EAN_LENGTHS)
    if is_ean and parsed.gtin_error:
        out["valid"], out["error"] = False, parsed.gtin_error
    return out


def _biip() -> Any:
    # Not imported at edged's start: biip builds its GS1 prefix tables at import (0.8 s of a
    # restart in the till VM; tens of ms on a till), and a till restarted after a crash should be
    # selling again first. warm() loads it in a thread meanwhile.
    import biip

    return biip


def warm() -> None:
    """Load the GS1 parser now (the daemon calls this in a thread once scanners are configured,
    so the first scan does not wait for it on the event loop, and a broken one is said at start)."""
    _biip()
