"""Raw print is powerful: a drawer kick in raw ESC/POS needs the drawer privilege and is journaled
as `drawer.open`; a reprint never kicks. The real daemon on the emulator, clients under another uid."""
from __future__ import annotations

import asyncio
import os
import time

import pytest
from escpos.printer import Dummy
from hypothesis import given, settings
from hypothesis import strategies as s
from PIL import Image

from edged import config
from edged.client import BlockingClient, ClientError
from edged.daemon import Daemon
from edged.devices.drawer import kick_bytes, realtime_kick_bytes
from edged.devices.printer import raw_escpos
from edged.sim.printer import PrinterEmulator, _Stream
from other_user import as_user_async as as_user
from printing import printer_table, receipt_doc, running_till, until

NOBODY = 65534
KICK = kick_bytes(2, 100)  # ESC p 0 50 50
SALE, CUT = b"\x1b@sale 1001\n", b"\x1dV\x00"
# A 40x1 raster image whose pixels spell ESC p 0 25 25: data to a printer, not a command.
LOGO_WITH_KICK_PIXELS = b"\x1dv0\x00\x05\x00\x01\x00" + b"\x1bp\x00\x19\x19" + b"\n"


def _image(impl: str, pixels: bytes) -> bytes:
    """python-escpos's own image commands around pixels that hold ESC p."""
    img = Image.frombytes("1", (8 * len(pixels), 1), bytes(~b & 0xFF for b in pixels))  # PIL: 1 is white
    out = Dummy()
    out.image(img, impl=impl, center=False)
    assert b"\x1bp" in out.output
    return out.output


@pytest.mark.parametrize("make", [
    lambda: _image("bitImageRaster", b"\x1bp\x00\x19\x19\x00\x00\x00"),  # GS v 0
    lambda: _image("graphics", b"\x1bp\x00\x19\x19\x00\x00\x00"),  # GS ( L
    lambda: b"\x1b*\x00\x05\x00\x1bp\x00\x19\x19",  # 8-dot columns
    lambda: b"\x1b*\x21\x02\x00\x00\x1bp\x00\x19\x19\x00",  # 24-dot columns: 3 bytes each
    lambda: LOGO_WITH_KICK_PIXELS,
])
def test_kick_bytes_inside_image_data_are_pixels(make):
    assert raw_escpos.scan(make()) == raw_escpos.Scan()


def test_kicks_found_as_commands_and_wherever_a_printer_could_run_them():
    raw = b"\x1b@sale\n" + KICK + b"more\n" + realtime_kick_bytes(5, 200)
    found = raw_escpos.scan(raw)
    assert found.kicks == ((7, 12), (17, 22)) and not found.hidden and not found.problem
    assert raw_escpos.without_kicks(raw) == b"\x1b@sale\nmore\n"
    # ESC p as another command's argument: that command may end early and run the rest
    assert raw_escpos.scan(b"\x1b!\x1bp\x00\x19\x19").hidden == (2,)
    # ... or inside a barcode's data, which ends at the first byte out of range
    assert raw_escpos.scan(b"\x1dk\x49\x07{B\x1bp\x00\x19\x19").hidden == (6,)
    # the real-time pulse is executed wherever it arrives, pixels included
    assert raw_escpos.scan(b"\x1dv0\x00\x05\x00\x01\x00\x10\x14\x01\x00\x01").hidden == (8,)
    for hidden in (b"\x1b!\x1bp\x00\x19\x19", b"\x1dv0\x00\x05\x00\x01\x00\x10\x14\x01\x00\x01"):
        with pytest.raises(ValueError, match="cannot take that out"):
            raw_escpos.without_kicks(hidden)


@pytest.mark.parametrize("raw,why", [
    (b"\x1bT\x01", "0x1b 0x54 is not a command edged knows"),
    (b"\x1dr\x01", "GS r makes the printer send bytes back"),
    (b"\x10\x04\x01", "DLE EOT makes the printer send bytes back"),
    (b"\x1d^\x01\x00\x00", "GS ^ runs a macro"),
    (b"\x1b=\x00", "ESC = can switch the printer off"),
    (b"\x10\x14\x08\x01\x03\x14\x01\x06\x02\x08", "DLE DC4 8"),
    (b"\x1d(E\x03\x00\x01IN", "GS ( E is not graphics"),
    (b"\x1b*\x05\x01\x00\x00", "ESC * with mode 5"),
    (b"text\x1b", "ends inside a command"),
])
def test_what_edged_cannot_check_is_named(raw, why):
    found = raw_escpos.scan(raw)
    assert why in found.problem and found.problem.startswith("byte ")


@settings(max_examples=400, deadline=None)
@given(s.lists(s.sampled_from([b"\x1b", b"\x1d", b"\x10", b"\x14", b"p", b"\x01", b"\x00", b"v0", b"*", b"!",
                               b"a", b"\n", b"\x05", b"(L", b"k", b"\x19"]), max_size=40))
def test_what_passes_the_check_never_kicks_the_emulator(pieces):
    raw = b"".join(pieces)
    found = raw_escpos.scan(raw)
    for data in ([raw] if not found.kicks_drawer and not found.problem else []) + _stripped(raw):
        emu = PrinterEmulator(use_pty=False)
        emu.feed(_Stream(), data)
        assert emu.kicks == [], data


def _stripped(raw: bytes) -> list[bytes]:
    try:
        return [raw_escpos.without_kicks(raw)]
    except ValueError:
        return []


