"""The cash drawer: kicked through the printer (ESC p, or DLE DC4 while the printer cannot print),
every opening journaled with who asked, the sensor's polarity from config, the open-too-long alert."""
from __future__ import annotations

import asyncio
import os

import pytest

from edged.client import ClientError
from edged.devices.drawer import kick_bytes, realtime_kick_bytes
from printing import receipt_doc, running_till, until


def _drawer_events(till, name="drawer.state"):
    return [e for e in till.events if e["event"] == name]


def test_kick_sequences_follow_pin_and_pulse():
    assert kick_bytes(2, 100) == b"\x1bp\x00\x32\x32"  # python-escpos's own cashdraw(2)
    assert kick_bytes(5, 500) == b"\x1bp\x01\xfa\xfa"
    assert realtime_kick_bytes(2, 250) == b"\x10\x14\x01\x00\x02"


def test_open_sensor_alert_then_closed_and_the_opening_is_journaled(short_dir):
    async def scenario():
        drawer = {"sensor": "open_high", "open_alert_after": 1.0, "pulse_ms": 120}
        async with running_till(short_dir, drawer=drawer) as till:
            status = await till.client.request("status")
            assert status["devices"]["cash"]["state"] == "closed"
            answer = await till.client.request("drawer_open", reason="change for a customer")
            assert answer["drawer"] == "cash" and answer["opened_at"] > 0
            await until(lambda: till.emu.kicks == [(2, 120)], what="ESC p with the configured pulse")
            await until(lambda: [e["open"] for e in _drawer_events(till)] == [True], what="open")
            alert = await until(lambda: _drawer_events(till, "drawer.alert"), timeout=5, what="alert")
            assert alert[0]["drawer"] == "cash" and alert[0]["open_for"] >= 1.0
            till.emu.set_state(drawer_open=False)  # someone pushes it shut
            await until(lambda: [e["open"] for e in _drawer_events(till)] == [True, False], what="closed")
            journal = till.daemon.till.journal
            (rec,) = await journal.scan(1, ("drawer.open",))
            assert rec.body["reason"] == "change for a customer" and rec.body["client"] == "pos"
            assert (rec.body["pid"], rec.body["uid"]) == (os.getpid(), os.getuid())
    asyncio.run(scenario())


def test_polarity_from_config_and_a_drawer_without_sensor(short_dir):
    async def inverted():
        async with running_till(short_dir, drawer={"sensor": "open_low"}) as till:
            # this drawer's switch pulls pin 3 high when shut: low (the emulator at rest) is open
            assert (await till.client.request("status"))["devices"]["cash"]["open"] is True
            await till.client.request("drawer_open", reason="test")
            await until(lambda: _drawer_events(till) and _drawer_events(till)[-1]["open"] is False,
                        what="pin 3 high read as closed")

    async def no_sensor():
        async with running_till(short_dir, drawer={"sensor": "none"}) as till:
            cash = (await till.client.request("status"))["devices"]["cash"]
            assert cash["open"] is None and cash["state"] == "unknown" and cash["reasons"] == ["no_sensor"]
            await till.client.request("drawer_open", reason="test")
            await asyncio.sleep(0.6)
            assert till.emu.kicks and _drawer_events(till) == []

    asyncio.run(inverted())
    asyncio.run(no_sensor())


def test_a_printer_out_of_paper_still_opens_the_drawer_at_once(short_dir):
    async def scenario():
        async with running_till(short_dir, drawer={"sensor": "open_high"}) as till:
            till.emu.set_state(paper_out=True)
            await till.client.request("status", refresh=True)
            await till.client.request("drawer_open", reason="paper out, customer waits")
            await until(lambda: till.emu.kicks == [(2, 100)], what="DLE DC4: at once, not held behind the paper")
    asyncio.run(scenario())


def test_a_vanished_printer_cannot_open_the_drawer_and_says_so(short_dir):
    async def scenario():
        async with running_till(short_dir, drawer={"sensor": "open_high"}) as till:
            await till.emu.stop()
            await till.client.request("status", refresh=True)
            with pytest.raises(ClientError) as e:
                await till.client.request("drawer_open", reason="x")
            assert e.value.code == "device_unavailable" and "cash" in e.value.message
            kinds = [r.kind for r in await till.daemon.till.journal.scan(1, ("drawer.open", "drawer.open_failed"))]
            assert kinds == ["drawer.open", "drawer.open_failed"]
    asyncio.run(scenario())


def test_a_receipt_that_opens_the_drawer_journals_the_opening(short_dir):
    async def scenario():
        async with running_till(short_dir, drawer={"sensor": "open_high", "pin": 5}) as till:
            await till.client.request("print", job_id="sale-9", document=receipt_doc("sale-9", open_drawer=True))
            await till.state_of("sale-9", "done")
            assert till.emu.kicks == [(5, 100)]
            (rec,) = await till.daemon.till.journal.scan(1, ("drawer.open",))
            assert rec.body["reason"] == "print job sale-9" and rec.body["job_id"] == "sale-9"
            await till.client.request("reprint", job_id="sale-9")
            await till.state_of("sale-9.copy1", "done")
            assert len(till.emu.kicks) == 1  # a copy never opens the drawer
    asyncio.run(scenario())
