"""Serial devices behind a USB-serial adapter (QEMU's usb-serial, an FTDI 0403:6001): the guest's
ftdi_sio makes /dev/ttyUSBn, edged's packaged udev rules give it to group _edged under a stable
/dev/edged name, and edged, as the packaged unit runs it, reads a serial barcode scanner and
prints on a serial receipt printer through it. The scanner and the printer are programs in the
test process on the adapter's socket (usbserial.py); the printer is edged's ESC/POS emulator, so
what edged reads back (DLE EOT status, GS r confirmation) is what a printer would answer."""
from __future__ import annotations

import json
import shlex
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from events import EventWatch
from usbserial import SerialPrinter, SerialScanner, UsbSerial

from till import GUEST, Till

SCANNER_SERIAL, PRINTER_SERIAL = "SCAN0001", "PRN0001"


def node_facts(till: Till, link: str) -> dict[str, str]:
    """The tty behind LINK: its node, group, mode and the udev properties edged's rules set."""
    out = till.vm.sh(f"n=$(readlink -f {link}); echo NODE=$n; stat -c GROUP=%G $n; stat -c MODE=%a $n; "
                     f"udevadm info -q property -n $n").out
    return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)


def wait_link(till: Till, adapter: UsbSerial) -> dict[str, str]:
    till.vm.wait_for(f"{adapter.edged_link}", f"test -c {adapter.edged_link}", timeout=60)
    return node_facts(till, adapter.edged_link)


def wait_link_gone(till: Till, adapter: UsbSerial) -> None:
    till.vm.wait_for(f"{adapter.edged_link} removed", f"! test -e {adapter.edged_link}", timeout=60)


def test_ftdi_adapters_get_group_edged_and_distinct_stable_names(till):
    """Two adapters of one model (same 0403:6001) are told apart by their USB serial number:
    QEMU's `serial=` sets iSerialNumber, udev's ID_SERIAL_SHORT, and the rules' /dev/edged name."""
    a, b = UsbSerial(till.vm, "ftdi-a", "ADAPTA1"), UsbSerial(till.vm, "ftdi-b", "ADAPTB2")
    try:
        a.plug()
        b.plug()
        fa, fb = wait_link(till, a), wait_link(till, b)
        for facts, adapter in ((fa, a), (fb, b)):
            assert facts["NODE"].startswith("/dev/ttyUSB"), facts
            assert (facts["GROUP"], facts["MODE"]) == ("_edged", "660")
            assert (facts["ID_VENDOR_ID"], facts["ID_MODEL_ID"]) == ("0403", "6001")
            assert facts["ID_USB_DRIVER"] == "ftdi_sio"
            assert facts["ID_SERIAL_SHORT"] == adapter.serial
            assert facts["EDGED_KIND"] == "serial"
            assert facts["ID_MM_DEVICE_IGNORE"] == "1"  # ModemManager must not probe a till's ports
            assert adapter.edged_link in facts["DEVLINKS"].split()
            assert any(link.startswith("/dev/serial/by-id/") and adapter.serial in link
                       for link in facts["DEVLINKS"].split())
        assert fa["NODE"] != fb["NODE"]
        a.unplug()
        wait_link_gone(till, a)
        assert till.vm.sh(f"readlink -f {b.edged_link}").out.strip() == fb["NODE"]  # the other one stays
    finally:
        a.unplug()
        b.unplug()


def devices(till: Till, timeout: float = 0, **want: str) -> dict[str, dict]:
    """edged's devices as `status` gives them; with NAME=STATE, once each is in that state."""
    res = till.vm.sh(f"python3 {GUEST}/edged_status.py --timeout {timeout} "
                     + " ".join(f"{n}={s}" for n, s in want.items()), check=False, timeout=timeout + 90)
    if res.rc != 0:
        raise AssertionError(f"edged's devices not {want} within {timeout} s: {res.out[-3000:]}{res.err[-2000:]}")
    return json.loads(res.out)["devices"]


@dataclass
class SerialTill:
    till: Till
    scanner_adapter: UsbSerial
    scanner: SerialScanner
    printer_adapter: UsbSerial
    printer: SerialPrinter
    events: EventWatch

    def device(self, name: str) -> dict:
        return devices(self.till)[name]

    def replug(self, adapter: UsbSerial, peer: SerialScanner | SerialPrinter) -> None:
        adapter.plug()
        peer.connect(adapter)
        wait_link(self.till, adapter)


CONFIG = f"""
[printers.receipt]
backend = "serial"
device = "/dev/edged/serial-tty-0403-6001-{PRINTER_SERIAL}-if00"
baudrate = 19200
status_interval = 1.0

[scanners.counter]
backend = "serial"
device = "/dev/edged/serial-tty-0403-6001-{SCANNER_SERIAL}-if00"
suffix = "crlf"
baudrate = 9600
"""


