"""`edged doctor` in the guest as a technician runs it at a till with a USB printer, two scanners
of one model and a stick plugged in: every device is found, named and judged from what the
kernel, udev and edged see (issue 22 asks for this output in its closing note)."""
from __future__ import annotations

import re

from till import Scanners, StickPort, make_stick_image

EPSON = ("04b8", "0e15")
SCANNER = ("0c2e", "0b61")
SERIALS = ("DOCSCAN1", "DOCSCAN2")

CONFIG = f"""[printers.receipt]
backend = "usb"
vendor_id = 0x{EPSON[0]}
product_id = 0x{EPSON[1]}

[scanners.left]
vendor = "{SCANNER[0]}"
product = "{SCANNER[1]}"
serial = "{SERIALS[0]}"

[scanners.right]
vendor = "{SCANNER[0]}"
product = "{SCANNER[1]}"
serial = "{SERIALS[1]}"
layout = "de"
"""


def test_doctor_names_the_printer_both_scanners_and_the_stick(till, tmp_path):
    printer = till.printer("dp", *EPSON, "DOCPRN01")
    scanners = Scanners(till)
    made = [scanners.gadget(f"doc{i}", *SCANNER, serial) for i, serial in enumerate(SERIALS)]
    port = StickPort(till)
    stick = port.plug(make_stick_image(tmp_path / "doctor-stick.img"), serial="DOCSTICK1")
    try:
        till.configure(CONFIG)
        till.wait_status("the stick seen by edged and every device ready", lambda st: any(
            s.get("fs_type") == "vfat" for s in st["usb"]["sticks"]) and all(
            st["devices"][name]["state"] == "ok" for name in ("receipt", "left", "right")), timeout=120)
        out = till.edged("doctor", check=False, timeout=180).out
        till.log("edged doctor in the guest:\n" + out)
        lines = out.splitlines()

        def line(check: str) -> list[str]:
            return [x for x in lines if re.match(rf"\w+\s+{check}\s", x)]

        assert re.search(r"^OK\s+printers\s+receipt \(usb\): ready; endpoints OUT 0x02 IN 0x81", out, re.M), out
        scans = line("scanners")
        assert len(scans) == 2 and all(x.startswith("OK") for x in scans), out
        assert any("left: online (/dev/input/event" in x for x in scans) and any("right: online" in x for x in scans)
        assert line("sticks") and "(vfat, TILLSTICK, usb)" in line("sticks")[0], out
        assert line("udev")[0].startswith("OK"), out
        devices = line("devices")
        assert devices and all(not x.startswith("FAIL") for x in devices), out
    finally:
        stick.yank()
        printer.remove()
        for g in made:
            g.remove()
