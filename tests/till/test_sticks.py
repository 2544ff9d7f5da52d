"""USB sticks through real USB (issue 22 point 4): QEMU usb-storage devices on the guest's xHCI, the
guest's usb-storage driver, udevd and udisks2, and the packaged edged under its hardened unit,
configured to carry every closed day to the next stick (`export.usb = "on_day_close"`).

A stick's disk is an image file made on the host; afterwards the host reads it with mtools (never
mounted here) and runs head office's `edged verify` with the till's key on what it holds. Pulls are
QMP device_del: surprise removals, wherever the guest is. To land a pull at one step of an export,
the guest-side client (guest/stick_client.py) stops edged with SIGSTOP the moment the export gets
there, the host pulls the stick, and edged goes on (SIGCONT) to find it gone.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edged.day.export import DAMAGED
from till import OUT, STICK_CLIENT, GuestError, StickPort, Till, UsbStick, make_stick_image, whole_lines

REPO = Path(__file__).resolve().parents[2]
SALES = 2000  # ~0.5 MB of journal: an export takes several writes, and seconds on a slowed stick
SLOW = 256 << 10  # bytes/s a slowed stick writes: ~2 s for the day's 0.5 MB, a window to pull it mid-export
EXPORT_END = ("done", "failed")


class Watcher:
    """stick_client.py watch in the guest, one for the module, as a transient unit; its events are
    read from the 9p share, pins asked for through a FIFO (one python3 start, not one per stick).
    When edged closed its connection (a restart), the next stick gets a new one."""

    UNIT = "stick-watch"
    FIFO = "/run/till-stick-watch.fifo"

    def __init__(self, till: Till) -> None:
        self.till = till
        self.file = till.vm.share / "out" / f"{self.UNIT}.jsonl"
        self.file.unlink(missing_ok=True)
        self.asks = 0
        self.start()

    def start(self) -> None:
        begin = len(self.lines())  # a new one appends to the same file
        self.till.vm.sh(f"systemctl stop {self.UNIT} 2>/dev/null; rm -f {self.FIFO}; systemd-run --unit={self.UNIT} "
                        f"--collect -p StandardOutput=file:{OUT}/{self.UNIT}.log "
                        f"-p StandardError=file:{OUT}/{self.UNIT}.log "
                        f"python3 {STICK_CLIENT} watch {OUT}/{self.UNIT}.jsonl {self.FIFO}")
        self.asks = 0
        self.pid = Watch(self, begin).wait(lambda e: "ready" in e, 60, "the guest client watching")["pid"]

    def lines(self) -> list[dict]:
        try:
            return whole_lines(self.file.read_text())
        except FileNotFoundError:
            return []

    def arm(self, pin: str | None, day_dir: str) -> Watch:
        """A view of what comes after this ask, PIN armed (or none)."""
        if any("closed" in line for line in self.lines()[-3:]):
            self.start()
        self.asks += 1
        n = self.asks
        since = len(self.lines())
        self.till.vm.write(self.FIFO, f"pin {pin or '-'} {day_dir}\n".encode())
        armed = Watch(self, since).wait(lambda e: e.get("n") == n, 60, f"the guest client armed for {pin}")
        return Watch(self, self.lines().index(armed, since) + 1)

    def stop(self) -> None:
        self.till.vm.sh(f"systemctl stop {self.UNIT}", check=False)


class Watch:
    """What the module's watcher saw from one point on (one stick's story)."""

    def __init__(self, watcher: Watcher, start: int) -> None:
        self.watcher, self.start = watcher, start
        self.name = Watcher.UNIT

    def lines(self) -> list[dict]:
        return self.watcher.lines()[self.start:]

    def events(self) -> list[dict]:
        return [e for e in self.lines() if "event" in e]

    def wait(self, pred, timeout: float = 180, what: str = "") -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for line in self.lines():
                if pred(line):
                    return line
            if time.monotonic() > deadline:
                log = self.watcher.till.vm.share / "out" / f"{self.name}.log"
                raise TimeoutError(f"{what or 'event'}: not within {timeout} s; seen: {self.lines()[-12:]}; "
                                   f"client: {log.read_text()[-1500:] if log.exists() else ''}")
            time.sleep(0.05)  # the share, read on the host: costs the guest nothing

    def export_end(self, day: str, timeout: float = 300) -> dict:
        return self.wait(lambda e: e.get("event") == "usb.export" and e.get("business_day") == day
                         and e.get("state") in EXPORT_END, timeout, f"the export of {day} ending")

    def resume(self) -> None:
        """SIGCONT for the edged the client stopped, and its udisksctl child (no-ops when running)."""
        children = " ".join(str(e["child"]) for e in self.lines() if "child" in e)
        self.watcher.till.vm.sh(f"kill -CONT {children} {self.watcher.pid}", check=False)

    def stop(self) -> None:
        """edged going on, whatever happened; a pin not reached is disarmed."""
        self.resume()
        try:
            self.watcher.till.vm.write(Watcher.FIFO, b"pin -\n")
            self.watcher.asks += 1
        except GuestError:  # the watcher ended (edged restarted): the next arm() starts one
            pass


class Shop:
    """The till in the guest with edged exporting closed days to sticks, and head office on the host."""

    def __init__(self, till: Till, port: StickPort, tmp: Path, watcher: Watcher, ident: dict) -> None:
        self.till, self.port, self.tmp, self.watcher = till, port, tmp, watcher
        self.till_id = ident["till_id"]
        self.key = f"{self.till_id}={ident['public_key']}"
        self._n = 0

    def name(self, what: str) -> str:
        self._n += 1
        return f"{what}{self._n}"

    def days(self) -> dict[str, dict]:
        return {d["business_day"]: d for d in self.till.request("days")["days"]}

    def close_day(self, sales: int = SALES) -> str:
        """Sales for the day after the last closed one, then that day closed: edged now owes it to a stick."""
        closed = sorted(self.days())
        day = (datetime.date.fromisoformat(closed[-1]) + datetime.timedelta(days=1)).isoformat() if closed \
            else "2026-11-02"
        self.till.vm.sh(f"python3 {STICK_CLIENT} sales {day} {sales}", timeout=600)
        self.till.edged(f"day close {day}")
        return day

    def watch(self, pin: str | None = None, day: str = "") -> Watch:
        return self.watcher.arm(pin, day.replace("-", ""))

    def image(self, **kw) -> Path:
        return make_stick_image(self.tmp / f"{self.name('stick')}.img", **kw)

    def look(self, stick: UsbStick, check: bool = True) -> Path:
        return stick.read(self.tmp / f"{stick.image.stem}-look", check)

    def verify(self, path: Path) -> subprocess.CompletedProcess:
        """Head office: `edged verify` of what a stick holds, authenticity checked with the till's key."""
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        return subprocess.run([sys.executable, "-m", "edged", "verify", "--key", self.key, str(path)],
                              capture_output=True, text=True, timeout=300, env=env)

    def yank_after_power_off(self, stick: UsbStick, watch: Watch, device: str) -> None:
        """udisks2 powered the stick off (the guest's device is gone), then the cashier pulls it."""
        removed = watch.wait(lambda e: e.get("event") == "usb.removed" and e.get("device") == device, 120,
                             f"usb.removed for {device} after power-off")
        assert removed["safe"] is True, removed
        stick.yank()

    def carry_to_good_stick(self, days: list[str], image: Path | None = None) -> Path:
        """A good stick (a new one, or the image of one plugged before) gets every day still owed;
        head office verifies it. Its copy."""
        watch = self.watch()
        stick = self.port.plug(image or self.image(), serial=self.name("GOOD"))
        try:
            ends = [watch.export_end(day) for day in days]
            assert [e["state"] for e in ends] == ["done"] * len(days), ends
            self.yank_after_power_off(stick, watch, ends[0]["device"])
        finally:
            watch.stop()
            if stick.dev_id in self.port.stick_ids:
                stick.yank()
        look = self.look(stick)
        out = self.verify(look)
        assert out.returncode == 0, out.stdout + out.stderr
        owed = self.days()
        assert all(owed[d]["exported"] and not owed[d]["pending"] for d in days), owed
        return look


