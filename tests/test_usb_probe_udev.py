"""Which block devices are sticks, decided from what udevd really says about USB sticks.

The fixtures in tests/fixtures/udev/ were recorded in the till VM (tests/till/, README there): a
QEMU usb-storage stick on the guest's xHCI, its udev properties and ancestors as pyudev gives them
to edged. Found there: under the packaged unit edged cannot open a block device, so probing one
again with blkid took "Permission denied" for "no filesystem"; and every stick sold with a
partition table had its whole disk logged as "left alone".
"""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
from pathlib import Path

import pytest

from edged import config
from edged.usb.probe import classify

FIXTURES = Path(__file__).parent / "fixtures" / "udev"


def _recorded(name: str, node: Path | None = None) -> tuple[dict[str, str], list[tuple[str, str]]]:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    props = data["properties"]
    if node is not None:  # the device node, here a file that blkid would read if edged asked it
        props["DEVNAME"] = str(node)
    return props, [tuple(a) for a in data["ancestors"]]


def _classify(props, ancestors):
    return asyncio.run(classify(props, ancestors, config.UsbSettings()))


def test_a_partitioned_stick_is_its_partition_and_its_disk_is_powered_off():
    stick = _classify(*_recorded("partitioned-sda1"))
    assert stick is not None
    assert (stick.device, stick.node, stick.fs_type, stick.bus, stick.label, stick.disk) == \
        ("sda1", "/dev/sda1", "vfat", "usb", "TILLSTICK", "/dev/sda")


def test_the_disk_of_a_partitioned_stick_is_passed_over_quietly(caplog, tmp_path):
    image = tmp_path / "disk.img"  # what the disk holds: a partition table, as blkid would see it
    image.write_bytes(bytes(446) + bytes([0, 0xFE, 0xFF, 0xFF, 0x0E, 0xFE, 0xFF, 0xFF]) + (2048).to_bytes(4, "little")
                      + (8192).to_bytes(4, "little") + bytes(48) + b"\x55\xaa" + bytes(8192 * 512))
    caplog.set_level(logging.DEBUG, logger="edged.usb")
    for node in (None, image):  # udevd's word; and a kernel event, probed by blkid
        props, ancestors = _recorded("partitioned-sda", node)
        if node is not None:
            props = {k: v for k, v in props.items() if not k.startswith(("ID_", "USEC_"))}
        assert _classify(props, ancestors) is None
    quiet = [r for r in caplog.records if "partition table" in r.getMessage()]
    assert len(quiet) == 2 and all(r.levelno == logging.DEBUG for r in quiet), caplog.records
    assert not [r for r in caplog.records if r.levelno >= logging.INFO], caplog.records


@pytest.mark.parametrize("name, why", [
    ("blank-sda", "sda on usb: no filesystem (unformatted?), not one of usb.filesystems (vfat, exfat); left alone"),
    ("ext4-sda", "sda on usb: filesystem ext4, not one of usb.filesystems (vfat, exfat); left alone"),
])
def test_a_stick_edged_cannot_use_is_named_with_why(caplog, name, why):
    caplog.set_level(logging.INFO, logger="edged.usb")
    assert _classify(*_recorded(name)) is None
    assert [r.getMessage() for r in caplog.records] == [why]


def test_udevds_probe_stands_edged_does_not_probe_again(tmp_path, caplog):
    """udevd found nothing on the blank stick. blkid on the node is not asked again: here the node
    is a vfat image blkid would recognise, so a second probe would show."""
    image = tmp_path / "vfat.img"
    subprocess.run(["mkfs.vfat", "-C", str(image), "1024"], check=True, capture_output=True)
    caplog.set_level(logging.INFO, logger="edged.usb")
    assert _classify(*_recorded("blank-sda", image)) is None
    assert "no filesystem (unformatted?)" in caplog.text


def test_a_probe_overtaken_by_the_sticks_removal_brings_no_phantom_back():
    """Seen in the till VM: udisks2's probing makes a `change` event; the stick was pulled while
    edged probed it, and the probe's late answer brought `sda1` back after its `usb.removed`. The
    next stick, named `sda1` by the kernel too, was then never announced, and the day never went."""
    from edged.usb.sticks import Sticks

    async def scenario() -> list[dict]:
        events: list[dict] = []
        sticks = Sticks(config.UsbSettings(), None, lambda e: events.append(e) or 1)  # type: ignore[arg-type]
        props, ancestors = _recorded("partitioned-sda1")
        sticks.handle("add", props, ancestors)
        await asyncio.gather(*sticks._tasks)
        sticks.handle("change", props, ancestors)  # probed again ...
        sticks.handle("remove", props, ancestors)  # ... and pulled before that probe answered
        await asyncio.gather(*sticks._tasks)
        assert sticks.present == {}
        sticks.handle("add", {**props, "ID_FS_UUID": "NEXT-0001"}, ancestors)  # the next stick
        await asyncio.gather(*sticks._tasks)
        assert sticks.present["sda1"].uuid == "NEXT-0001"
        # A later `change` whose probe finds less (no filesystem props) does not undo a good one.
        sticks.handle("remove", props, ancestors)
        sticks.handle("add", props, ancestors)
        sticks.handle("change", {k: v for k, v in props.items() if not k.startswith("ID_FS_")}, ancestors)
        await asyncio.gather(*sticks._tasks)
        assert list(sticks.present) == ["sda1"]
        return events

    events = asyncio.run(scenario())
    assert [(e["event"], e.get("uuid", "")) for e in events] == [
        ("usb.inserted", events[0]["uuid"]), ("usb.removed", ""), ("usb.inserted", "NEXT-0001"),
        ("usb.removed", ""), ("usb.inserted", events[0]["uuid"])]
