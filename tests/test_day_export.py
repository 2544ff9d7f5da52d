"""Day close and export to a directory, checked by `edged verify`; every kind of tampering caught."""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edged import config, identity
from edged.client import Client, ClientError
from edged.daemon import Daemon
from edged.day import signing
from edged.day.verify import check
from edged.journal import frame as fr


def _cfg(d: Path) -> config.Config:
    return config.from_dict({"till_id": "till-7", "numbering": {"receipt": {"first": 500, "last": 999}},
                             "daemon": {"socket": str(d / "s.sock"), "state_dir": str(d / "st")}})


async def _sales(c: Client, day: str, n: int) -> None:
    for i in range(n):
        await c.request("append", records=[{"kind": "sale", "body": {"day": day, "i": i, "total": "9,99 €"},
                                            "tx_id": f"{day}-{i}", "number": "receipt"}])


def _verify(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", "verify", *map(str, paths)], capture_output=True,
                          text=True, timeout=60)


def _export_days(short_dir: Path, stick: Path, days: dict[str, int]) -> list[dict]:
    async def scenario():
        out = []
        async with Daemon(_cfg(short_dir)).parts() as daemon:
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                for day, n in days.items():
                    await _sales(c, day, n)
                    segments = daemon.till.journal.store.segments
                    before = len(segments)
                    closed = await c.request("day_close", business_day=day)
                    assert len(segments) == before + 1  # the next day starts a new segment
                    out.append({"close": closed, "export": await c.request("export", business_day=day,
                                                                            target=str(stick))})
        return out
    return asyncio.run(scenario())


def test_close_export_verify(short_dir, tmp_path):
    stick = tmp_path / "stick"
    stick.mkdir()
    got = _export_days(short_dir, stick, {"2026-11-19": 3, "2026-11-20": 0, "2026-11-21": 5})
    first = got[0]["close"]
    assert (first["first_seq"], first["last_seq"], first["counts"]) == (1, 3, {"sale": 3})
    assert first["numbers"] == {"receipt": [500, 502]} and first["till_id"] == "till-7" and not first["duplicate"]
    quiet = got[1]["close"]  # no sales: only the record of the day before's export
    assert (quiet["first_seq"], quiet["last_seq"], quiet["counts"]) == (5, 5, {"day.exported": 1})
    third = got[2]["close"]
    assert third["counts"] == {"sale": 5, "day.exported": 1}
    assert got[2]["export"]["path"] == str(stick / "EDGED" / "till-7" / "20261121")
    assert sorted(os.listdir(stick / "EDGED" / "till-7")) == ["20261119", "20261120", "20261121"]

    out = _verify(stick)
    assert out.returncode == 0, out.stdout
    assert "ok   till-7 2026-11-19: records 1..4, 4 records" in out.stdout

    async def again():  # after a restart: closing again answers the same record; days close in order
        async with Daemon(_cfg(short_dir)).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                same = await c.request("day_close", business_day="2026-11-19")
                assert same["duplicate"] and same["seq"] == first["seq"]
                with pytest.raises(ClientError) as e:
                    await c.request("day_close", business_day="2026-11-18")
                assert "before the last closed day 2026-11-21" in e.value.message
                with pytest.raises(ClientError) as e:
                    await c.request("day_close", business_day="2026-02-30")
                assert e.value.code == "bad_request" and "YYYY-MM-DD" in e.value.message
                days = (await c.request("days"))["days"]
                assert [d["exported"]["path"][-8:] for d in days] == ["20261119", "20261120", "20261121"]
                with pytest.raises(ClientError) as e:
                    await c.request("export", business_day="2026-11-22", target=str(stick))
                assert e.value.code == "not_found" and "not closed" in e.value.message
    asyncio.run(again())


def _forger() -> identity.Identity:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    return identity.Identity(key, 1, key.public_key().public_bytes(serialization.Encoding.Raw,
                                                                    serialization.PublicFormat.Raw))