@pytest.fixture(scope="module")
def shop(till, tmp_path_factory):
    """edged configured to carry each closed day to the next stick, as debian/edged.toml suggests;
    no stick left in afterwards."""
    till.configure(till.packaged + '\n[export]\nusb = "on_day_close"\n', wait=False)
    port = StickPort(till)
    ident = json.loads(till.edged("identity --json").out)  # the key on disk, not the daemon: meanwhile
    till.restarted()
    watcher = Watcher(till)
    try:
        yield Shop(till, port, tmp_path_factory.mktemp("sticks"), watcher, ident)
    finally:
        watcher.stop()
        for dev_id in list(port.stick_ids):
            UsbStick(port, dev_id, f"{dev_id}-drive", Path(), False, None).yank()
        till.vm.sh("systemctl kill -s CONT edged", check=False)


def _day_path(shop: Shop, look: Path, day: str) -> Path:
    return look / "EDGED" / shop.till_id / day.replace("-", "")


def test_closed_day_goes_to_a_stick_udisks2_mounts_for_the_hardened_unit(shop):
    """A partitioned vfat stick, as sold: udisks2 mounts its partition on edged's behalf (polkit rule,
    packaged unit unchanged), the day is written, unmounted, `usb.safe_to_remove`, then `done`; the
    drive is powered off (the guest loses it: `usb.removed`, safe); head office's verify passes."""
    vm = shop.till.vm
    assert vm.sh("systemctl show edged -p DropInPaths --value").out.strip() == ""
    day = shop.close_day()
    since = vm.sh("date +%s.%N").out.strip()
    watch = shop.watch()
    stick = shop.port.plug(shop.image(partitioned=True, fill_mb=1), serial="TILL0001", partitioned=True)
    try:
        end = watch.export_end(day)
        assert end["state"] == "done", end
        shop.yank_after_power_off(stick, watch, end["device"])
    finally:
        watch.stop()
        if stick.dev_id in shop.port.stick_ids:
            stick.yank()
    events = watch.events()
    inserted = next(e for e in events if e["event"] == "usb.inserted")
    assert (inserted["device"], inserted["fs_type"], inserted["bus"], inserted["label"]) == \
        ("sda1", "vfat", "usb", "TILLSTICK"), inserted
    flow = [e["event"] if e["event"] != "usb.export" else e["state"] for e in events
            if e.get("business_day", day) == day]
    flow = [s for i, s in enumerate(flow) if i == 0 or s != flow[i - 1]]  # one `writing` per run of them
    # The power-off removes the device: `usb.removed` may come before or after `done` is journaled.
    assert [s for s in flow if s != "usb.removed"] == ["usb.inserted", "started", "writing", "usb.safe_to_remove",
                                                      "done"], flow
    assert flow.index("usb.removed") > flow.index("usb.safe_to_remove"), flow
    uid = vm.sh("id -u _edged").out.strip()
    udisks = vm.sh(f"journalctl -u udisks2 -o cat --no-pager --since=@{since}").out
    assert f"Mounted /dev/sda1 at /media/_edged/TILLSTICK on behalf of uid {uid}" in udisks, udisks
    assert "Unmounted /dev/sda1 on behalf of uid" in udisks, udisks
    assert "Powered off /dev/sda" in udisks, udisks
    look = shop.look(stick)
    assert (look / "holiday.mp4").stat().st_size == 1 << 20  # what was on the stick is still there
    out = shop.verify(look)
    assert out.returncode == 0, out.stdout + out.stderr
    manifest = json.loads((_day_path(shop, look, day) / "manifest.json").read_text())
    assert manifest["business_day"] == day and manifest["counts"]["sale"] == SALES, manifest
    assert shop.days()[day]["exported"]["path"].endswith(day.replace("-", ""))