@pytest.fixture(scope="module")
def serial_till(till) -> Iterator[SerialTill]:
    """edged configured with a serial scanner and a serial printer, each on its own adapter;
    afterwards the adapters are gone."""
    sa, pa = UsbSerial(till.vm, "ftdi-scan", SCANNER_SERIAL), UsbSerial(till.vm, "ftdi-prn", PRINTER_SERIAL)
    scanner, printer = SerialScanner(b"\r\n"), SerialPrinter()
    watch = None
    try:
        till.configure(CONFIG, wait=False)  # edged's start and the adapters' plugging overlap
        for adapter, peer in ((sa, scanner), (pa, printer)):
            adapter.plug()
            peer.connect(adapter)
            wait_link(till, adapter)
        till.restarted()
        watch = EventWatch(till, "serial", "scanner", "printer")
        st = SerialTill(till, sa, scanner, pa, printer, watch)
        devices(till, timeout=60, counter="ok", receipt="ok")
        yield st
    finally:
        if watch is not None:
            watch.stop()
        for adapter, peer in ((sa, scanner), (pa, printer)):
            adapter.unplug()
            peer.close()


def test_serial_scanner_scans_reach_a_watching_client(serial_till):
    """Scans sent by a serial scanner (ending CR LF) through the FTDI adapter reach a client that
    watches `scanner`, decoded (AIM symbology, check digit), one event per scan, nothing between."""
    st = serial_till
    st.events.since()
    st.scanner.scan("]E04006381333931")
    st.scanner.scan("4006381333932")  # wrong check digit
    first = st.events.next("first scan", lambda e: e["event"] == "scanner.scan")
    second = st.events.next("second scan", lambda e: e["event"] == "scanner.scan")
    assert (first["device"], first["code"], first["symbology"], first["valid"], first["ended"]) == \
        ("counter", "4006381333931", "]E0", True, "suffix")
    assert (second["code"], second["valid"]) == ("4006381333932", False)
    assert st.device("counter")["node"].startswith("/dev/ttyUSB")


def tty_of(till: Till, adapter: UsbSerial) -> str:
    return till.vm.sh(f"readlink -e {adapter.edged_link}").out.strip()


def new_job_id(what: str) -> str:
    """Job ids are for ever (the journal answers a known one as a duplicate and prints nothing),
    and a kept guest (EDGED_TILL_KEEP) has the last run's journal."""
    return f"serial-{what}-{uuid.uuid4().hex[:8]}"


def print_doc(st: SerialTill, job_id: str, text: str, wait: bool) -> int:
    doc = {"blocks": [{"text": text, "align": "center", "bold": True}, {"row": ["Coffee", "2.50"]},
                      {"barcode": "4006381333931", "type": "EAN13"}, {"cut": "full"}]}
    path = f"/tmp/{job_id}.json"
    st.till.vm.sh(f"cat > {path}", stdin=json.dumps(doc).encode())
    return st.till.edged(f"print {path} --printer receipt --job-id {shlex.quote(job_id)}"
                         + ("" if wait else " --no-wait"), check=False, timeout=120).rc


def job_state(st: SerialTill, job_id: str, state: str, timeout: float = 90) -> dict:
    return st.events.next(f"job {job_id} {state}", lambda e: e["event"] == "printer.job"
                          and e["job_id"] == job_id and e["state"] == state, timeout)


def test_serial_printer_prints_a_receipt_and_confirms_it(serial_till):
    """`edged print` through the adapter: the printer on the far side gets the receipt, answers
    GS r once it is printed, and edged reports the job done."""
    st = serial_till
    before, job = len(st.printer.receipts()), new_job_id("one")
    assert print_doc(st, job, "SERIAL RECEIPT ONE", wait=True) == 0
    receipts = st.printer.receipts()
    assert len(receipts) == before + 1
    assert "SERIAL RECEIPT ONE" in receipts[-1] and "Coffee" in receipts[-1] and "2.50" in receipts[-1]
    assert bytes(st.printer.received).count(b"\x1dr\x01") >= 1  # edged asked for the confirmation
    job_state(st, job, "done")


