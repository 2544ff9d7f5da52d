"""The shop counter's USB devices, shared by the doctor, printer and scanner tests: two receipt
printers (configfs printer gadgets: an Epson id on usbfs, a POS-58 id on usblp) and three barcode
scanners of one model told apart by serial (HID gadgets, one per keyboard layout), plugged once
and edged configured for all five at once. One restart of edged for the three modules instead of
one each, and no second set of gadgets for `edged doctor`: under emulation a restart and a
gadget's program each cost seconds (docs/ARCHITECTURE.md, "A till in a VM")."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

from till import PrinterGadget, ScannerGadget, Scanners, Till

POS58 = ("0416", "5011")  # POS-58/80 printers on a Winbond chip: matched by vendor and product
EPSON = ("04b8", "0e15")  # Epson TM-T20II: the rules want its printer interface (class 7)
# name: (backend, ids, serial). The Epson id on usbfs checks the class-7 rule and endpoints taken
# from the descriptors (the gadget has OUT 0x02 / IN 0x81, python-escpos guesses 0x01 / 0x82);
# the POS58 id on usblp checks the lp rule, which must match the parent's attributes.
PRINTERS = {"receipt": ("usb", EPSON, "RP0001"), "kitchen": ("usblp", POS58, "RP0002")}

VID, PID = "0c2e", "0b61"  # Honeywell, in edged's packaged udev rules
SERIALS = {"us": "SCANUS01", "de": "SCANDE01", "no": "SCANNO01"}
# Event timestamps, not wall time, split scans: a whole report path through dummy_hcd under TCG
# can take tens of ms per key on this shared host (a real scanner types a key every few ms).
TIMEOUT = 1.0


def config() -> str:
    out = ""
    for name, (backend, (vid, pid), serial) in PRINTERS.items():
        where = (f"vendor_id = 0x{vid}\nproduct_id = 0x{pid}\n" if backend == "usb"
                 else f'device = "/dev/edged/printer-lp-{vid}-{pid}-{serial}"\n')
        # confirm_timeout: the gadget's "firmware" is edged's Python emulator under software
        # emulation, far slower to "print" a large image than a printer is.
        out += f'[printers.{name}]\nbackend = "{backend}"\n{where}status_interval = 0.5\nconfirm_timeout = 180\n\n'
    for layout, serial in SERIALS.items():
        out += (f'[scanners.{layout}]\nvendor = "{VID}"\nproduct = "{PID}"\nserial = "{serial}"\n'
                f'layout = "{layout}"\ntimeout = {TIMEOUT}\n\n')
    return out


@dataclass
class Counter:
    printers: dict[str, PrinterGadget]
    scanners: dict[str, ScannerGadget]  # by layout
    kit: Scanners


def plugged(till: Till) -> Iterator[Counter]:
    """Every device plugged in, edged configured for them and ready with all five; taken apart
    afterwards, whatever happened."""
    kit = Scanners(till)
    printers: dict[str, PrinterGadget] = {}
    scanners: dict[str, ScannerGadget] = {}
    try:
        # edged restarted with the counter's configuration while the gadgets come up: its start
        # and their programs' overlap (edged finds each device as it appears, as on a till).
        till.configure(config(), wait=False)
        # Every gadget's program started at once: a python3 start is seconds of emulated CPU.
        made = till.printers([(name[:2], vid, pid, serial) for name, (_, (vid, pid), serial) in PRINTERS.items()],
                             wait=False)
        printers.update(zip(PRINTERS, made))
        kinds = kit.gadgets([(f"scan{i}", VID, PID, SERIALS[layout]) for i, layout in enumerate(SERIALS)], wait=False)
        scanners.update(zip(SERIALS, kinds))
        for g in [*made, *kinds]:
            g.wait_ready()
        for name, (_, (vid, pid), serial) in PRINTERS.items():
            till.vm.wait_for(f"{name}'s nodes", f"test -e /dev/edged/printer-usb-{vid}-{pid}-{serial}", timeout=60)
        till.restarted()
        t0 = time.monotonic()
        till.wait_status("both printers and the three scanners ready", lambda st: all(
            st["devices"][name]["state"] == "ok" for name in [*PRINTERS, *SERIALS]), timeout=120)
        till.log(f"counter: every device ready {time.monotonic() - t0:.1f} s after edged was up again")
        yield Counter(printers, scanners, kit)
    finally:
        for g in [*printers.values(), *scanners.values()]:
            g.remove()
