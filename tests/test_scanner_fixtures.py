"""Recorded scanner input: every fixture in tests/fixtures/scans (the `edged scan record`
format) replayed by one runner through a real Scanner reading a pipe of its raw events;
the record and layouts commands themselves."""
from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edged import config
from edged.client import Client, ClientError
from edged.daemon import Daemon
from edged.devices.scanner import fixture
from edged.devices.scanner.device import Scanner
from edged.sim.wedge import packed, pipe_device, typing
from printing import until

FIXTURES = sorted((Path(__file__).parent / "fixtures" / "scans").glob("*.json"))


@pytest.mark.parametrize("path", FIXTURES, ids=[p.stem for p in FIXTURES])
def test_fixture_replayed_through_a_scanner(path):
    doc = fixture.load(path)

    async def scenario():
        scans: list[dict] = []
        dev, w = pipe_device(path.stem)
        settings = config.ScannerSettings(device=f"/dev/input/by-id/{path.stem}", layout=doc["layout"],
                                          variant=doc["variant"], suffix=doc["suffix"], timeout=doc["timeout"])
        scanner = Scanner(path.stem, settings, lambda e: scans.append(e) or 1, lambda _: dev)
        await scanner.start()
        try:
            os.write(w, fixture.pack(doc["events"]))
            def read() -> list[str]:  # as the scanner typed it: AIM id (split off by edged) + data
                return [(e["symbology"] or "") + e["code"] for e in scans if e["event"] == "scanner.scan"]

            await until(lambda: read() == doc["scans"], timeout=5, what=f"scans {doc['scans']!r}")
            await asyncio.sleep(doc["timeout"] * 3)  # nothing more comes out of it
            assert read() == doc["scans"]
        finally:
            os.close(w)
            await scanner.stop()
    asyncio.run(scenario())


def test_fixtures_cover_the_layouts_and_cases():
    assert {p.stem for p in FIXTURES} >= {"us-symbols", "de-qwertz", "no-aeoeaa", "us-capslock-shift",
                                          "us-repeats", "de-timeout-split", "us-gs1-128",
                                          # recorded from the kernel in the till VM (README.md there)
                                          "usb-gadget-us", "usb-gadget-de", "usb-gadget-no",
                                          "usb-gadget-us-syn-dropped"}


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=30,
                          env=env)


def test_record_writes_a_fixture_and_layouts_reads_it(tmp_path):
    fifo = tmp_path / "scanner.fifo"
    os.mkfifo(fifo)
    events = typing("Zy@", "de") + typing("Öl", "de", start=1001)
    feeder = threading.Thread(target=lambda: fifo.write_bytes(packed(events)))
    feeder.start()
    out = _cli("scan", "record", str(fifo), str(tmp_path / "f.json"), "--layout", "de", "--timeout", "0.5")
    feeder.join()
    assert out.returncode == 0, out.stderr
    assert "scan: 'Zy@'" in out.stdout and f"wrote {2 * len(events)} events, 2 scans (read as layout de)" in out.stdout
    doc = fixture.load(tmp_path / "f.json")
    assert doc["scans"] == ["Zy@", "Öl"] and doc["layout"] == "de" and doc["timeout"] == 0.5
    assert fixture.pack(doc["events"]) == packed(events)  # the raw events, SYN included, byte for byte

    shown = _cli("scan", "layouts", "--file", str(tmp_path / "f.json"), "--expect", "Zy@\nÖl")
    assert shown.returncode == 0, shown.stderr
    lines = {line.split()[0]: line for line in shown.stdout.splitlines() if line.startswith("  ")}
    assert "configured" in lines["de"] and "= expected" in lines["de"]
    assert lines["us"].split()[1] == "'Yzq\\n:l'"  # German-programmed, read as US: AltGr+Q is just q
    assert 'set layout = "de"' in shown.stdout

    wrong = _cli("scan", "layouts", "--file", str(tmp_path / "f.json"), "--expect", "nothing reads this")
    assert wrong.returncode == 1 and "no common layout reads 'nothing reads this'" in wrong.stdout


