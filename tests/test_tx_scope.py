"""tx_ids are scoped to the uid that appended them: another user cannot squat a sale's tx_id, a day
close or a print job (the real daemon in-process, clients forked under other uids)."""
from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from edged import config
from edged.client import Client
from edged.daemon import Daemon
from edged.journal.disk import RealDisk
from edged.journal.store import Entry, Store
from edged.journal.verify import read_all
from other_user import NOBODY, answer
from other_user import as_user_async as as_user

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run clients under other uids")
POS_UID = 1  # `daemon` on Debian: the POS app's own user here; the squatter is nobody
DAY = "2026-11-19"


def _cfg(d: Path) -> config.Config:
    return config.from_dict({"till_id": "till-1", "daemon": {"socket": str(d / "s.sock"), "state_dir": str(d / "st"),
                                                             "socket_group": "nogroup"},
                             "numbering": {"receipt": {"first": 100, "last": 999}}})


def _records(d: Path) -> list:
    return list(read_all(RealDisk(str(d / "st" / "journal"))))


async def _pos(path: str, body) -> dict:
    return await as_user(path, body, POS_UID, POS_UID, groups=(NOBODY,))


def test_another_uid_cannot_squat_a_sale_a_day_close_or_a_print_job(short_dir):
    os.chmod(short_dir, 0o755)
    path = str(short_dir / "s.sock")
    sale = {"kind": "sale", "body": {"total": 450}, "tx_id": "pos:sale-1001", "number": "receipt"}

    def squat(c):  # before the POS: the POS's tx_id, and edged's own for a day close and a print job
        return [answer(c, "append", records=[{"kind": "sale", "body": "squat", "tx_id": tx}])["records"][0]
                for tx in ("pos:sale-1001", f"day.close:{DAY}", "print:r-1")]

    async def scenario():
        async with Daemon(_cfg(short_dir), simulate=True).parts():
            squatted = await as_user(path, squat)
            assert [r["duplicate"] for r in squatted] == [False, False, False]
            pos = await _pos(path, lambda c: [answer(c, "append", records=[sale])["records"][0],
                                              answer(c, "append", records=[sale])["records"][0]])
            # The POS's sale is written, as its first; its retry is a duplicate of its own record.
            assert pos[0]["duplicate"] is False and pos[0]["seq"] not in [r["seq"] for r in squatted]
            assert pos[1] == {**pos[0], "duplicate": True}
            # The squatter resending gets its own record back, not the POS's.
            again = await as_user(path, squat)
            assert [(r["seq"], r["duplicate"]) for r in again] == [(r["seq"], True) for r in squatted]
            async with await Client.connect(path, "manager") as root:
                job = await root.request("print", job_id="r-1", document={"blocks": [{"text": "r-1"}, {"cut": "full"}]})
                assert job["duplicate"] is False
                while (await root.request("job", job_id="r-1"))["state"] != "done":
                    await asyncio.sleep(0.05)
                closed = await root.request("day_close", business_day=DAY)
                assert closed["duplicate"] is False and closed["counts"]["sale"] == 4
            return pos[0], closed["seq"]

    first, close_seq = asyncio.run(scenario())
    sale_seq = first["seq"]
    by_seq = {r.seq: r for r in _records(short_dir)}
    assert by_seq[sale_seq].body == {"total": 450} and by_seq[sale_seq].tx_uid == POS_UID
    assert by_seq[close_seq].kind == "day.close" and by_seq[close_seq].tx_id == f"day.close:{DAY}"
    assert [r.tx_uid for r in by_seq.values() if r.kind == "print.job"] == [None]  # edged's own scope
    assert len(os.listdir(short_dir / "st" / "sim" / "receipt")) == 1  # printed, once

    async def after_restart():  # the scopes come back from the records (the day close sealed a segment)
        async with Daemon(_cfg(short_dir), simulate=True).parts():
            pos = await _pos(path, lambda c: answer(c, "append", records=[sale])["records"][0])
            assert pos == {**first, "duplicate": True}
            squatter = await as_user(path, squat)
            assert all(r["duplicate"] for r in squatter) and sale_seq not in [r["seq"] for r in squatter]
            async with await Client.connect(path, "manager") as root:
                assert (await root.request("day_close", business_day=DAY))["seq"] == close_seq
                assert (await root.request("print", job_id="r-1", document={"blocks": []}))["duplicate"]
    asyncio.run(after_restart())


def test_a_journal_from_before_scopes_keeps_its_tx_ids(short_dir):
    """Records without a uid (an older edged wrote them) stay duplicates for whoever resends, and a
    client's old `print:` tx_id does not take edged's."""
    os.chmod(short_dir, 0o755)
    store = Store(RealDisk(str(short_dir / "st" / "journal")))
    store.open()
    store.append([[Entry("sale", {"total": 1}, tx_id="pos:sale-7"), Entry("sale", "old", tx_id="print:r-9")]])
    store.close()
    path = str(short_dir / "s.sock")

    async def scenario():
        async with Daemon(_cfg(short_dir), simulate=True).parts():
            pos = await _pos(path, lambda c: answer(c, "append", records=[
                {"kind": "sale", "body": {"total": 1}, "tx_id": "pos:sale-7"}])["records"][0])
            assert pos == {"seq": 1, "duplicate": True}
            async with await Client.connect(path, "manager") as root:
                job = await root.request("print", job_id="r-9", raw=b"r-9\n")
                assert job["duplicate"] is False
    asyncio.run(scenario())
    assert [(r.kind, r.tx_id) for r in _records(short_dir)][:3] == [
        ("sale", "pos:sale-7"), ("sale", "print:r-9"), ("print.job", "print:r-9")]
