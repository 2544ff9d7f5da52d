"""Head office: 30 offline days exported to sticks and imported (some twice, out of order) into an
archive that then equals the till's journal; a skipped day is a gap until re-exported by date;
a conflicting export is refused."""
from __future__ import annotations

import asyncio
import datetime
import json
import random
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

from edged import config, identity
from edged.client import Client
from edged.daemon import Daemon
from edged.day import signing
from edged.day.verify import check


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def _enroll(archive: Path, state_dir: Path, till: str = "till-3") -> None:
    """What head office does once per till: enroll the key `edged identity` shows on it."""
    out = _cli("archive", "enroll", archive, till, identity.read_info(str(state_dir))["public_key"])
    assert out.returncode == 0, out.stdout + out.stderr


def _forger() -> identity.Identity:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    return identity.Identity(key, 1, key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                    serialization.PublicFormat.Raw))


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
    _enroll(archive, short_dir / "st")
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
    _enroll(archive, short_dir / "a")
    _enroll(archive, short_dir / "b", "till-3")
    assert _cli("import", tmp_path / "a", "--archive", archive).returncode == 0
    out = _cli("import", tmp_path / "b", "--archive", archive)
    assert out.returncode == 1
    assert "REFUSED CONFLICT till-3 2026-10-01" in out.stdout and "seq 1 is archived with another chain link" \
        in out.stdout
    assert "0 records added" in out.stdout and "1 export refused" in out.stdout
    status = _cli("archive", "status", archive)
    assert status.stdout.startswith("till-3: 1 day (2026-10-01), "), status.stdout
    as_json = json.loads(_cli("archive", "status", archive, "--json").stdout)
    assert as_json["till-3"]["days"] == ["2026-10-01"] and as_json["till-3"]["gaps"] == []
    shutil.rmtree(tmp_path / "b")


def test_excluded_kinds_verify_and_are_archived_as_left_out(short_dir, tmp_path):
    """export.exclude_kinds: stock movements stay on the till. The export verifies, names the left-out
    seqs, and the archive counts them as left out, not as gaps; a real gap is still one."""
    days = ["2026-11-16", "2026-11-17", "2026-11-18"]
    sticks = tmp_path / "sticks"
    cfg = _cfg(short_dir)
    cfg.export.exclude_kinds = ["stock.move"]
    pattern = ["stock.move", "sale", "stock.move", "stock.move", "sale", "stock.move"]  # runs of 1 and 2, one first

    async def till() -> dict[str, dict]:
        out = {}
        async with Daemon(cfg).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                for day in days:
                    for i, kind in enumerate(pattern):
                        await c.request("append", records=[{"kind": kind, "body": {"day": day, "i": i}}])
                    out[day] = await c.request("day_close", business_day=day)
                    if day != "2026-11-17":  # the middle day is not exported: a real gap
                        (sticks / day).mkdir(parents=True)
                        await c.request("export", business_day=day, target=str(sticks / day))
        return out
    closed = asyncio.run(till())

    ok = _cli("verify", sticks / days[0])
    assert ok.returncode == 0, ok.stdout
    assert "till-3 2026-11-16: records 1..7, 3 records and 4 left out on purpose (stock.move 4)" in ok.stdout
    export = sticks / "2026-11-16" / "EDGED" / "till-3" / "20261116"
    manifest = __import__("json").loads((export / "manifest.json").read_text())
    assert manifest["excluded"] == {"kinds": ["stock.move"], "counts": {"stock.move": 4},
                                    "runs": [[1, 1, manifest["excluded"]["runs"][0][2]],
                                             [3, 4, manifest["excluded"]["runs"][1][2]],
                                             [6, 6, manifest["excluded"]["runs"][2][2]]]}
    assert manifest["counts"] == {"sale": 2, "day.close": 1} and manifest["format"] == "edged-export/3"
    assert closed[days[0]]["counts"] == {"sale": 2, "stock.move": 4}  # the day itself is whole
    assert closed[days[0]]["excluded_kinds"] == ["stock.move"]  # pinned in the chain at day close
    assert check(export).counts == {"sale": 2, "day.close": 1}

    archive = tmp_path / "archive"
    _enroll(archive, short_dir / "st")
    out = _cli("import", sticks, "--archive", archive)
    assert out.returncode == 0, out.stdout
    assert "till-3 2026-11-16: 3 records added, 0 already archived, 4 left out by the till" in out.stdout
    assert "till-3: gap: records 8..15 missing (after 2026-11-16, before 2026-11-18)" in out.stdout
    status = _cli("archive", "status", archive).stdout
    assert "6 records, 8 left out by the till (stock.move; not gaps), seq 1..22, gaps: 8..15" in status, status
    again = _cli("import", sticks, "--archive", archive)
    assert "0 records added, 6 already archived" in again.stdout

    # Tampering with what was left out is caught: a run dropped, a link changed, and sales removed
    # and declared "left out" (the day.close record allows leaving out stock.move only).
    def forge_sales_left_out(m: dict, seg: Path) -> None:
        from edged.journal import frame as fr
        data = seg.read_bytes()
        kept, pos, runs = [], fr.SEG_HEAD_SIZE, m["excluded"]["runs"]
        runs[:] = [[1, 6, runs[2][2]]]  # the sales (seqs 2 and 5) join the stock moves around them
        while pos < len(data):
            rec = fr.decode(data, pos, None)
            if rec.kind != "sale":
                kept.append(data[pos:pos + rec.size])
            pos += rec.size
        seg.write_bytes(data[:fr.SEG_HEAD_SIZE] + b"".join(kept))
        m["excluded"]["counts"] = {"stock.move": 4, "sale": 2}
        m["excluded"]["kinds"] = ["sale", "stock.move"]
        m["counts"] = {"day.close": 1}
        blob = seg.read_bytes()
        m["files"]["journal.seg"] = {"size": len(blob), "sha256": __import__("hashlib").sha256(blob).hexdigest()}

    for change, fragment in [(lambda m, seg: m["excluded"]["runs"].pop(1), "left out, but the runs hold"),
                             (lambda m, seg: m["excluded"]["runs"][1].__setitem__(2, "00" * 32), "chain link mismatch"),
                             (forge_sales_left_out, "the day.close record allows leaving out only ['stock.move']")]:
        bad = tmp_path / f"bad-{fragment[:4]}"
        shutil.copytree(export, bad)
        m = __import__("json").loads((bad / "manifest.json").read_text())
        change(m, bad / "journal.seg")
        signing.sign_manifest(m, _forger())  # re-signed by the forger's own key: the day.close still says no
        (bad / "manifest.json").write_text(__import__("json").dumps(m))
        out = _cli("verify", bad)
        assert out.returncode == 1 and fragment in out.stdout, out.stdout
