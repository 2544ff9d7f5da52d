"""Golden bytes: the reference receipt (tests/golden.py) renders to exactly the committed bytes, so a
change in what reaches printers is a deliberate one; and those bytes read back, through the
emulator's parser, as the receipt meant."""
from __future__ import annotations

from edged.sim.escpos_codec import next_command
from edged.sim.paper import Paper, Receipt
from golden import REFERENCE_DOC, expected_path, render_reference


def test_the_reference_receipt_renders_to_the_committed_bytes():
    expected, rendered = expected_path().read_bytes(), render_reference()
    if rendered != expected:
        at = next((i for i, (a, b) in enumerate(zip(expected, rendered)) if a != b), min(len(expected), len(rendered)))
        raise AssertionError(
            f"the reference receipt renders differently from {expected_path().name} from byte {at} on "
            f"(committed {expected[at:at + 24]!r}, now {rendered[at:at + 24]!r}; {len(expected)} vs {len(rendered)} "
            "bytes). If the change is meant: PYTHONPATH=. python tests/golden.py --write, and say why in the commit")


def test_the_committed_bytes_are_the_receipt_meant():
    receipts: list[Receipt] = []
    paper = Paper(receipts.append)
    data, pos = expected_path().read_bytes(), 0
    while pos < len(data):
        found = next_command(data, pos)
        assert found is not None, f"the golden bytes end inside a command at byte {pos}"
        cmd, pos = found
        paper.execute(cmd)
        paper.after(cmd)
    assert paper.unknown == [] and len(receipts) == 1 and receipts[0].cut == "full"
    printed = [(line.text, line.align, line.bold, line.underline, line.width) for line in receipts[0].lines]
    qr = REFERENCE_DOC["blocks"][10]["qr"]
    assert printed[:13] == [
        ("Bäckerei Müller", "center", True, False, 2),
        ("Hauptstraße 1, 12345 Musterstadt", "center", False, False, 1),
        ("=" * 42, "left", False, False, 1),
        ("Brötchen x 4                        1,60 €", "left", False, False, 1),
        ("Roggenbrot 750 g, frisch aus dem Ofen vom", "left", False, False, 1),
        ("Bäcker nebenan                      4,50 €", "left", False, False, 1),
        ("-" * 42, "left", False, False, 1),
        ("Summe                               6,10 €", "left", False, False, 1),
        ("Bon 3000042 · Kasse 3", "left", False, True, 1),
        ("[BARCODE EAN13: 4006381333931]", "center", False, False, 1),
        ("[BARCODE CODE128: TX-3000042]", "center", False, False, 1),
        (f"[QR: {qr}]", "center", False, False, 1),
        ("Danke!", "right", False, False, 1),
    ]
    assert {text for text, *_ in printed[13:]} == {""}  # the feed before the cut