def test_serial_printer_paper_out_is_reported_and_holds_the_job(serial_till):
    """Paper out on the printer: edged's status says so (read over the serial return channel),
    a job is held with that reason, nothing is printed; paper in: the job prints once, done."""
    st = serial_till
    before, job_paper = len(st.printer.receipts()), new_job_id("paper")
    st.printer.set_state(paper_out=True)
    try:
        st.events.next("paper_out status", lambda e: e["event"] == "printer.status"
                       and "paper_out" in e["reasons"])
        assert st.device("receipt")["state"] == "error"
        assert print_doc(st, job_paper, "HELD FOR PAPER", wait=False) == 0
        held = job_state(st, job_paper, "held")
        assert "paper_out" in held.get("reason", "")
        assert len(st.printer.receipts()) == before
    finally:
        st.printer.set_state(paper_out=False)
    job_state(st, job_paper, "done")
    receipts = st.printer.receipts()
    assert len(receipts) == before + 1 and "HELD FOR PAPER" in receipts[-1]
    assert st.device("receipt")["state"] == "ok"


def test_serial_adapter_unplugged_goes_offline_and_comes_back(serial_till):
    """Pull the printer's and the scanner's adapters: edged says offline (not ok, not a stale
    reading), a job waits held; plug them back (the tty may get another number): both come back
    by themselves, the held job prints once and scans arrive again."""
    st = serial_till
    before, job_unplugged = len(st.printer.receipts()), new_job_id("unplugged")
    nodes = {a.serial: tty_of(st.till, a) for a in (st.scanner_adapter, st.printer_adapter)}
    st.scanner_adapter.unplug()
    st.printer_adapter.unplug()
    st.scanner.close()
    st.printer.close()
    wait_link_gone(st.till, st.scanner_adapter)
    st.events.next("scanner offline", lambda e: e["event"] == "scanner.state" and e["state"] == "offline")
    st.events.next("printer offline", lambda e: e["event"] == "printer.status" and "offline" in e["reasons"])
    status = devices(st.till)
    assert status["counter"]["state"] == "error" and status["counter"]["node"] == ""
    assert status["receipt"]["state"] == "error" and status["receipt"]["reasons"] == ["offline"]
    assert print_doc(st, job_unplugged, "AFTER REPLUG", wait=False) == 0
    assert "offline" in job_state(st, job_unplugged, "held").get("reason", "")

    # Back the other way round: the kernel numbers ttys in plug order, so the printer now has
    # the scanner's old /dev/ttyUSB number (a config naming that number would open the printer
    # as its scanner); edged, configured by /dev/edged names, follows each device.
    st.replug(st.printer_adapter, st.printer)
    st.replug(st.scanner_adapter, st.scanner)
    assert tty_of(st.till, st.printer_adapter) == nodes[SCANNER_SERIAL]
    assert tty_of(st.till, st.scanner_adapter) != nodes[SCANNER_SERIAL]
    job_state(st, job_unplugged, "done")
    st.events.next("scanner online", lambda e: e["event"] == "scanner.state" and e["state"] == "online")
    receipts = st.printer.receipts()
    assert len(receipts) == before + 1 and "AFTER REPLUG" in receipts[-1]
    st.scanner.scan("]E04006381333931")
    scan = st.events.next("scan after replug", lambda e: e["event"] == "scanner.scan")
    assert (scan["code"], scan["valid"]) == ("4006381333931", True)


def test_serial_printer_switched_off_behind_a_plugged_adapter_is_not_ok(serial_till):
    """The adapter stays plugged (its tty is there and opens), the printer behind it is off: the
    status read gets no answer, so edged says unknown (no_answer), never a stale ok; on again: ok."""
    st = serial_till
    st.printer.close()  # the far end of the serial cable goes quiet
    try:
        off = st.events.next("printer not answering", lambda e: e["event"] == "printer.status")
        assert (off["state"], off["reasons"]) == ("unknown", ["no_answer"])
    finally:
        st.printer.connect(st.printer_adapter)
    on = st.events.next("printer answering", lambda e: e["event"] == "printer.status")
    assert (on["state"], on["reasons"]) == ("ok", [])


def test_doctor_warns_of_a_serial_port_named_by_its_plug_order_number(serial_till):
    """Finding: edged's config help suggested /dev/ttyUSB0, a name the kernel gives in plug order
    (the test above sees two adapters swap theirs). doctor now warns about such a name and gives
    the device's stable /dev/edged name."""
    st = serial_till
    node = tty_of(st.till, st.printer_adapter)
    st.till.vm.sh("cat > /tmp/numbered.toml", stdin=f'[printers.receipt]\nbackend = "serial"\ndevice = "{node}"\n'
                  .encode())
    res = st.till.edged("doctor --config /tmp/numbered.toml --json", check=False, timeout=180)
    findings = json.loads(res.out)
    warned = [f for f in findings if f["check"] == "devices" and f["level"] == "WARN"]
    assert [f["found"] for f in warned] == [f"printer receipt: {node} is numbered in plug order: after a replug, "
                                            "or with another adapter plugged first, it is another device"]
    assert warned[0]["hint"] == f'printers.receipt.device = "{st.printer_adapter.edged_link}" (the device there now)'