def _rewrite(export: Path, frames_edit) -> None:
    """Re-frame journal.seg after `frames_edit(list of frame bytes)` and fix the manifest's checksums,
    re-signed by a key of the forger's own, as a careful forger would."""
    import hashlib

    seg = (export / "journal.seg").read_bytes()
    head, pos, frames = seg[:fr.SEG_HEAD_SIZE], fr.SEG_HEAD_SIZE, []
    while pos < len(seg):
        rec = fr.decode(seg, pos, None)
        frames.append(seg[pos:pos + rec.size])
        pos += rec.size
    data = head + b"".join(frames_edit(frames))
    (export / "journal.seg").write_bytes(data)
    m = json.loads((export / "manifest.json").read_text())
    m["files"]["journal.seg"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    signing.sign_manifest(m, _forger())
    (export / "manifest.json").write_text(json.dumps(m))


def test_verify_catches_every_tampering(short_dir, tmp_path):
    clean = tmp_path / "clean"
    clean.mkdir()
    _export_days(short_dir, clean, {"2026-11-19": 3, "2026-11-20": 4, "2026-11-21": 2})
    day = Path("EDGED/till-7/20261120")

    def tampered(name: str, how) -> subprocess.CompletedProcess:
        copy = tmp_path / name
        shutil.copytree(clean, copy)
        how(copy / day)
        return _verify(copy)

    def flip(export: Path) -> None:
        data = bytearray((export / "journal.seg").read_bytes())
        data[200] ^= 0x01
        (export / "journal.seg").write_bytes(bytes(data))

    def forge_sale(frames):  # a record inserted with a correct CRC but no place in the chain
        rec = fr.decode(frames[1], 0, None)
        raw, _ = fr.encode(rec.seq, rec.ts, fr.payload_of("sale", {"forged": True}, None, None, None),
                           rec.seq, rec.seq, bytes(32))
        return frames[:1] + [raw] + frames[1:]

    cases = {
        "file removed": (lambda e: (e / "journal.seg").unlink(), "journal.seg: missing"),
        "byte flipped": (flip, "journal.seg: record 5: chain link mismatch"),
        "record removed": (lambda e: _rewrite(e, lambda f: f[:1] + f[2:]), "journal.seg: records 6..6 missing (seq 7 follows 5)"),
        "record inserted": (lambda e: _rewrite(e, forge_sale), "journal.seg: record 6: chain link mismatch"),
        "chain broken": (lambda e: _rewrite(e, lambda f: [fr.encode(*(lambda r: (r.seq, r.ts, fr.payload_of(
            r.kind, {**r.body, "total": "0,01 €"}, r.tx_id, r.counter, r.number), r.batch_first, r.batch_last,
            bytes(32)))(fr.decode(f[0], 0, None)))[0]] + f[1:]), "journal.seg: record 5: chain link mismatch"),
        "day missing": (lambda e: shutil.rmtree(e), "gap: records 5..10 missing between 2026-11-19 (ends at 4) "
                                                    "and 2026-11-21 (starts at 11)"),
    }
    for name, (how, message) in cases.items():
        out = tampered(name.replace(" ", "-"), how)
        assert out.returncode == 1, (name, out.stdout)
        assert message in out.stdout, (name, out.stdout.splitlines())
    assert check(clean / day).problems == []


def _mount_tmpfs(where: Path, options: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root (CI runs as root)")
    where.mkdir()
    out = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "edged-test", str(where)], capture_output=True)
    if out.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {out.stderr.decode().strip()}")


def test_a_full_or_read_only_target_leaves_the_day_unexported(short_dir, tmp_path):
    full, ro, good = tmp_path / "full", tmp_path / "ro", tmp_path / "good"
    _mount_tmpfs(full, "size=12k")
    try:
        _mount_tmpfs(ro, "ro,size=1m")
        good.mkdir()

        async def scenario():
            async with Daemon(_cfg(short_dir)).parts():
                async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                    await c.request("watch", topics=["usb"])
                    await _sales(c, "2026-11-19", 200)
                    await c.request("day_close", business_day="2026-11-19")
                    for target, why in ((full, "the stick is full"), (ro, "the stick is read-only")):
                        with pytest.raises(ClientError) as e:
                            await c.request("export", business_day="2026-11-19", target=str(target))
                        assert e.value.code == "device_unavailable" and why in e.value.message
                        events = []
                        while not events or events[-1]["state"] != "failed":
                            events.append(await c.next_event(5))
                        assert events[-1]["reason"] == why
                        assert not (target / "EDGED" / "till-7" / "20261119").exists()  # nothing final
                        assert (await c.request("days"))["days"][0]["exported"] is None
                    done = await c.request("export", business_day="2026-11-19", target=str(good))  # the retry
                    assert (await c.request("days"))["days"][0]["exported"]["path"] == done["path"]
                    writing = [e async for e in _until_done(c)]
                    assert writing[-1]["state"] == "done" and any(e["state"] == "writing" for e in writing)
        asyncio.run(scenario())
        assert _verify(good).returncode == 0
    finally:
        for m in (full, ro):
            subprocess.run(["umount", str(m)], capture_output=True)


