"""Backend "usblp": /dev/usb/lpN read and written on one non-blocking fd. A pty stands in for the
node (the test VM drives the real usblp): status and confirmations come back, a printer that is
unplugged (its node gone, reads and writes failing) holds the jobs, and they print once when it is back."""
from __future__ import annotations

import asyncio
import fcntl
import os
import struct
import termios
import tty

import pytest

from edged import config
from edged.devices.printer.device import Printer
from edged.devices.printer.usblp import LpDevice, port_status
from edged.sim.printer import PrinterEmulator
from printing import receipt_doc, running_till, until


def test_jobs_print_once_confirmed_and_wait_while_the_printer_is_unplugged(short_dir):
    async def scenario():
        emu = PrinterEmulator()
        await emu.start()
        link = short_dir / "printer-lp-0416-5011"  # as /dev/edged/printer-lp-... names it
        link.symlink_to(emu.pty_path)
        async with running_till(short_dir, "usblp", printer={"device": str(link)}, emu=emu) as till:
            await till.client.request("print", job_id="u-0", document=receipt_doc("u-0"))
            await till.state_of("u-0", "done")  # confirmed by GS r through the node
            status = (await till.client.request("status", refresh=True))["devices"]["receipt"]
            assert (status["backend"], status["state"]) == ("usblp", "ok")

            await emu.stop()  # unplugged: the node's reads fail, and it is gone
            link.unlink()
            for i in range(1, 3):
                await till.client.request("print", job_id=f"u-{i}", document=receipt_doc(f"u-{i}"))
            job = await till.state_of("u-1", "held")
            assert job["reason"].startswith("offline")
            status = (await till.client.request("status"))["devices"]["receipt"]
            assert status["reasons"] == ["offline"] and status["detail"], status

            back = PrinterEmulator()  # plugged in again: a new node behind the same name
            await back.start()
            link.symlink_to(back.pty_path)
            try:
                for i in range(1, 3):
                    await till.state_of(f"u-{i}", "done")
                assert [r.text().splitlines()[0] for r in back.receipts] == ["u-1", "u-2"]
                assert len(emu.receipts) == 1
            finally:
                await back.stop()
    asyncio.run(scenario())


def test_a_printer_unplugged_mid_job_holds_it_and_prints_it_once_whole_when_back(short_dir):
    """Seen on real USB (tests/till): the cable pulled while a long receipt is on its way. The job's
    end (its cut) never went out, so it is held, not `unknown`, and printed again whole."""
    async def scenario():
        emu = PrinterEmulator()
        got = bytearray()

        def tap(data: bytes) -> None:
            got.extend(data)
            if len(got) > 20_000:  # stalled here, or the rest (129 KB) could pass before the test looks
                emu.stall()
        emu.tap = tap
        await emu.start()
        link = short_dir / "printer-lp-0416-5011"
        link.symlink_to(emu.pty_path)
        async with running_till(short_dir, "usblp", printer={"device": str(link)}, emu=emu) as till:
            await till.client.request("print", job_id="long", document=receipt_doc("long", lines=3000))
            await until(lambda: len(got) > 20_000, what="the long job under way")
            await emu.stop()  # unplugged mid-job: the node's writes fail
            link.unlink()
            job = await till.state_of("long", "held", "unknown")
            assert job["state"] == "held" and job["reason"].startswith("offline"), job
            assert not emu.receipts  # nothing was cut

            back = PrinterEmulator()
            await back.start()
            link.symlink_to(back.pty_path)
            try:
                await till.state_of("long", "done", timeout=30)
                assert len(back.receipts) == 1 and back.receipts[0].text().count("item") == 3000
                assert till.job_states("long").count("done") == 1
            finally:
                await back.stop()
    asyncio.run(scenario())


def test_paper_out_is_read_back_through_the_node():
    async def scenario():
        emu = PrinterEmulator()
        await emu.start()
        printer = Printer("lp", config.PrinterSettings(backend="usblp", device=emu.pty_path, status_interval=0.2,
                                                       timeout=1.0))
        await printer.start()
        try:
            assert printer.status.state == "ok"
            emu.set_state(paper_out=True)
            assert (await printer.refresh()).reasons == ("offline", "paper_out")
        finally:
            await printer.stop()
            await emu.stop()
    asyncio.run(scenario())


def test_stop_ends_a_write_the_printer_does_not_take(short_dir):
    """A printer holding BUSY: the node takes no more bytes. Stopping edged must not wait for it."""
    master, slave = os.openpty()
    tty.setraw(slave)

    def unread() -> int:
        return struct.unpack("i", fcntl.ioctl(master, termios.FIONREAD, b"\0\0\0\0"))[0]

    async def scenario():
        printer = Printer("lp", config.PrinterSettings(backend="usblp", device=os.ttyname(slave),
                                                       status_interval=0.2, timeout=0.3, confirm_timeout=600))
        await printer.start()
        job = asyncio.ensure_future(printer.print_job(b"x" * 40 + b"\n" * 300_000))
        await until(lambda: unread() > 1000, what="the job's write under way")
        assert not job.done()
        await printer.stop()  # returns: the write was cut short, not left hanging in the worker
        outcome, detail = await job
        # Its end never went out, so it cannot have printed whole: it waits and goes again whole.
        assert outcome == "unsent", detail
    try:
        asyncio.run(scenario())
    finally:
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("byte, state, reasons", [
    (0x18, "ok", ()),                          # measured on the printer gadget, ready
    (0x38, "error", ("paper_out",)),           # measured: the gadget set to paper out
    (0x08, "error", ("offline",)),             # not selected
    (0x28, "error", ("offline", "paper_out")),
    (0x10, "error", ("error",)),               # selected, but the error line is active
])
def test_a_printer_that_cannot_answer_is_judged_by_its_1284_status_byte(byte, state, reasons):
    verdict = port_status(byte)
    assert (verdict.state, verdict.reasons) == (state, reasons)


def test_a_node_that_is_not_usblp_has_no_port_status():
    master, slave = os.openpty()
    try:
        lp = LpDevice(os.ttyname(slave))
        assert lp.readable and lp.port_status() is None  # a tty answers LPGETSTATUS with ENOTTY
        lp.close()
    finally:
        os.close(master)
        os.close(slave)
