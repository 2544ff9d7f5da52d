"""USB sticks on real block devices: loop devices with a partition table, real
kernel add/remove events (partx), real mounts, a stick pulled at each step of
an export. Root only (CI runs as root); see tests/blockdev.py."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from blockdev import StickImage, require_blockdev, sh, udisks_running
from edged import config
from edged.client import Client
from edged.daemon import Daemon
from edged.day.export import DAMAGED, STEPS
from edged.usb.mount import MountError, Udisks, mount_flags
from edged.usb.probe import Stick, classify

DAY = "2026-11-19"


@pytest.fixture
def sticks(tmp_path):
    require_blockdev()
    made: list[StickImage] = []

    def make(**kw) -> StickImage:
        made.append(StickImage(tmp_path, **kw))
        return made[-1]
    yield make
    for stick in made:
        stick.close()


def _cfg(d: Path, filesystems=("exfat", "ext4")) -> config.Config:
    return config.from_dict({"till_id": "till-7",
                             "daemon": {"socket": str(d / "s.sock"), "state_dir": str(d / "st")},
                             "usb": {"mounter": "mount", "buses": ["loop"], "filesystems": list(filesystems),
                                     "mount_dir": str(d / "mnt")},
                             "export": {"usb": "on_day_close"}})


async def _sales(c: Client, day: str, n: int, batch: int = 200) -> None:
    for i in range(0, n, batch):
        await c.request("append", records=[{"kind": "sale", "body": {"day": day, "i": j, "lines": "x" * 150},
                                            "tx_id": f"{day}-{j}"} for j in range(i, min(n, i + batch))])


async def _until(c: Client, pred, timeout: float = 30.0) -> list[dict]:
    seen = []
    deadline = time.monotonic() + timeout
    while True:
        ev = await c.next_event(timeout=max(0.1, deadline - time.monotonic()))
        seen.append(ev)
        if pred(ev):
            return seen


def _verify(*paths) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", "verify", *map(str, paths)], capture_output=True,
                          text=True, timeout=60)


def test_stick_detected_exported_unmounted_removed(short_dir, tmp_path, sticks):
    stick = sticks(fs="ext4")
    flags: list[set[str] | None] = []

    async def scenario():
        async with Daemon(_cfg(short_dir)).parts() as daemon:
            daemon.carrier.on_step = lambda step: step == "write" and flags.append(
                mount_flags(str(short_dir / "mnt" / stick.device)))
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                await _sales(c, DAY, 40)
                await c.request("day_close", business_day=DAY)
                waiting = await _until(c, lambda e: e["event"] == "usb.export")
                assert waiting[-1]["state"] == "waiting" and waiting[-1]["business_day"] == DAY
                stick.plug()  # a kernel add event for loopNp1
                events = await _until(c, lambda e: e.get("state") in ("done", "failed"))
                kinds = [(e["event"], e.get("state")) for e in events]
                assert kinds[0] == ("usb.inserted", None), kinds
                assert events[0]["device"] == stick.device and events[0]["fs_type"] == "ext4"
                assert events[0]["bus"] == "loop"
                assert kinds.index(("usb.export", "started")) < kinds.index(("usb.safe_to_remove", None)) \
                    < kinds.index(("usb.export", "done")), kinds
                progress = [e for e in events if e.get("state") == "writing"]
                assert progress[-1]["bytes"] == progress[-1]["total"] > 0
                days = (await c.request("days"))["days"]
                assert days[0]["exported"]["path"].endswith("/EDGED/till-7/20261119") and not days[0]["pending"]
                assert not (short_dir / "mnt" / stick.device).exists()  # unmounted, mount point gone
                stick.unplug()
                removed = await _until(c, lambda e: e["event"] == "usb.removed")
                assert removed[-1] == {"event": "usb.removed", "device": stick.device, "safe": True}
                # the next day, closed with no stick in: waits; plugged in again, only it is written
                await _sales(c, "2026-11-20", 5)
                await c.request("day_close", business_day="2026-11-20")
                await _until(c, lambda e: e.get("state") == "waiting")
                stick.plug()
                events = await _until(c, lambda e: e.get("state") in ("done", "failed"))
                assert [e["business_day"] for e in events if e.get("state") == "started"] == ["2026-11-20"]
                assert events[-1]["state"] == "done"
                status = await c.request("status")
                assert status["usb"]["sticks"][0]["device"] == stick.device
                assert status["usb"]["sticks"][0]["mounted"] is False
                # udevd's events when it runs; here usually the kernel's, which probe.py completes
                assert status["usb"]["source"] == ("udev" if os.path.exists("/run/udev/control") else "kernel")
    asyncio.run(scenario())
    assert flags and {"nosuid", "nodev", "noexec", "noatime"} <= flags[0]
    stick.unplug()
    stick.plug()
    out = _verify(stick.look(tmp_path / "look"))
    sh("umount", str(tmp_path / "look"))
    assert out.returncode == 0, out.stdout
    assert "till-7 2026-11-19: records 1..41" in out.stdout and "2026-11-20" in out.stdout


def test_what_is_not_a_stick(short_dir, sticks):
    """ext4 when only exfat is allowed is left alone; a loop device is not on the usb bus."""
    other, good = sticks(fs="ext4"), sticks(fs="exfat")

    async def scenario():
        async with Daemon(_cfg(short_dir, filesystems=["exfat"])).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                other.plug()
                good.plug()
                events = await _until(c, lambda e: e["event"] == "usb.inserted" and e["device"] == good.device)
                assert all(e.get("device") != other.device for e in events), events
                status = await c.request("status")
                assert [s["device"] for s in status["usb"]["sticks"]] == [good.device]
        import pyudev
        dev = pyudev.Devices.from_device_file(pyudev.Context(), good.part)
        props = dict(dev.properties)
        ancestors = [(d.subsystem or "", d.sys_name) for d in dev.ancestors]
        usb_only = config.from_dict({}).usb  # the default: buses = ["usb"]
        usb_only.filesystems = ["exfat"]
        assert await classify(props, ancestors, usb_only) is None
        loop_ok = config.from_dict({"usb": {"buses": ["loop"]}}).usb
        found = await classify(props, ancestors, loop_ok)
        assert found is not None and found.fs_type == "exfat" and found.disk == good.loop
    asyncio.run(scenario())


def _pull_at(daemon: Daemon, stick: StickImage, at: str) -> None:
    pulled = threading.Event()

    def step(name: str) -> None:  # the writer thread: pull the stick right before this step
        if name == at and not pulled.is_set():
            pulled.set()
            stick.pull()
    daemon.carrier.on_step = step


@pytest.mark.parametrize("at", [*STEPS, "unmount"])
def test_stick_pulled_at_each_step(short_dir, tmp_path, sticks, at):
    stick = sticks(fs="exfat")
    final = Path("EDGED/till-7/20261119")

    async def pulled():
        async with Daemon(_cfg(short_dir)).parts() as daemon:
            _pull_at(daemon, stick, at)
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                await _sales(c, DAY, 2500)  # ~0.5 MB: the journal file takes several writes
                await c.request("day_close", business_day=DAY)
                stick.plug()
                events = await _until(c, lambda e: e.get("state") in ("done", "failed"))
                if not any(e["event"] == "usb.removed" for e in events):  # removed once the writer let go
                    events += await _until(c, lambda e: e["event"] == "usb.removed")
                ends = [e for e in events if e.get("state") in ("done", "failed")]
                assert [e["state"] for e in ends] == ["failed"], ends
                reason = ends[0]["reason"]
                assert "removed" in reason or "not unmounted" in reason, reason
                assert not any(e["event"] == "usb.safe_to_remove" for e in events)
                day = (await c.request("days"))["days"][0]
                assert day["exported"] is None and day["pending"]
    asyncio.run(pulled())
    stick.plug()  # with the daemon stopped: look at what the pull left
    look = stick.look(tmp_path / "look")
    try:
        if STEPS.index(at) < STEPS.index("fsync-parent") if at in STEPS else False:
            assert not (look / final).exists(), f"pulled before {at}: an export with the final name exists"
        elif (look / final).exists():  # renamed before the pull: then it is whole
            out = _verify(look / final)
            assert out.returncode == 0, out.stdout
    finally:
        sh("umount", str(look))

    async def retried():  # the stick is in at startup: the pending day goes onto it
        async with Daemon(_cfg(short_dir)).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                for _ in range(300):
                    day = (await c.request("days"))["days"][0]
                    if day["exported"]:
                        break
                    await asyncio.sleep(0.05)
                assert day["exported"] and not day["pending"], day
    asyncio.run(retried())
    look = stick.look(tmp_path / "look")
    try:
        out = _verify(look)
        assert out.returncode == 0, out.stdout
        assert sorted(p.name for p in (look / final).parent.iterdir()) == ["20261119"]  # no leftovers
        assert json.loads((look / final / "manifest.json").read_text())["last_seq"] == 2501
    finally:
        sh("umount", str(look))


def test_full_and_read_only_sticks(short_dir, tmp_path, sticks):
    full, ro, good = sticks(fs="exfat", size_mb=8), sticks(fs="exfat", read_only=True), sticks(fs="exfat")
    full.plug()
    filler = full.look(tmp_path / "fill", mode="rw")  # a stick with little room left
    subprocess.run(["dd", "if=/dev/zero", f"of={filler / 'holiday.mp4'}", "bs=1M", "count=7"], capture_output=True)
    sh("umount", str(filler))
    full.unplug()

    async def scenario():
        async with Daemon(_cfg(short_dir)).parts():
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                await _sales(c, DAY, 2500)
                await c.request("day_close", business_day=DAY)
                await c.request("day_close", business_day="2026-11-20")
                for stick, why in ((full, "the stick is full"), (ro, "the stick is read-only")):
                    stick.plug()
                    events = await _until(c, lambda e: e.get("business_day") == "2026-11-20"
                                          and e.get("state") in ("done", "failed"))
                    outcomes = [(e["business_day"], e["reason"]) for e in events if e.get("state") == "failed"]
                    # the second day is not tried on a stick that failed the first, and says so
                    assert outcomes == [(DAY, why), ("2026-11-20", f"not written: {why}")], outcomes
                    await _until(c, lambda e: e["event"] == "usb.safe_to_remove")  # unmounted all the same
                    stick.unplug()
                    assert all(d["pending"] for d in (await c.request("days"))["days"])
                good.plug()
                events = await _until(c, lambda e: e.get("business_day") == "2026-11-20"
                                      and e.get("state") in ("done", "failed"))
                done = [(e["business_day"], e["device"]) for e in events if e.get("state") == "done"]
                assert done == [(DAY, good.device), ("2026-11-20", good.device)], events
                assert sum(e["event"] == "usb.safe_to_remove" for e in events) == 1  # one mount for both
    asyncio.run(scenario())
    full.plug()
    look = full.look(tmp_path / "look")
    try:
        assert not (look / "EDGED/till-7/20261119").exists()
        assert list((look / "EDGED/till-7").iterdir()) == []  # the partial export removed: room again
    finally:
        sh("umount", str(look))


def test_udisks2_mounts_and_unmounts_the_stick(short_dir, tmp_path, sticks):
    """The production mounter against real udevd + udisksd: udevd's events (with ID_FS_TYPE) reach the
    monitor, udisksctl mounts under /media with the flags, unmounts before safe_to_remove."""
    stick = sticks(fs="ext4")
    seen: list[tuple[str, set[str] | None]] = []

    async def scenario(daemon_cfg):
        async with Daemon(daemon_cfg).parts() as daemon:
            def at_write(step: str) -> None:
                if step == "write":
                    path = daemon.till.sticks.mounted[stick.device][1]
                    seen.append((path, mount_flags(path)))
            daemon.carrier.on_step = at_write
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                await _sales(c, DAY, 40)
                await c.request("day_close", business_day=DAY)
                stick.plug()
                events = await _until(c, lambda e: e.get("state") in ("done", "failed"))
                assert events[-1]["state"] == "done", events[-1]
                kinds = [e["event"] for e in events]
                assert kinds.index("usb.safe_to_remove") < len(kinds) - 1
                inserted = next(e for e in events if e["event"] == "usb.inserted")
                assert inserted["fs_type"] == "ext4" and inserted["uuid"]  # from udevd's properties
                assert (await c.request("status"))["usb"]["source"] == "udev"
    cfg = _cfg(short_dir, filesystems=["ext4"])
    cfg.usb.mounter = "udisks2"
    with udisks_running(tmp_path):
        asyncio.run(scenario(cfg))
        assert f"{stick.part} " not in Path("/proc/self/mountinfo").read_text()  # unmounted
    assert seen and seen[0][0].startswith("/media/"), seen
    assert {"nosuid", "nodev", "noexec", "noatime"} <= seen[0][1]
    assert not Path("/run/udev/control").exists()


def test_a_stick_pulled_before_udisksd_knew_of_it_is_not_waited_for(tmp_path):
    """udisksd may learn of a stick after edged does, so edged retries udisksctl's "Error looking up
    object" for a few seconds; a stick already pulled (its node gone) is given up on, saying so,
    by the real udisksctl and udisksd."""
    stick = Stick("sdz9", "/dev/sdz9", "vfat", "usb", disk="/dev/sdz")
    with udisks_running(tmp_path):
        with pytest.raises(MountError, match="^/dev/sdz9 is gone$"):
            asyncio.run(Udisks(config.UsbSettings()).mount(stick))


def test_a_filesystem_the_kernel_set_read_only_is_called_damaged_not_write_protected(short_dir, sticks):
    """A stick pulled mid-write can come back with a filesystem the kernel sets read-only at the
    first error (seen in the till VM: vfat's "deleting FAT entry beyond EOF"). Its device still
    takes writes, so the cashier hears it is damaged, not locked: here the filesystem is remounted
    read-only while edged writes to it (what the kernel does on an error)."""
    stick = sticks()

    async def scenario():
        async with Daemon(_cfg(short_dir)).parts() as daemon:
            def at_write(step: str) -> None:
                if step == "mkdir":  # no file open for writing yet: else "mount point is busy"
                    sh("mount", "-o", "remount,ro", daemon.till.sticks.mounted[stick.device][1])
            daemon.carrier.on_step = at_write
            async with await Client.connect(str(short_dir / "s.sock"), "pos") as c:
                await c.request("watch", topics=["usb"])
                await _sales(c, DAY, 40)
                await c.request("day_close", business_day=DAY)
                stick.plug()
                events = await _until(c, lambda e: e.get("state") in ("done", "failed"))
                assert (events[-1]["state"], events[-1]["reason"]) == ("failed", DAMAGED), events[-1]
                await _until(c, lambda e: e["event"] == "usb.safe_to_remove")
                assert all(d["pending"] for d in (await c.request("days"))["days"])
    asyncio.run(scenario())