def test_export_progress_ends_at_the_bytes_reported_done(short_dir, tmp_path):
    """Progress counts every byte written, manifest.json too, and `done` reports the same figure:
    the size of what is on the stick."""
    stick = tmp_path / "stick"
    stick.mkdir()

    async def scenario():
        async with Daemon(_cfg(short_dir), simulate=True).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                await _sales(c, "2026-11-19", 300)
                await c.request("day_close", business_day="2026-11-19")
                await c.request("export", business_day="2026-11-19")
                assert (await c.next_event(5))["state"] == "waiting"
                await c.request("sim", stick=str(stick))
                events = []
                while not events or events[-1].get("state") not in ("done", "failed"):
                    events.append(await c.next_event(30))
                return events
    events = asyncio.run(scenario())
    done = events[-1]
    assert done["state"] == "done", done
    writing = [e for e in events if e.get("state") == "writing"]
    assert writing and all(e["total"] == writing[0]["total"] for e in writing)
    assert [e["bytes"] for e in writing] == sorted(e["bytes"] for e in writing)
    on_stick = sum(f.stat().st_size for f in Path(done["path"]).iterdir())
    assert writing[-1]["bytes"] == writing[-1]["total"] == done["bytes"] == on_stick


async def _until_done(c: Client):
    while True:
        ev = await c.next_event(5)
        yield ev
        if ev["state"] in ("done", "failed"):
            return


def test_day_cli(short_dir, tmp_path):
    async def scenario():
        async with Daemon(_cfg(short_dir)).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await _sales(c, "2026-11-19", 2)
            env = dict(os.environ, EDGED_SOCKET=str(short_dir / "s.sock"))

            async def cli(*args):
                proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edged", *args, env=env,
                                                            stdout=asyncio.subprocess.PIPE,
                                                            stderr=asyncio.subprocess.PIPE)
                out, err = await proc.communicate()
                return proc.returncode, out.decode(), err.decode()

            assert (await cli("day", "list"))[1] == "no closed days\n"
            code, out, _ = await cli("day", "close", "2026-11-19")
            assert code == 0 and out == "2026-11-19 closed: records 1..2 (sale 2); day-close record 3\n"
            code, out, _ = await cli("day", "close", "2026-11-19")
            assert out.startswith("2026-11-19 was already closed: records 1..2")
            code, out, err = await cli("export", "2026-11-19", "--to", "relative/dir")
            assert code != 0 and "an absolute directory path" in err
            code, out, _ = await cli("export", "2026-11-19", "--to", str(tmp_path))
            assert code == 0 and f"exported to {tmp_path}/EDGED/till-7/20261119 (records 1..3)" in out
            code, out, _ = await cli("day", "list")
            assert out == f"2026-11-19  records 1..2  close 3  {tmp_path}/EDGED/till-7/20261119\n"
    asyncio.run(scenario())


def test_export_cli_to_a_simulated_stick(short_dir, tmp_path):
    """`edged export DATE` waits for a stick, shows progress, ends once it is safe to remove; a stick
    with a link where EDGED should be fails with the reason and the day stays asked for."""
    stick, bad = tmp_path / "stick", tmp_path / "bad"
    stick.mkdir()
    bad.mkdir()
    (bad / "EDGED").symlink_to(tmp_path)
    env = dict(os.environ, EDGED_SOCKET=str(short_dir / "s.sock"))

    async def cli(*args):
        proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "edged", *args, env=env,
                                                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        return proc

    async def scenario():
        async with Daemon(_cfg(short_dir), simulate=True).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await _sales(c, "2026-11-19", 300)
                await c.request("day_close", business_day="2026-11-19")
                proc = await cli("export", "2026-11-19")
                first = await asyncio.wait_for(proc.stdout.readline(), 30)
                assert first.startswith(b"plug a USB stick into the till"), first
                plug = await cli("sim", "stick", str(bad))
                assert (await plug.communicate())[0] == f"simulated stick sim1 plugged in: {bad}\n".encode()
                out, err = await asyncio.wait_for(proc.communicate(), 30)
                assert proc.returncode == 1
                assert "export of 2026-11-19 failed: EDGED on the stick is a symbolic link; refused" in err.decode()
                days = await cli("day", "list")
                assert b"not exported, waiting for a USB stick" in (await days.communicate())[0]
                unplug = await cli("sim", "stick", "--unplug", "sim1")
                assert (await unplug.communicate())[0] == b"simulated stick sim1 pulled\n"
                plug = await cli("sim", "stick", str(stick))  # the day was still asked for: written at once
                await plug.communicate()
                proc = await cli("export", "2026-11-19")  # and written again, by its date
                out, err = await asyncio.wait_for(proc.communicate(), 30)
                assert proc.returncode == 0, err
                lines = out.decode().splitlines()
                assert lines == ["the stick is unmounted: safe to remove",
                                 f"2026-11-19 exported to {stick}/EDGED/till-7/20261119 on sim2"], lines
                assert "100% " in err.decode() and " kB" in err.decode()
                status = await cli("status")
                assert b"usb       sticks: sim2 (directory); mounter directory" in (await status.communicate())[0]
    asyncio.run(scenario())
    assert _verify(stick).returncode == 0


