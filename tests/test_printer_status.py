"""Printer status: the DLE EOT codec, and the printer device against the emulator on TCP and a pty."""
from __future__ import annotations

import asyncio

import pytest

from edged import config
from edged.devices.printer import status as st
from edged.devices.printer.device import Printer
from edged.sim.printer import PrinterEmulator


def replies(**state) -> dict[int, bytes]:
    return st.encode(**state)


@pytest.mark.parametrize("state,verdict,reasons", [
    ({}, "ok", ()),
    ({"paper_near_end": True}, "warn", ("paper_near_end",)),
    ({"paper_out": True}, "error", ("offline", "paper_out")),
    ({"cover_open": True}, "error", ("offline", "cover_open")),
    ({"cutter_error": True}, "error", ("offline", "cutter_error", "recoverable_error")),
    ({"offline": True}, "error", ("offline",)),
])
def test_codec_round_trip(state, verdict, reasons):
    decoded = st.decode(replies(**state))
    assert decoded.state == verdict
    assert decoded.reasons == reasons


def test_drawer_pin_is_reported_not_judged():
    assert st.decode(replies(drawer_pin3=True)).drawer_pin3 is True
    assert st.decode(replies()).drawer_pin3 is False
    assert st.decode(replies(drawer_pin3=True)).state == "ok"


def test_silence_and_garbage_are_unknown_never_ok():
    ok = replies()
    assert st.decode({**ok, 3: None}) == st.PrinterStatus("unknown", ("no_answer",))
    assert st.decode({**ok, 4: b""}).state == "unknown"
    assert st.decode({**ok, 2: b"\x00"}) == st.PrinterStatus("unknown", ("malformed_reply",))
    assert st.decode({**ok, 1: b"\x12\x12"}).state == "unknown"
    # every byte outside the 0xx1xx10 pattern is malformed
    for byte in range(256):
        verdict = st.decode({**ok, 1: bytes([byte])})
        assert (verdict.state != "unknown") == ((byte & 0x93) == 0x12)


def _printer(backend: str, emu: PrinterEmulator) -> Printer:
    if backend == "network":
        s = config.PrinterSettings(backend="network", host="127.0.0.1", port=emu.port,
                                   status_interval=0.2, timeout=1.0)
    else:  # serial, or usblp on a pty standing in for /dev/usb/lp0
        s = config.PrinterSettings(backend=backend, device=emu.pty_path, status_interval=0.2, timeout=1.0)
    return Printer("receipt", s)


@pytest.mark.parametrize("backend", ["network", "serial", "usblp"])
def test_printer_follows_the_emulator(backend):
    async def scenario():
        emu = PrinterEmulator()
        await emu.start()
        printer = _printer(backend, emu)
        changes = []
        printer.listeners.append(lambda p: changes.append(p.status.state))
        await printer.start()
        try:
            assert printer.status.state == "ok"  # read before start() returns
            emu.set_state(paper_near_end=True)
            assert (await printer.refresh()).reasons == ("paper_near_end",)
            emu.set_state(paper_near_end=False, cover_open=True)
            assert (await printer.refresh()).state == "error"
            emu.set_state(cover_open=False, mute=True)
            assert (await printer.refresh()) == st.PrinterStatus("unknown", ("no_answer",))
            emu.set_state(mute=False)
            for _ in range(100):  # the poll loop notices by itself
                if printer.status.state == "ok":
                    break
                await asyncio.sleep(0.05)
            assert printer.status.state == "ok"
            assert printer.healthy()
            assert changes == ["ok", "warn", "error", "unknown", "ok"]
        finally:
            await printer.stop()
            await emu.stop()
    asyncio.run(scenario())


def test_printer_that_goes_away_is_unreachable_and_comes_back():
    async def scenario():
        emu = PrinterEmulator(use_pty=False)
        await emu.start()
        port = emu.port
        printer = _printer("network", emu)
        await printer.start()
        try:
            assert printer.status.state == "ok"
            await emu.stop()
            # the first poll after the printer went away already says so (EOF is not silence)
            assert await printer.refresh() == st.PrinterStatus("error", ("offline",))
            assert printer.detail.startswith("connection lost")
            assert await printer.refresh() == st.PrinterStatus("error", ("offline",))
            assert "refused" in printer.detail
            emu = PrinterEmulator(port=port, use_pty=False)
            await emu.start()
            assert (await printer.refresh()).state == "ok"
        finally:
            await printer.stop()
            await emu.stop()
    asyncio.run(scenario())


def test_file_backend_is_honest_about_not_reading(tmp_path):
    async def scenario():
        printer = Printer("lp", config.PrinterSettings(backend="file", device=str(tmp_path / "lp0")))
        await printer.start()
        try:
            assert printer.status == st.PrinterStatus("unknown", ("cannot_read_status",))
        finally:
            await printer.stop()
    asyncio.run(scenario())


def test_usb_printer_that_is_not_plugged_in_is_unreachable_with_the_reason():
    async def scenario():
        printer = Printer("usb", config.PrinterSettings(backend="usb", vendor_id=0x04B8, product_id=0x0E15,
                                                        serial_number="NOPE"))
        await printer.start()
        try:
            assert printer.status == st.PrinterStatus("error", ("offline",))
            assert printer.describe()["detail"]  # e.g. "Device not found" or "No backend available"
            assert printer.describe()["endpoints"] == ""  # never opened: nothing to say yet
        finally:
            await printer.stop()
    asyncio.run(scenario())


@pytest.mark.parametrize("backend", ["network", "usblp"])
def test_a_job_on_a_connection_opened_since_the_last_reading_is_read_first_then_confirmed(backend):
    """Found on real USB (make test-till): a printer unplugged mid-job and plugged back in, the
    spooler's reading taken on the old connection, the job sent on a new one. The new connection's
    replies are read before the job, so a printer that answers well is `done`, not `unknown`; one
    that answers "paper out" there keeps the job unsent."""
    from edged.devices.printer.link import Link
    from edged.devices.printer.send import send_job

    async def scenario():
        emu = PrinterEmulator(use_pty=backend != "network")
        await emu.start()
        try:
            s = _printer(backend, emu).settings
            seen: list[str] = []
            link = Link(s)  # opened by send_job: no reading on it yet
            outcome = await asyncio.to_thread(send_job, link, b"hello\n\x1dV\x00", lambda p: seen.append(p.state))
            assert outcome == ("done", "") and seen[0] == "ok", (outcome, seen)
            assert emu.receipts[-1].text(42).startswith("hello")
            link.close()
            emu.set_state(paper_out=True)
            outcome = await asyncio.to_thread(send_job, link, b"held\n", lambda p: seen.append(p.state))
            assert outcome[0] == "unsent" and "paper_out" in outcome[1], outcome
            assert len(emu.receipts) == 1
            link.close()
        finally:
            await emu.stop()
    asyncio.run(scenario())
