"""Receipt documents: checks name the block and field; rendering by python-escpos, read back by the
emulator over TCP (python-escpos's Network class on the sending side)."""
from __future__ import annotations

import asyncio
import io

import pytest
from escpos import printer as escpos_printer

from edged.devices.printer import document
from edged.relay.protocol import RequestError
from edged.sim.printer import PrinterEmulator

SPECIALS = "€ ä ö ü ß æ ø å Æ Ø Å"


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (width, height), 0).save(buf, "PNG")
    return buf.getvalue()


def _print_via_tcp(data: bytes, profile: str = "default") -> list:
    async def main():
        emulator = PrinterEmulator(use_pty=False, profile=profile)
        await emulator.start()
        try:
            def send():
                p = escpos_printer.Network("127.0.0.1", emulator.port, timeout=5, profile=profile)
                p.open()
                p._raw(data)
                p.close()
            await asyncio.to_thread(send)
            for _ in range(200):
                if emulator.receipts:
                    break
                await asyncio.sleep(0.01)
            return emulator.receipts
        finally:
            await emulator.stop()
    return asyncio.run(main())


def test_every_block_kind_prints_and_reads_back():
    doc = document.check({"copy": True, "blocks": [
        {"text": "Bäckerei Müller", "align": "center", "bold": True, "size": "double"},
        {"text": SPECIALS},
        {"rule": "="},
        {"row": ["Brot", "4,50 €"]},
        {"row": ["Ein sehr langer Artikelname der nicht in eine Zeile passt", "12,00 €"]},
        {"barcode": "4006381333931", "type": "EAN13"},
        {"barcode": "SALE-0042", "type": "CODE128"},
        {"qr": "https://example.test/r/3000000?sum=12,50€", "size": 6},
        {"image": _png(1000, 40)},
        {"feed": 2},
        {"cut": "full"},
    ]})
    receipts = _print_via_tcp(document.render(doc, codepage="PC858"))
    assert len(receipts) == 1 and receipts[0].cut == "full"
    text = receipts[0].text()
    assert "*** COPY ***" in text
    assert SPECIALS in text
    assert "Bäckerei Müller" in text
    assert "=" * 42 in text
    assert any(line.startswith("Brot") and line.endswith("4,50 €") and len(line) == 42
               for line in text.splitlines())
    assert "[EAN13: 4006381333931]" in text or "EAN13" in text and "4006381333931" in text
    assert "SALE-0042" in text
    assert "https://example.test/r/3000000?sum=12,50€" in text


def test_text_only_documents_print_the_same_on_every_usable_code_page():
    for page in ("PC858", "CP1252"):
        doc = document.check({"blocks": [{"text": "Grüße aus Århus: 5 €"}, {"cut": "partial"}]})
        receipts = _print_via_tcp(document.render(doc, codepage=page))
        assert "Grüße aus Århus: 5 €" in receipts[0].text(), page


@pytest.mark.parametrize("doc, where", [
    ([], "must be a map"),
    ({"blocks": "x"}, "'blocks' must be a list"),
    ({"blocks": [], "colour": 1}, "unknown field"),
    ({"blocks": [{"text": "a", "qr": "b"}]}, "blocks[0] must hold exactly one"),
    ({"blocks": [{"text": 5}]}, "blocks[0].text must be a string"),
    ({"blocks": [{"text": "a"}, {"text": "b", "align": "middle"}]}, "blocks[1].align must be one of left"),
    ({"blocks": [{"text": "a", "colour": "red"}]}, "blocks[0]: unknown field 'colour'"),
    ({"blocks": [{"row": ["only one"]}]}, "blocks[0].row must be two strings"),
    ({"blocks": [{"barcode": "123"}]}, "blocks[0].type is missing"),
    ({"blocks": [{"barcode": "123", "type": "EAN99"}]}, "blocks[0].type must be one of"),
    ({"blocks": [{"qr": "x", "size": 17}]}, "blocks[0].size must be an integer 1..16"),
    ({"blocks": [{"qr": "x", "size": True}]}, "blocks[0].size must be"),
    ({"blocks": [{"image": b"GIF89a"}]}, "blocks[0].image must be a PNG"),
    ({"blocks": [{"feed": 1000}]}, "blocks[0].feed must be 0..255"),
    ({"blocks": [{"cut": "half"}]}, "blocks[0].cut must be one of full, partial"),
    ({"blocks": [], "copy": "yes"}, "'copy' must be true or false"),
])
def test_bad_documents_are_refused_naming_block_and_field(doc, where):
    with pytest.raises(RequestError) as e:
        document.check(doc)
    assert e.value.code == "bad_request" and where in e.value.message


def test_a_barcode_python_escpos_refuses_names_its_block():
    doc = document.check({"blocks": [{"text": "x"}, {"barcode": "12", "type": "EAN13"}]})
    with pytest.raises(RequestError) as e:
        document.render(doc)
    assert "blocks[1] cannot be printed" in e.value.message