def test_a_re_export_cut_between_its_renames_keeps_the_old_export(short_dir, tmp_path):
    """Pulled after the old export was moved aside but before the new one took its name: the next
    attempt puts the old one back first, so the stick never ends up with less than before."""
    import errno

    from edged.day import export as ex

    stick = tmp_path / "stick"
    stick.mkdir()
    path = Path(_export_days(short_dir, stick, {"2026-11-19": 3})[0]["export"]["path"])
    files = {"journal.seg": (path / "journal.seg").read_bytes()}
    manifest = json.loads((path / "manifest.json").read_text())
    till = path.parent
    os.rename(path, till / ".20261119.replaced-1")  # the state a pull between the two renames leaves
    (till / ".20261119.partial").mkdir()

    def pulled(step: str) -> None:
        if step == "file":
            raise OSError(errno.EIO, "Input/output error")
    with pytest.raises(ex.ExportError, match="removed or failed"):
        ex.write(str(stick), "till-7", "2026-11-19", files, manifest, step=pulled)
    assert sorted(os.listdir(till)) == ["20261119"]
    assert _verify(stick).returncode == 0


def test_a_stick_whose_mount_vanishes_mid_export_is_reported_removed(short_dir, tmp_path):
    """Found on real USB (tests/till/test_sticks.py): a stick pulled mid-export does not always fail
    the write with EIO or ENODEV. udisks2 cleans up the dead mount's directory, and the writer meets
    "No such file or directory". The reason must still say the stick was removed, and the day stays
    owed. Here the simulated stick's directory vanishes just before the first data file is created."""
    stick = tmp_path / "stick"
    stick.mkdir()

    async def scenario():
        async with Daemon(_cfg(short_dir), simulate=True).parts() as daemon:
            daemon.carrier.on_step = lambda step: step == "file" and shutil.rmtree(stick)
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                await _sales(c, "2026-11-19", 3)
                await c.request("day_close", business_day="2026-11-19")
                await c.request("export", business_day="2026-11-19")
                await c.request("sim", stick=str(stick))
                while (ev := await c.next_event(30)).get("state") not in ("done", "failed"):
                    pass
                return ev, (await c.request("days"))["days"][0]
    end, day = asyncio.run(scenario())
    assert end["state"] == "failed", end
    assert end["reason"].startswith("the stick was removed or failed (No such file or directory"), end
    assert day["exported"] is None and day["pending"], day


def test_a_short_write_on_a_filling_stick_is_not_an_export(short_dir, tmp_path):
    """Found on real USB (tests/till/test_sticks.py, the full stick): when a stick fills up, write()
    takes what fits and returns that count; ENOSPC comes only with the next write. edged took the
    short count for the whole file, wrote the manifest into the last free cluster and said `done`
    for a stick holding 8 KiB of a 53 KiB journal.seg. Here a tmpfs leaves 8 KiB for journal.seg, and
    room for the manifest is made just before it is written: the export must still fail, full."""
    target = tmp_path / "stick"
    _mount_tmpfs(target, "size=64k")
    try:
        filler = target / "holiday.mp4"
        filler.write_bytes(b"\xa5" * (56 << 10))

        async def scenario():
            async with Daemon(_cfg(short_dir)).parts() as daemon:
                daemon.carrier.on_step = lambda step: step == "manifest" and filler.unlink(missing_ok=True)
                async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                    await _sales(c, "2026-11-19", 200)
                    await c.request("day_close", business_day="2026-11-19")
                    with pytest.raises(ClientError) as e:
                        await c.request("export", business_day="2026-11-19", target=str(target))
                    assert e.value.code == "device_unavailable" and "the stick is full" in e.value.message
                    assert (await c.request("days"))["days"][0]["exported"] is None
        asyncio.run(scenario())
        assert filler.exists()  # the manifest step was never reached: the second write said ENOSPC
        assert not (target / "EDGED" / "till-7" / "20261119").exists()
    finally:
        subprocess.run(["umount", str(target)], capture_output=True)