# Where the stick is pulled: as it is being mounted; mounted, the export started; mid-write; every
# byte written (fsyncs and rename to come); renamed (its fsyncs and the unmount to come); written
# and synced, the unmount asked for; unmounted and announced safe (power-off to come).
PULL_AT = ["inserted", "started", "writing", "written", "renamed", "unmount", "safe_to_remove"]


def test_stick_pulled_at_each_step_of_an_export_then_plugged_in_again(shop):
    """One closed day; the same stick, as the cashier left it, plugged in again after each pull,
    pulled one step later each time. Pulled before it was unmounted, the day stays owed (never
    `done`) and the next plug-in gets it (edged clears what the pull left: a .partial directory, a
    dirty filesystem, a name pointing nowhere); pulled after `usb.safe_to_remove`, the export
    counts. Before the rename nothing complete-looking is on the stick; once everything is synced
    (the unmount asked for) what is there verifies, and so does the stick edged said `done` for."""
    day = shop.close_day()
    image = shop.image()
    for at in PULL_AT:
        t0 = time.monotonic()
        watch, stick, pinned = _pulled_at(shop, image, at, day)
        try:
            device = next(e["device"] for e in watch.events() if e["event"] == "usb.inserted")
            watch.wait(lambda e: e.get("event") == "usb.removed" and e.get("device") == device, 120,
                       f"usb.removed for the stick pulled at {at}")
            if at == "safe_to_remove":
                end = watch.export_end(day)
                assert end["state"] == "done", end
            else:
                # An export that was under way ends `failed`; one pulled before it began just waits.
                end = watch.wait(lambda e: e.get("event") == "usb.export" and e.get("business_day") == day
                                 and e.get("state") in ("done", "failed", "waiting"), 120, f"the outcome at {at}")
                assert end["state"] != "done", (at, end)
                if end["state"] == "failed":
                    assert any(why in end["reason"] for why in ("the stick was removed", "not unmounted",
                                                                "cannot mount")), (at, end)
                assert not any(e.get("state") == "done" for e in watch.events()), (at, watch.events())
                owed = shop.days()[day]
                assert owed["exported"] is None and owed["pending"], (at, owed)
        finally:
            watch.stop()
        # Pulled before its writes were synced, the stick's FAT may be torn (a directory entry
        # whose clusters never reached it): mtools then copies what it can and exits 1.
        look = shop.look(stick, check=at not in ("writing", "written", "renamed"))
        final = _day_path(shop, look, day)
        if at in ("inserted", "started", "writing", "written"):
            assert not final.exists(), f"pulled at {at} ({pinned}): a complete-looking export is on the stick"
        elif at in ("unmount", "safe_to_remove"):
            # Everything was written and synced before the unmount was asked for: a whole export,
            # even on a stick pulled before it was unmounted (edged counts it only once unmounted).
            out = shop.verify(final)
            assert out.returncode == 0, (at, out.stdout + out.stderr)
        # "renamed": vfat writes the new name with start cluster 0 and fills it in when the
        # directory's inode is written back; pulled in between, the stick holds a name pointing at
        # the root directory. Nothing to assert but that edged did not count it (above): head
        # office's verify finds no export there, and the next plug-in clears it.
        shop.till.log(f"pulled at {at}: {time.monotonic() - t0:.1f} s")
    owed = shop.days()[day]
    assert owed["exported"] and not owed["pending"], owed