def test_record_refuses_clearly(tmp_path):
    missing = _cli("scan", "record", str(tmp_path / "nope"), str(tmp_path / "f.json"))
    assert missing.returncode == 1 and "No such file or directory" in missing.stderr
    assert str(tmp_path / "nope") in missing.stderr
    bad = _cli("scan", "record", str(tmp_path / "nope"), str(tmp_path / "f.json"), "--layout", "qq")
    assert bad.returncode == 1 and "unknown keyboard layout 'qq'" in bad.stderr
    slow = _cli("scan", "record", str(tmp_path / "nope"), str(tmp_path / "f.json"), "--timeout", "9")
    assert slow.returncode == 2 and "'9': seconds between 0.005 and 5" in slow.stderr
    adir = _cli("scan", "record", str(tmp_path), str(tmp_path / "f.json"))
    assert adir.returncode == 1 and "not an input device, file or FIFO" in adir.stderr
    nowhere = _cli("scan", "record", str(tmp_path), str(tmp_path / "no" / "f.json"))
    assert nowhere.returncode == 1 and "no/f.json: cannot write: No such file or directory" in nowhere.stderr
    (tmp_path / "not.json").write_text("{}")
    notfix = _cli("scan", "layouts", "--file", str(tmp_path / "not.json"))
    assert notfix.returncode == 1 and "not a scan fixture" in notfix.stderr
    (tmp_path / "half.json").write_text('{"format": "edged-scan-fixture/1", "events": [[1, 0, 1, 30, "x"]]}')
    half = _cli("scan", "layouts", "--file", str(tmp_path / "half.json"))
    assert half.returncode == 1 and "[sec, usec, type, code, value] integers" in half.stderr


def test_scan_layouts_says_at_once_when_there_is_no_wedge_scanner(short_dir):
    async def scenario():
        cfg = config.from_dict({"daemon": {"socket": str(short_dir / "s.sock"), "state_dir": str(short_dir / "st")},
                                "scanners": {"door": {"backend": "serial", "device": "/dev/ttyNONE", "suffix": "cr"}}})
        async with Daemon(cfg).parts():
            cli = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "edged", "scan", "layouts", env=dict(os.environ, EDGED_SOCKET=cfg.daemon.socket),
                stderr=asyncio.subprocess.PIPE)
            _, err = await asyncio.wait_for(cli.communicate(), 10)
            assert cli.returncode == 1
            assert "no keyboard-wedge scanner (configured: none); serial scanners send characters" in err.decode()
    asyncio.run(scenario())


def test_scan_layouts_on_the_running_daemon(short_dir):
    async def scenario():
        dev, w = pipe_device("front")
        cfg = config.from_dict({"daemon": {"socket": str(short_dir / "s.sock"), "state_dir": str(short_dir / "st")},
                                "scanners": {"front": {"device": "/dev/input/by-id/usb-front-event-kbd",
                                                       "layout": "us"}}})
        async with Daemon(cfg, input_opener=lambda _: dev).parts():
            async with await Client.connect(cfg.daemon.socket, "tech") as c:
                with pytest.raises(ClientError) as err:
                    await c.request("scan_layouts")
                assert err.value.code == "not_found" and "no scan from front yet" in err.value.message
                env = dict(os.environ, EDGED_SOCKET=cfg.daemon.socket)
                cli = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "edged", "scan", "layouts", "--expect", "Zürich-é", env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
                assert b"scan a barcode now" in await asyncio.wait_for(cli.stdout.readline(), 10)
                os.write(w, packed(typing("Zürich-é", "ch")))  # programmed Swiss German, configured US
                out, err_out = await asyncio.wait_for(cli.communicate(), 10)
                assert cli.returncode == 0, err_out
                text = out.decode()
                assert "scanner front (configured layout: us)" in text and 'set layout = "ch"' in text
                answer = await c.request("scan_layouts", layouts=["us", "ch"])
                assert answer["device"] == "front" and answer["layout"] == "us"
                assert answer["read_as"]["ch"] == "Zürich-é" and answer["read_as"]["us"] != "Zürich-é"
                with pytest.raises(ClientError) as err:
                    await c.request("scan_layouts", layouts=["klingon"])
                assert err.value.code == "bad_request"
                assert "layouts[0]: unknown keyboard layout 'klingon'" in err.value.message
        os.close(w)
    asyncio.run(scenario())
