"""Head office: 30 offline days exported to sticks and imported (some twice, out of order) into an
archive that then equals the till's journal; a skipped day is a gap until re-exported by date;
a conflicting export is refused."""
from __future__ import annotations

import asyncio
import datetime
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from edged import config
from edged.client import Client
from edged.daemon import Daemon


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _cfg(d: Path) -> config.Config:
    return config.from_dict({"till_id": "till-3", "numbering": {"receipt": {"first": 3000000, "last": 3999999}},
                             "daemon": {"socket": str(d / "s.sock"), "state_dir": str(d / "st")}})


def test_thirty_offline_days_imported_exactly_once(short_dir, tmp_path):
    days = [(datetime.date(2026, 10, 1) + datetime.timedelta(n)).isoformat() for n in range(30)]
    skipped = days[16]
    sticks = tmp_path / "sticks"

    async def till() -> list[tuple[int, bytes]]:
        async with Daemon(_cfg(short_dir)).parts() as daemon:
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                for n, day in enumerate(days):
                    for i in range(n % 4 + 1):
                        await c.request("append", records=[{"kind": "sale", "body": {"day": day, "i": i},
                                                            "tx_id": f"{day}/{i}", "number": "receipt"}])
                    await c.request("day_close", business_day=day)
                    if day != skipped:
                        stick = sticks / f"stick-{n:02d}"
                        stick.mkdir(parents=True)
                        await c.request("export", business_day=day, target=str(stick))
                records = await daemon.till.journal.scan(1, ("sale", "day.close", "day.exported"))
                last_close = max(r.seq for r in records if r.kind == "day.close")
                return [(r.seq, r.chain) for r in records if r.seq <= last_close]  # the closed days
    journal = asyncio.run(till())

    archive = tmp_path / "archive"
    order = sorted(sticks.iterdir())
    random.Random(7).shuffle(order)
    twice = order + order[:5]  # five sticks imported a second time
    out = _cli("import", *twice[:15], "--archive", archive)
    assert out.returncode == 0, out.stdout + out.stderr
    out = _cli("import", *twice[15:], "--archive", archive)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "already archived" in out.stdout
    gap = [line for line in _cli("archive", "status", archive).stdout.splitlines() if line.startswith("till-3")]
    assert len(gap) == 1 and "29 days" in gap[0] and "gaps: none" not in gap[0]
    assert f"missing (after {days[15]}, before {days[17]})" in out.stdout

    async def re_export():  # the skipped day, written again by its date
        async with Daemon(_cfg(short_dir)).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("export", business_day=skipped, target=str(tmp_path / "late"))
    (tmp_path / "late").mkdir()
    asyncio.run(re_export())
    out = _cli("import", tmp_path / "late", sticks, "--archive", archive)
    assert out.returncode == 0 and "0 exports refused" in out.stdout
    status = _cli("archive", "status", archive).stdout
    assert "till-3: 30 days (2026-10-01 .. 2026-10-30)" in status and "gaps: none" in status

    db = sqlite3.connect(archive / "archive.sqlite")
    archived = db.execute("SELECT seq, chain FROM records WHERE till='till-3' ORDER BY seq").fetchall()
    assert [(s, bytes(c)) for s, c in archived] == journal  # equal to the journal: nothing twice, nothing missing
    assert db.execute("SELECT COUNT(*), COUNT(DISTINCT seq) FROM records").fetchone() == (len(journal),) * 2


def test_a_conflicting_export_is_refused_loudly(short_dir, tmp_path):
    """Another journal under the same till id (a till restored from an old image, say): same seqs,
    different records. Import refuses it whole and says which seq."""
    def one_day(state: Path, stick: Path, what: str) -> None:
        async def run():
            cfg = config.from_dict({"till_id": "till-3", "daemon": {"socket": str(short_dir / "s.sock"),
                                                                  "state_dir": str(state)}})
            async with Daemon(cfg).parts():
                async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                    await c.request("append", records=[{"kind": "sale", "body": {"what": what}}])
                    await c.request("day_close", business_day="2026-10-01")
                    await c.request("export", business_day="2026-10-01", target=str(stick))
        stick.mkdir()
        asyncio.run(run())

    one_day(short_dir / "a", tmp_path / "a", "bread")
    one_day(short_dir / "b", tmp_path / "b", "cake")
    archive = tmp_path / "archive"
    assert _cli("import", tmp_path / "a", "--archive", archive).returncode == 0
    out = _cli("import", tmp_path / "b", "--archive", archive)
    assert out.returncode == 1
    assert "REFUSED CONFLICT till-3 2026-10-01" in out.stdout and "seq 1 is archived with another chain link" \
        in out.stdout
    assert "0 records added" in out.stdout
    shutil.rmtree(tmp_path / "b")