def _pulled_at(shop: Shop, image: Path, at: str, day: str) -> tuple[Watch, UsbStick, dict]:
    """The stick plugged in and pulled the moment the export reaches AT. A stick pulled mid-write
    can come back with a torn filesystem, which the kernel sets read-only at the first error (vfat:
    "deleting FAT entry beyond EOF"), and edged then says it is damaged: the cashier repairs it on
    a computer (here fsck.fat on the image) and plugs it in again."""
    for attempt in (1, 2):
        watch = shop.watch(pin=at, day=day)
        # Slowed only where the pull must land while data is in flight: elsewhere the throttle
        # costs seconds of waiting for an export the pull does not race.
        stick = shop.port.plug(image, serial=shop.name("PULL"),
                               write_bps=SLOW if at in ("writing", "written", "renamed") else None)
        try:
            first = watch.wait(lambda e: "pinned" in e or (e.get("event") == "usb.export" and e.get("state") == "failed"),
                               300, f"the export reaching {at}")
            if "pinned" in first:
                stick.yank()
                return watch, stick, first
        finally:
            watch.resume()
        assert first["reason"] == DAMAGED, (at, first)  # nothing else may stop the export before AT
        watch.stop()  # the pin disarmed: edged's unmount of the damaged stick must not be held
        watch.resume()  # (had the pin landed between the failure and the disarming)
        watch.wait(lambda e: e.get("event") == "usb.safe_to_remove", 120, "the damaged stick unmounted")
        stick.yank()
        assert attempt == 1, f"pulled at {at}: the stick is still damaged after fsck.fat"
        fixed = subprocess.run(["fsck.fat", "-a", str(image)], capture_output=True, text=True)
        assert fixed.returncode in (0, 1), fixed.stdout + fixed.stderr  # 1: errors found and fixed
        shop.till.log(f"pulled at {at}: the stick came back damaged (edged said so); fsck.fat: "
                      f"{fixed.stdout.strip().splitlines()[-1]}")
    raise AssertionError("unreachable")


