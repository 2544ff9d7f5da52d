"""Receipt printers through real USB: a configfs printer gadget in the guest (the kernel's usblp and
usbfs paths, the packaged udev rules and the hardened unit), driven by edged with backend "usb"
(python-escpos over pyusb) and "usblp" (/dev/usb/lpN)."""
from __future__ import annotations

import io
import json
import random
import time
import uuid

import pytest

from golden import REFERENCE_DOC, expected_path

POS58 = ("0416", "5011")  # POS-58/80 printers on a Winbond chip: no printer class check in the rules
EPSON = ("04b8", "0e15")  # Epson TM-T20II: the rules want its printer interface (class 7)


def _config(backend: str, vid: str, pid: str, extra: str = "") -> str:
    where = (f"vendor_id = 0x{vid}\nproduct_id = 0x{pid}\n" if backend == "usb"
             else 'device = "/dev/usb/lp0"\n')
    # confirm_timeout: the gadget's "firmware" is edged's Python emulator under software emulation,
    # far slower to "print" a large image than a printer is.
    return f'[printers.receipt]\nbackend = "{backend}"\n{where}status_interval = 0.5\nconfirm_timeout = 180\n{extra}'


@pytest.fixture(scope="module")
def printer(till, request):
    """A gadget printer (ids from the test's parameter) and edged configured for it, shared by the
    tests of one parameter (a restart of edged costs seconds under emulation); undone after."""
    backend, (vid, pid) = request.param
    till.configure("")  # a clean slate: nothing holds the device when it arrives
    gadget = till.printer("rp", vid, pid, "RP0001")
    try:
        # The usb backend detaches usblp, so the lp node is there only until edged opens it.
        till.vm.wait_for("the printer's nodes", f"test -e /dev/edged/printer-usb-{vid}-{pid}-RP0001 && "
                         "test -e /dev/usb/lp0", timeout=60)
        till.configure(_config(backend, vid, pid))
        wait_state(till, lambda p: p["state"] == "ok", "ready", timeout=60)
        yield gadget
    finally:
        till.configure("")
        gadget.remove()


def receipt_state(till) -> dict:
    return till.status()["devices"]["receipt"]


def wait_state(till, ok, what: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        p = receipt_state(till)
        if ok(p):
            return p
        if time.monotonic() > deadline:
            raise AssertionError(f"printer not {what} within {timeout} s: {p}")
        time.sleep(0.5)


def job(till, job_id: str) -> dict:
    jobs = till.request("jobs", limit=200)["jobs"]
    return next(j for j in jobs if j["job_id"] == job_id)


def wait_job(till, job_id: str, states: tuple[str, ...], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        j = job(till, job_id)
        if j["state"] in states:
            return j
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} not {states} within {timeout} s: {j}")
        time.sleep(0.5)


def submit(till, doc: dict, job_id: str, name: str) -> str:
    """Print DOC; its job id, made unique (the guest's journal, and its job ids, outlive a test)."""
    job_id = f"{job_id}-{uuid.uuid4().hex[:8]}"
    till.vm.sh(f"cat > /tmp/{name}.json", stdin=json.dumps(doc).encode())
    till.edged(f"print --no-wait --job-id {job_id} /tmp/{name}.json")
    return job_id


BOTH = [("usb", POS58), ("usblp", POS58), ("usb", EPSON)]


@pytest.mark.parametrize("printer", BOTH, indirect=True, ids=["usb-pos58", "usblp-pos58", "usb-epson"])
def test_receipt_bytes_arrive_exactly(till, printer):
    """The reference receipt's bytes (tests/fixtures/golden/) reach the printer's USB endpoint
    whole, once, in order: nothing added inside the job, nothing lost, on each path."""
    jid = submit(till, REFERENCE_DOC, "golden", "golden")
    wait_job(till, jid, ("done",))
    got = printer.received()
    assert got.count(expected_path().read_bytes()) == 1, "the reference receipt did not arrive byte for byte"


@pytest.mark.parametrize("printer", BOTH[:2], indirect=True, ids=["usb", "usblp"])
def test_paper_out_is_read_back_and_the_job_waits(till, printer):
    """Paper out is the printer's answer over USB, not a guess: edged reports it, holds the job,
    and prints it once when paper is back."""
    printer.set_state(paper_out=True)
    try:
        p = wait_state(till, lambda p: "paper_out" in p["reasons"], "paper out")
        assert p["state"] != "ok"
        jid = submit(till, {"blocks": [{"text": "while out of paper"}, {"cut": "full"}]}, "po", "po")
        assert wait_job(till, jid, ("held",))["state"] == "held"
    finally:
        printer.set_state()
    wait_job(till, jid, ("done",))
    assert printer.receipts().count("while out of paper") == 1


@pytest.mark.parametrize("printer", BOTH[:2], indirect=True, ids=["usb", "usblp"])
def test_unplugged_mid_job_is_held_then_printed_once(till, printer):
    """The cable pulled while a long job is on its way: the job is held (offline), and printed
    once, whole, when the printer is back. The job is longer than the printer's buffer (the gadget
    queues 10 x 8 KiB in its kernel): a job that fits wholly in a printer's buffer before the pull
    may well print, so edged rightly calls that one `unknown`."""
    doc = {"blocks": [{"text": f"line {i:04d} of a long receipt"} for i in range(5000)] + [{"cut": "full"}]}
    jid = submit(till, doc, "yank", "yank")
    deadline = time.monotonic() + 30
    while b"line 0050" not in printer.received():
        assert time.monotonic() < deadline, "the job never started"
        time.sleep(0.05)
    printer.unplug()
    try:
        held = wait_job(till, jid, ("held", "unknown", "failed"))
        assert held["state"] == "held", held
        wait_state(till, lambda p: p["state"] != "ok", "offline")
    finally:
        printer.replug()
    wait_job(till, jid, ("done",), timeout=90)
    assert printer.receipts().count("line 4999 of a long receipt") == 1


def _big_png(width: int = 576, height: int = 2400) -> bytes:
    from PIL import Image
    rng = random.Random(22)
    img = Image.frombytes("1", (width, height), bytes(rng.getrandbits(8) for _ in range(width * height // 8)))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize("printer", BOTH[:2], indirect=True, ids=["usb", "usblp"])
def test_long_receipt_with_a_large_image_does_not_time_out(till, printer):
    """A receipt with a 576x2400 image (~170 KB of raster) goes through the 2 s I/O timeout of each
    USB transfer: edged writes in pieces the printer can take, and the job is done, not failed."""
    till.vm.sh("cat > /tmp/big.png", stdin=_big_png())
    doc = {"blocks": [{"text": "big image follows"}, {"image": "big.png"}, {"text": "after the image"},
                      {"cut": "full"}]}
    jid = submit(till, doc, "big", "big")
    j = wait_job(till, jid, ("done", "failed", "unknown"), timeout=120)
    assert j["state"] == "done", j
    assert b"after the image" in printer.received()
