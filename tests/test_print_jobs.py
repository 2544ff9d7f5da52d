"""Print jobs end to end: the real daemon parts in-process, python-escpos sending to the emulator
over TCP and a pty, clients on the unix socket."""
from __future__ import annotations

import asyncio
import io
import time

import pytest

from edged.client import ClientError
from edged.sim.printer import PrinterEmulator
from printing import SPECIALS, receipt_doc, running_till, until


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("1", (200, 60), 0).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("backend", ["network", "serial"])
def test_a_receipt_prints_once_with_every_character_and_code(short_dir, backend):
    async def scenario():
        async with running_till(short_dir, backend) as till:
            doc = {"blocks": [{"text": "Kiosk Ærø", "align": "center", "size": "double"},
                              {"text": SPECIALS}, {"row": ["Smørrebrød", "4,50 €"]},
                              {"barcode": "4006381333931", "type": "EAN13"},
                              {"barcode": "TX-7f3a-0001", "type": "CODE128"},
                              {"qr": "https://example.test/r/42?sum=4,50€"}, {"image": _png()},
                              {"cut": "full"}]}
            answer = await till.client.request("print", job_id="r-1", document=doc)
            assert answer["state"] == "queued" and answer["duplicate"] is False
            await till.state_of("r-1", "done")
            text = till.texts()[0]
            assert SPECIALS in text and "Smørrebrød" in text and "Kiosk Ærø" in text
            assert "[BARCODE EAN13: 4006381333931]" in text and "[BARCODE CODE128: TX-7f3a-0001]" in text
            assert "[QR: https://example.test/r/42?sum=4,50€]" in text
            await until(lambda: till.job_states("r-1") == ["queued", "printing", "done"], what="events")
            status = await till.client.request("status")
            assert status["jobs"] == {"done": 1}
            assert len(till.emu.receipts) == 1
    asyncio.run(scenario())


def test_raw_bytes_pass_through_and_retries_print_nothing_new(short_dir):
    async def scenario():
        async with running_till(short_dir) as till:
            raw = b"\x1b@\x1bt\x13raw \xd5 line\n\x1dV\x00"  # PC858: 0xD5 is the euro sign
            results = await asyncio.gather(*[till.client.request("print", job_id="raw-1", raw=raw)
                                             for _ in range(5)])
            assert sorted(r["duplicate"] for r in results) == [False, True, True, True, True]
            await till.state_of("raw-1", "done")
            again = await till.client.request("print", job_id="raw-1", raw=b"different")
            assert again["duplicate"] is True and again["state"] == "done"
            await asyncio.sleep(0.3)
            assert till.texts() == ["raw € line\n"]
    asyncio.run(scenario())


def test_bad_requests_name_what_is_wrong(short_dir):
    async def scenario():
        async with running_till(short_dir) as till:
            c = till.client
            cases = [({"job_id": "a", "document": {"blocks": [{"text": "x"}, {"barcode": "1"}]}},
                      "blocks[1].type is missing"),
                     ({"job_id": "a", "document": {"blocks": [{"barcode": "12", "type": "EAN13"}]}},
                      "blocks[0] cannot be printed"),
                     ({"job_id": "a"}, "either 'document'"),
                     ({"job_id": "", "raw": b"x"}, "'job_id' must be 1 to 128"),
                     ({"job_id": "a", "raw": b"x", "printer": "kitchen"}, "no printer 'kitchen'"),
                     ({"job_id": "a", "document": {"blocks": [], "open_drawer": True}}, "no drawer configured")]
            for params, fragment in cases:
                with pytest.raises(ClientError) as e:
                    await c.request("print", **params)
                assert fragment in e.value.message, (params, e.value.message)
            with pytest.raises(ClientError) as e:
                await c.request("job", job_id="nope")
            assert e.value.code == "not_found"
            assert (await c.request("jobs"))["jobs"] == []  # nothing refused was journaled
    asyncio.run(scenario())


def test_paper_out_mid_queue_holds_and_then_prints_each_job_once_in_order(short_dir):
    async def scenario():
        async with running_till(short_dir) as till:
            till.emu.run_out_after(lines=4 + 3)  # job 1 (4 lines + feed) fits, job 2 stops half way
            ids = [f"q-{i}" for i in range(1, 5)]
            for job_id in ids:
                await till.client.request("print", job_id=job_id, document=receipt_doc(job_id, lines=3))
            await till.state_of("q-1", "done")
            held = await till.state_of("q-2", "held")
            assert "paper_out" in held["reason"]
            for job_id in ids[2:]:
                assert "paper_out" in (await till.state_of(job_id, "held"))["reason"]
            status = await till.client.request("status")
            assert status["devices"]["receipt"]["reasons"] == ["offline", "paper_out"]
            assert len(till.emu.receipts) == 1
            till.emu.set_state(paper_out=False)  # a new roll
            for job_id in ids:
                await till.state_of(job_id, "done")
            texts = till.texts()
            assert len(texts) == 4
            for job_id, text in zip(ids, texts):
                assert text.count(f"{job_id} item") == 3, text  # whole, once, in order
            states = till.job_states("q-2")  # held inside the printer; "printing" again if a poll saw it resume
            assert states[:3] == ["queued", "printing", "held"] and states[-1] == "done"
            assert till.job_states("q-3")[:2] == ["queued", "held"] and till.job_states("q-3")[-1] == "done"
    asyncio.run(scenario())