def _ext4(shop):
    return shop.port.plug(shop.image(fs="ext4"), serial=shop.name("EXT4"))


def _blank(shop):
    return shop.port.plug(shop.image(fs="none"), serial=shop.name("BLANK"))


def _write_protected(shop):
    return shop.port.plug(shop.image(), serial=shop.name("RO"), read_only=True)


def _full(shop):
    return shop.port.plug(shop.image(size_mb=8, leave_kb=16), serial=shop.name("FULL"))


# (how the stick is made, what edged must say, where: the journal of edged's unit or a usb.export event)
BAD_STICKS = {
    "ext4": (_ext4, "filesystem ext4, not one of usb.filesystems (vfat, exfat); left alone", "log"),
    "unformatted": (_blank, "no filesystem (unformatted?), not one of usb.filesystems (vfat, exfat); left alone", "log"),
    "write-protected": (_write_protected, "the stick is read-only", "event"),
    "full": (_full, "the stick is full", "event"),
}


# Plugged together where edged's answers cannot mix: the two sticks it leaves alone beside the
# write-protected one, then the full one (edged writes to one stick at a time; a second usable
# stick plugged meanwhile is not tried until the next plug-in). Each plug-in costs seconds here.
BATCHES = (("ext4", "unformatted", "write-protected"), ("full",))


def test_sticks_edged_cannot_use_say_why_and_lose_nothing(shop):
    """ext4, unformatted and write-protected sticks plugged at once, then a full one, while a closed
    day is owed: each gets a message that names what is wrong, the day stays owed, what was on the
    stick is untouched, and the next good stick gets the day."""
    day = shop.close_day(200)
    for batch in BATCHES:
        cursor = shop.till.cursor()
        watch = shop.watch()
        sticks = {kind: BAD_STICKS[kind][0](shop) for kind in batch}
        before = {kind: {p.name: p.stat().st_size for p in shop.look(stick).iterdir()}
                  for kind, stick in sticks.items() if kind not in ("ext4", "unformatted")}
        try:
            for kind in batch:
                _, message, where = BAD_STICKS[kind]
                if where == "log":
                    log = shop.till.wait_log(cursor, message, timeout=120)
                    device = next(line.split(" on usb: ")[0].split()[-1] for line in log.splitlines() if message in line)
                    present = [s["device"] for s in shop.till.status()["usb"]["sticks"]]
                    assert device not in present, (kind, device, present, log)
                else:
                    end = watch.export_end(day)
                    # A day owed from before (an earlier test that failed) is tried first; the ones after
                    # it say "not written: " and the same reason.
                    assert (end["state"], end.get("reason", "").removeprefix("not written: ")) == ("failed", message), \
                        (kind, end)
                    watch.wait(lambda e: e.get("event") == "usb.safe_to_remove" and e.get("device") == end["device"],
                               120, f"the {kind} stick unmounted all the same")
            owed = shop.days()[day]
            assert owed["exported"] is None and owed["pending"], (batch, owed)
        finally:
            watch.stop()
            for stick in sticks.values():
                stick.yank()
        for kind, was in before.items():
            look = shop.look(sticks[kind])
            after = {p.name: p.stat().st_size for p in look.iterdir()}
            assert after == was | ({"EDGED": after["EDGED"]} if "EDGED" in after else {}), (kind, after)
            assert not [p for p in look.rglob("*") if p.is_file() and "EDGED" in p.parts], \
                f"{kind}: an export (or a partial one) was left on the stick"
    shop.carry_to_good_stick([day])