def _print_everything(c: BlockingClient) -> dict[str, str]:
    """As another user: print raw bytes of every kind; each answer."""
    answers: dict[str, str] = {}
    for job_id, raw in [("kick", SALE + KICK + CUT), ("pulse", realtime_kick_bytes(2, 100)),
                        ("hidden", b"\x1b!\x1bp\x00\x19\x19\n"), ("unknown", b"\x1bT\x01hi\n"),
                        ("gs-r", b"hi\n\x1dr\x01"), ("logo", LOGO_WITH_KICK_PIXELS + b"thanks\n" + CUT)]:
        try:
            c.request("print", job_id=job_id, raw=raw)
            answers[job_id] = "ok"
        except ClientError as e:
            answers[job_id] = f"{e.code}: {e.message}"
    if answers["kick"] == "ok":  # the privileged user: a copy of its kicking job, once printed
        for _ in range(500):
            if c.request("job", job_id="kick")["state"] == "done":
                break
            time.sleep(0.02)
        answers["reprint"] = c.request("reprint", job_id="kick", copy_job_id="kick.copy")["job_id"]
    return answers


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a client under another uid")
@pytest.mark.parametrize("privileged", [False, True])
def test_a_raw_drawer_kick_needs_the_drawer_privilege_and_is_journaled(short_dir, privileged):
    os.chmod(short_dir, 0o755)

    async def scenario():
        emu = PrinterEmulator(use_pty=False)
        await emu.start()
        cfg = config.from_dict({
            "till_id": "t1", "printers": {"receipt": printer_table(emu)},
            "drawers": {"cash": {"sensor": "open_high"}},
            "daemon": {"socket": str(short_dir / "s.sock"), "state_dir": str(short_dir / "state"),
                       "socket_group": "nogroup", "privileged_users": ["nobody"] if privileged else []}})
        try:
            async with Daemon(cfg).parts() as daemon:
                answers = await as_user(cfg.daemon.socket, _print_everything, NOBODY, NOBODY)
                journal = daemon.till.journal
                book = daemon.till.printing.book
                await until(lambda: all(j.state in ("done", "failed", "unknown") for j in book.jobs.values()),
                            what="every accepted job finished")
                states = {j.job_id: j.state for j in book.jobs.values()}
                opened = [rec.body for rec in await journal.scan(1, ("drawer.open",))]
                if privileged:
                    # a privileged user may send what edged cannot check, too
                    assert {k: answers[k] for k in ("kick", "pulse", "hidden", "unknown", "gs-r", "logo")} == \
                        dict.fromkeys(("kick", "pulse", "hidden", "unknown", "gs-r", "logo"), "ok")
                    assert answers["reprint"] == "kick.copy"
                    # its own GS r answered before edged's: two confirmations are no well-formed one
                    assert states.pop("gs-r") == "unknown"
                    assert states == dict.fromkeys(("kick", "pulse", "hidden", "unknown", "logo", "kick.copy"),
                                                   "done")
                    assert [(b["job_id"], b["uid"], b["drawer"]) for b in opened] == [
                        (job_id, NOBODY, "cash") for job_id in ("kick", "pulse", "hidden")]
                    assert opened[0]["reason"] == "print job kick (raw ESC/POS with a drawer kick)"
                    assert [pin for pin, _ in emu.kicks] == [2, 2]  # ESC p, DLE DC4; "hidden" is no kick here
                    (copy,) = [rec.body for rec in await journal.scan(1, ("print.job",))
                               if rec.body["job_id"] == "kick.copy"]
                    assert copy["raw"] == SALE + CUT and copy["copy_of"] == "kick"
                    assert "sale 1001" in emu.receipts[-1].text(42)  # the copy printed, without its kick
                else:
                    for job_id in ("kick", "pulse", "hidden"):
                        assert answers[job_id].startswith("not_permitted: raw: byte "), answers
                        assert "a drawer kick (ESC p or DLE DC4 1) needs a privileged user" in answers[job_id]
                    assert answers["unknown"].startswith("bad_request: raw: byte 0: 0x1b 0x54 is not a command")
                    assert answers["gs-r"].startswith("bad_request: raw: byte 3: GS r")
                    assert answers["logo"] == "ok"  # ESC p in pixels is no kick
                    assert states == {"logo": "done"} and opened == [] and emu.kicks == []
                    assert not emu.state.drawer_open and daemon.till.devices["cash"].open is False
                    assert "thanks" in emu.receipts[-1].text(42)
        finally:
            await emu.stop()
    asyncio.run(scenario())


def test_a_raw_kick_on_a_printer_without_drawer_and_a_reprint_that_would_kick(short_dir):
    async def scenario():
        async with running_till(short_dir) as till:  # no drawer configured
            with pytest.raises(ClientError) as e:
                await till.client.request("print", job_id="k", raw=b"hi\n" + KICK)
            assert e.value.code == "bad_request" and "printer 'receipt' has no drawer configured" in e.value.message
        async with running_till(short_dir / "2", drawer={"sensor": "open_high"}) as till:
            await till.client.request("print", job_id="h", raw=b"\x1b!\x1bp\x00\x19\x19hi\n")
            await till.state_of("h", "done")
            with pytest.raises(ClientError) as e:
                await till.client.request("reprint", job_id="h")
            assert e.value.code == "bad_request" and "cannot be reprinted" in e.value.message
            await till.client.request("print", job_id="d", document=receipt_doc("d", open_drawer=True))
            await till.state_of("d", "done")
            await till.client.request("reprint", job_id="d")
            await till.state_of("d.copy1", "done")
            assert len(till.emu.kicks) == 1  # the document's own kick; its copy none
    (short_dir / "2").mkdir()
    asyncio.run(scenario())
