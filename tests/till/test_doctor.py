"""`edged doctor` in the guest as a technician runs it at a till with two USB printers, three
scanners of one model and a stick plugged in: every device is found, named and judged from what
the kernel, udev and edged see (issue 22 asks for this output in its closing note)."""
from __future__ import annotations

import re

from counter import SERIALS

from till import StickPort, make_stick_image


def test_doctor_names_the_printers_the_scanners_and_the_stick(till, counter, tmp_path):
    port = StickPort(till)
    stick = port.plug(make_stick_image(tmp_path / "doctor-stick.img"), serial="DOCSTICK1")
    try:
        till.wait_status("the stick seen by edged", lambda st: any(
            s.get("fs_type") == "vfat" for s in st["usb"]["sticks"]), timeout=120)
        out = till.edged("doctor", check=False, timeout=180).out
        till.log("edged doctor in the guest:\n" + out)
        lines = out.splitlines()

        def line(check: str) -> list[str]:
            return [x for x in lines if re.match(rf"\w+\s+{check}\s", x)]

        assert re.search(r"^OK\s+printers\s+receipt \(usb\): ready; endpoints OUT 0x02 IN 0x81", out, re.M), out
        assert re.search(r"^OK\s+printers\s+kitchen \(usblp\): ready", out, re.M), out
        scans = line("scanners")
        assert len(scans) == len(SERIALS) and all(x.startswith("OK") for x in scans), out
        for name in SERIALS:
            assert any(f"{name}: online (/dev/input/event" in x for x in scans), out
        assert line("sticks") and "(vfat, TILLSTICK, usb)" in line("sticks")[0], out
        assert line("udev")[0].startswith("OK"), out
        devices = line("devices")
        assert devices and all(not x.startswith("FAIL") for x in devices), out
    finally:
        stick.yank()
