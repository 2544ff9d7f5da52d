"""The reference receipt and the bytes edged must send for it (tests/fixtures/golden/).

A change in rendering (python-escpos, a profile, document.py) changes what reaches every
printer; the golden test makes that a deliberate change: regenerate with
`PYTHONPATH=. python tests/golden.py --write`, look at the diff (`--show` decodes it), commit
it with the reason. The VM test prints REFERENCE_DOC through a USB printer gadget and checks
that the job bytes arrive exactly (tests/fixtures/golden/README.md says what else travels).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from edged import config
from edged.devices.printer import document

GOLDEN_DIR = Path(__file__).parent / "fixtures" / "golden"

# Every kind of block a till prints daily: a centered bold double-size title, accented text and
# the euro sign (code page PC858), rows, a rule, both barcode kinds, a QR code, feed and cut.
REFERENCE_DOC: dict[str, Any] = {"blocks": [
    {"text": "Bäckerei Müller", "align": "center", "bold": True, "size": "double"},
    {"text": "Hauptstraße 1, 12345 Musterstadt", "align": "center"},
    {"rule": "="},
    {"row": ["Brötchen x 4", "1,60 €"]},
    {"row": ["Roggenbrot 750 g, frisch aus dem Ofen vom Bäcker nebenan", "4,50 €"]},
    {"rule": "-"},
    {"row": ["Summe", "6,10 €"]},
    {"text": "Bon 3000042 · Kasse 3", "underline": True},
    {"barcode": "4006381333931", "type": "EAN13"},
    {"barcode": "TX-3000042", "type": "CODE128", "hri": False},
    {"qr": "https://example.test/r/3000042?sum=6,10", "size": 6},
    {"text": "Danke!", "align": "right"},
    {"feed": 2},
    {"cut": "full"},
]}

# The printer the golden bytes are for: python-escpos profile "default", 80 mm paper, code page PC858.
SETTINGS = config.PrinterSettings(backend="usb", vendor_id=0x0416, product_id=0x5011, profile="default",
                                  paper_width=80, codepage="PC858")


def expected_path(name: str = "receipt-80mm") -> Path:
    """The committed bytes for the reference receipt."""
    return GOLDEN_DIR / f"{name}.bin"


def render_reference() -> bytes:
    """What edged renders for REFERENCE_DOC today (the spooler's own rendering call)."""
    return document.render_for(SETTINGS, document.check(REFERENCE_DOC))


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        expected_path().write_bytes(render_reference())
        print(f"wrote {expected_path()}: review the diff and say why in the commit")
        return 0
    if argv == ["--show"]:
        print(render_reference().decode("latin-1").encode("unicode_escape").decode())
        return 0
    print("usage: PYTHONPATH=. python tests/golden.py --write | --show", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
