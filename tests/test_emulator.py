"""The printer emulator decodes what python-escpos really sends, over real transports."""
from __future__ import annotations

import asyncio

from escpos.printer import Dummy, Network, Serial
from PIL import Image

from edged.devices.printer import status as st
from edged.sim.escpos_codec import next_command
from edged.sim.printer import PrinterEmulator, _Stream

GERMAN = "Grüße aus Köln: Äpfel 3,50 €, Maß ß"
NORWEGIAN = "Blåbærsyltetøy 49,90 € - ÆØÅ æøå"


def german_norwegian_receipt(p) -> None:
    p.hw("INIT")
    p.charcode("CP858")  # one fixed page, as edged prints: ESC t 19
    p.set(align="center", bold=True, double_height=True, double_width=True)
    p.textln("Bäckerei")
    p.set_with_default()
    p.textln(GERMAN)
    p.set(underline=1)
    p.textln(NORWEGIAN)
    p.set_with_default(align="right")
    p.textln("SUM 53,40 €")
    p.cut()


def render(data: bytes, chunk: int | None = None) -> PrinterEmulator:
    """Feed bytes into an emulator (not started: no transport needed for the codec path)."""
    emu = PrinterEmulator(use_pty=False)
    stream = _Stream()
    step = chunk or len(data) or 1
    for i in range(0, len(data), step):
        emu.feed(stream, data[i:i + step])
    return emu


def test_pc858_german_and_norwegian_with_euro():
    p = Dummy()
    german_norwegian_receipt(p)
    assert b"\x1bt\x13" in p.output  # python-escpos really selected PC858
    emu = render(p.output)
    assert len(emu.receipts) == 1
    receipt = emu.receipts[0]
    texts = [line.text for line in receipt.lines]
    assert GERMAN in texts and NORWEGIAN in texts and "SUM 53,40 €" in texts
    title = next(line for line in receipt.lines if line.text == "Bäckerei")
    assert (title.bold, title.align, title.width, title.height) == (True, "center", 2, 2)
    norsk = next(line for line in receipt.lines if line.text == NORWEGIAN)
    assert norsk.underline and not norsk.bold
    text = receipt.text(42)
    assert text.startswith(" " * 13 + "Bäckerei\n")  # centred by its double width: (42 - 16) / 2
    assert "\n" + " " * (42 - len("SUM 53,40 €")) + "SUM 53,40 €\n" in text
    assert receipt.cut == "full"


def test_codepage_switch_changes_decoding():
    p = Dummy()
    p.charcode("CP1252")
    p.textln("€ 1252")
    p.charcode("CP437")
    p.textln("ä 437")
    p.cut(mode="PART")
    receipt = render(p.output).receipts[0]
    assert [line.text for line in receipt.lines][:2] == ["€ 1252", "ä 437"]
    assert receipt.cut == "partial"


def test_byte_by_byte_arrival_gives_the_same_receipt():
    p = Dummy()
    german_norwegian_receipt(p)
    p.barcode("4006381333931", "EAN13")
    p.qr("https://example.invalid/r/123", native=True)
    p.cut()
    whole = render(p.output)
    split = render(p.output, chunk=1)
    assert [r.text() for r in split.receipts] == [r.text() for r in whole.receipts]


def test_non_text_elements_are_labelled():
    p = Dummy()
    p.barcode("4006381333931", "EAN13")
    p.barcode("{BTILL-7", "CODE128", function_type="B")
    p.qr("PAY:123", native=True)
    p.qr("as image")  # python-escpos renders this one as a raster image
    img = Image.new("1", (64, 40), 1)
    p.image(img, impl="graphics")
    p.image(img, impl="bitImageColumn")
    p.cut()
    lines = [line.text for line in render(p.output).receipts[0].lines if line.element]
    assert lines[0] == "[BARCODE EAN13: 4006381333931]"
    assert lines[1] == "[BARCODE CODE128: TILL-7]"  # the code set selector is not data
    assert lines[2] == "[QR: PAY:123]"
    assert lines[3].startswith("[IMAGE ")
    assert lines[4] == "[IMAGE 64x40]"
    assert lines[5] == "[IMAGE 64x48]"  # two 24-dot bands
    assert len(lines) == 6


def test_status_answers_follow_state():
    emu = render(b"")
    stream = _Stream()
    query = b"".join(st.query(n) for n in st.QUERIES)
    assert st.decode(dict(zip(st.QUERIES, (bytes([b]) for b in emu.feed(stream, query))))).state == "ok"
    emu.set_state(cover_open=True, paper_near_end=True, drawer_open=True)
    replies = emu.feed(stream, query)
    verdict = st.decode({n: replies[i:i + 1] for i, n in enumerate(st.QUERIES)})
    assert verdict.state == "error"
    assert set(verdict.reasons) == {"offline", "cover_open", "paper_near_end"}
    assert verdict.drawer_pin3 is True
    emu.set_state(mute=True)
    assert emu.feed(stream, query) == b""


def test_printing_is_held_while_offline_and_status_still_answers():
    emu = render(b"")
    stream = _Stream()
    emu.set_state(paper_out=True)
    p = Dummy()
    p.textln("held receipt")
    p.cut()
    reply = emu.feed(stream, p.output + st.query(2))
    assert reply == bytes([0x12 | 0x20])  # answered at once, though offline
    assert emu.receipts == []
    emu.set_state(paper_out=False)
    assert [line.text for line in emu.receipts[0].lines][0] == "held receipt"


def test_drawer_kick_opens_the_drawer_without_printing():
    p = Dummy()
    p.cashdraw(2)
    emu = render(p.output)
    assert emu.kicks == [(2, 100)] and emu.state.drawer_open
    assert emu.receipts == []


def test_unknown_commands_are_reported():
    emu = render(b"\x1b\x07text\n\x1dV\x00")
    assert emu._paper.unknown == ["unknown ESC '\\x07'"]
    assert emu.receipts[0].lines[0].text == "text"


def test_tokenizer_waits_for_whole_commands():
    raster = b"\x1dv0\x00\x02\x00\x03\x00" + b"\x10\x04\x01" + b"\xff" * 3  # DLE EOT bytes inside image data
    assert next_command(raster[:-1], 0) is None
    cmd, end = next_command(raster, 0)
    assert cmd.name == "GS v 0" and cmd.args == (16, 3) and end == len(raster)


def test_python_escpos_over_loopback_tcp_and_pty():
    async def scenario():
        emu = PrinterEmulator()
        await emu.start()
        try:
            def print_both():
                net = Network("127.0.0.1", emu.port, timeout=5)
                german_norwegian_receipt(net)
                assert net.is_online()  # DLE EOT 1 answered over TCP
                net.close()
                ser = Serial(emu.pty_path, baudrate=19200, timeout=5)
                ser.open()
                german_norwegian_receipt(ser)
                ser._raw(st.query(4))
                assert ser.device.read(1) == b"\x12"
                ser.close()
            await asyncio.to_thread(print_both)
            for _ in range(100):
                if len(emu.receipts) == 2:
                    break
                await asyncio.sleep(0.02)
            assert len(emu.receipts) == 2
            assert emu.receipts[0].text() == emu.receipts[1].text()
            assert NORWEGIAN in emu.receipts[1].text()
        finally:
            await emu.stop()
    asyncio.run(scenario())