def test_a_printer_that_vanishes_holds_jobs_and_prints_them_when_back(short_dir):
    async def scenario():
        emu = PrinterEmulator(use_pty=False)
        await emu.start()
        port = emu.port
        async with running_till(short_dir, emu=emu) as till:
            await emu.stop()  # switched off: TCP refused
            for i in range(3):
                await till.client.request("print", job_id=f"v-{i}", document=receipt_doc(f"v-{i}"))
            job = await till.state_of("v-0", "held")
            assert job["reason"].startswith("offline")
            # meanwhile the daemon goes on with everything else
            for n in range(20):
                await till.client.request("append", records=[{"kind": "sale", "body": n}])
            assert (await till.client.request("status"))["devices"]["receipt"]["reasons"] == ["offline"]
            back = PrinterEmulator(port=port, use_pty=False)
            await back.start()
            try:
                for i in range(3):
                    await till.state_of(f"v-{i}", "done")
                assert [t.count("item") for t in (r.text() for r in back.receipts)] == [3, 3, 3]
                assert [r.text().splitlines()[0] for r in back.receipts] == ["v-0", "v-1", "v-2"]
            finally:
                await back.stop()
    asyncio.run(scenario())


def test_paper_near_end_still_prints_and_confirms(short_dir):
    async def scenario():
        async with running_till(short_dir) as till:
            till.emu.set_state(paper_near_end=True)  # GS r then answers 0x03, not 0x00
            await till.client.request("print", job_id="n-1", document=receipt_doc("n-1"))
            await till.state_of("n-1", "done")
            status = await till.client.request("status")
            assert status["devices"]["receipt"]["state"] == "warn"
            assert status["devices"]["receipt"]["reasons"] == ["paper_near_end"]
    asyncio.run(scenario())


def test_a_silent_printer_is_unknown_and_so_are_its_jobs(short_dir):
    async def scenario():
        async with running_till(short_dir, printer={"confirm_timeout": 1.0}) as till:
            till.emu.set_state(mute=True)
            status = await till.client.request("status", refresh=True)
            assert status["devices"]["receipt"]["state"] == "unknown"
            assert status["devices"]["receipt"]["reasons"] == ["no_answer"]
            await till.client.request("print", job_id="m-1", document=receipt_doc("m-1"))
            await till.state_of("m-1", "printing")
            # the printer's worker thread now waits for an answer that never comes;
            # the loop serves everything else meanwhile
            for n in range(20):
                await till.client.request("append", records=[{"kind": "sale", "body": n}])
            assert (await till.job("m-1"))["state"] == "printing"
            job = await till.state_of("m-1", "unknown", timeout=15)
            assert "no confirmation" in job["error"]
            assert len(till.emu.receipts) == 1  # it did print; edged just cannot know
            copy = await till.client.request("reprint", job_id="m-1")
            assert copy["copy_of"] == "m-1" and copy["job_id"] == "m-1.copy1"
            till.emu.set_state(mute=False)
            await till.state_of("m-1.copy1", "done", timeout=15)
            assert "*** COPY ***" in till.texts()[1] and "m-1 item 0" in till.texts()[1]
            with pytest.raises(ClientError) as e:
                await till.client.request("reprint", job_id="nope")
            assert e.value.code == "not_found"
    asyncio.run(scenario())


def test_old_waiting_jobs_expire_journaled_and_announced(short_dir):
    async def scenario():
        async with running_till(short_dir) as till:
            till.emu.set_state(cover_open=True)
            await till.client.request("print", job_id="old-1", document=receipt_doc("old-1"))
            await till.state_of("old-1", "held")
            service = till.daemon.till.printing
            expired = await service.book.expire(service.max_age, now=time.time() + 3600)
            assert [j.job_id for j in expired] == ["old-1"]
            # a spooler that picked it just before must not send it now
            assert await service.book.transition(expired[0], "printing", sent=True) is False
            job = await till.job("old-1")
            assert job["state"] == "expired" and "job_max_age" in job["reason"]
            till.emu.set_state(cover_open=False)
            await asyncio.sleep(0.6)
            assert till.emu.receipts == []
            await until(lambda: "expired" in till.job_states("old-1"), what="expired event")
            journal = till.daemon.till.journal
            kinds = [(r.kind, r.body.get("state")) for r in await journal.scan(1, ("print.job", "print.state"))]
            assert kinds[0] == ("print.job", None) and kinds[-1] == ("print.state", "expired")
    asyncio.run(scenario())


def test_jobs_older_than_the_history_are_read_back_from_the_journal(short_dir):
    from edged.devices.printer.jobs import HISTORY

    async def first_run():
        async with running_till(short_dir) as till:
            await till.client.request("print", job_id="h-1", document=receipt_doc("h-1"))
            await till.state_of("h-1", "done")
            book = till.daemon.till.printing.book
            await book.compact(now=time.time() + HISTORY + 60)
            assert book.jobs == {}  # forgotten, and the checkpoint moved past it
            assert (await till.job("h-1"))["state"] == "done"  # read back from the journal
            again = await till.client.request("print", job_id="h-1", document=receipt_doc("h-1"))
            assert again["duplicate"] is True and again["state"] == "done"
            return len(till.emu.receipts)

    async def second_run():
        async with running_till(short_dir) as till:
            assert till.daemon.till.printing.book.jobs == {}  # the restore started at the checkpoint
            again = await till.client.request("print", job_id="h-1", document=receipt_doc("h-1"))
            assert again["duplicate"] is True and again["state"] == "done"
            await asyncio.sleep(0.5)
            assert till.emu.receipts == []

    assert asyncio.run(first_run()) == 1
    asyncio.run(second_run())
