"""Barcode scanners through real USB in the guest: HID boot-keyboard gadgets with a real scanner's
vendor/product id (Honeywell 0c2e:0b61) on dummy_hcd, and QEMU's usb-kbd on xHCI. The kernel's
usbhid, evdev and udev do what they do with a real scanner; edged, installed from the .deb and run
by its unit, has to find, grab and read them. The gadget types with hand-made layout tables
(guest/scanner_gadget.py), not with the xkbcommon edged decodes with."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from counter import PID, SERIALS, TIMEOUT, VID

from till import OUT, Scanners

EAN = "4006381333931"
QEMU_BARCODE = "Zy-42/x.ä"
# Characters each layout's table types with a modifier (Shift or AltGr): one more key each.
SHIFTED = {"us": "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "de": "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÜ/@",
           "no": "ABCDEFGHIJKLMNOPQRSTUVWXYZÆØÅ/"}
# What each layout's scanner types: digits, both cases, '-', '/', '.', and what moves between
# layouts (German Y/Z, '-' on the US '/' key, '/' on Shift+7, AltGr '@'; Norwegian æøå).
BARCODES = {"us": "AB-12/cd.Zy9", "de": "Zy-4711/ab.Ä@ö", "no": "Æø-42/yz.Å"}


@pytest.fixture(scope="module")
def scanners(counter) -> Scanners:
    """edged configured for three Honeywell scanners, one per layout, told apart by serial
    (counter.py, beside the printers)."""
    return counter.kit


def _state(till, name: str, state: str = "ok", timeout: float = 120) -> dict:
    """The scanner as `edged status` describes it, once its state is STATE ("ok": edged has it
    open, grabbed; "error": offline)."""
    return till.wait_status(f"scanner {name} {state}", lambda st: st["devices"][name]["state"] == state,
                            timeout)["devices"][name]


def _evidence(till, name: str) -> str:
    """What edged and the kernel say about a scanner whose scan vanished."""
    dev = json.dumps(till.status()["devices"][name])
    kernel = till.vm.sh("p=$(systemctl show -p MainPID --value edged); ls -l /proc/$p/fd | sed 's/.*:[0-9][0-9] //'; "
                        "grep -h tfd /proc/$p/fdinfo/* 2>/dev/null; grep -E '^(N|U|H):' /proc/bus/input/devices; "
                        "journalctl -u edged -n 15 --no-pager -o cat; echo tty1:; tr -s ' ' < /dev/vcs1",
                        check=False).out
    return f"edged's status of it: {dev}\n{kernel}"


def _torn(till, name: str) -> int:
    return till.status()["devices"][name]["torn"]


def _scan(till, g, name: str, layout: str, text: str, watch) -> None:
    """G scans TEXT until edged reads it, as a cashier scans again when the till did not beep: a
    scan edged counts torn (the kernel dropped its keys while edged was busy: this shared host
    under TCG is slow) is typed again. Nothing else is retried; the caller checks every scan."""
    delay = 0.0
    lost = 0
    for _ in range(5):
        seen, torn = len(watch.scans(name)), _torn(till, name)
        assert g.type(layout, text, delay=delay) == "typed"
        try:
            watch.wait(f"scan of {text!r} or a torn scan", lambda _: len(watch.scans(name)) > seen
                       or _torn(till, name) > torn, timeout=90)
        except TimeoutError:
            # Neither a scan nor a torn one: seen in CI about once in four runs, cause not found
            # yet. Scanned once more as a cashier would, with everything edged and the kernel say
            # kept in the run's output (docs/ARCHITECTURE.md, "A till in a VM", open findings).
            lost += 1
            assert lost == 1, f"scanner {name}: {text!r} vanished twice"
            till.log(f"LOST SCAN: scanner {name}: {text!r} typed, nothing came: {_evidence(till, name)}")
            continue
        if len(watch.scans(name)) > seen:
            return
        # as a technician would: the scanner's intercharacter delay, up (edged is slow here)
        delay = delay * 2 or 0.02
        till.log(f"scanner {name}: a torn scan, typed again with {delay} s between keys")
    raise AssertionError(f"scanner {name}: {text!r} torn five times")


@pytest.fixture
def watch(scanners):
    w = scanners.watch("scans")
    yield w
    w.stop()


@pytest.fixture(scope="module")
def three(counter):
    """Three scanners of one model (Honeywell 0c2e:0b61), one per layout, told apart by serial:
    plugged once (counter.py; a gadget costs seconds under emulation)."""
    return counter.scanners


@pytest.fixture
def plugged(scanners):
    """Plugs more gadgets on request; takes every one apart afterwards, whatever happened."""
    made = []

    def plug(*serials: str):
        """A gadget per serial, their programs started at once; the one gadget, or the list."""
        gs = scanners.gadgets([(f"extra{len(made) + i}", VID, PID, serial) for i, serial in enumerate(serials)],
                              wait=False)
        made.extend(gs)
        for g in gs:
            g.wait_ready()
        return gs[0] if len(gs) == 1 else gs
    yield plug
    for g in made:
        g.remove()


def test_packaged_udev_rules_give_edged_the_scanner_node(scanners, three):
    """On a real USB HID scanner, the .deb's rules give group _edged the event node and the
    /dev/edged/scanner-event-<vid>-<pid>-<serial>-if00 link; usbhid's by-id name is there."""
    node = three["us"].event_node()
    vm = scanners.vm
    assert vm.sh(f"stat -c '%U:%G %a' {node}").out.strip() == "root:_edged 660"
    link = f"/dev/edged/scanner-event-{VID}-{PID}-{SERIALS['us']}-if00"
    assert vm.sh(f"readlink -f {link}").out.strip() == node
    by_id = vm.sh("ls /dev/input/by-id/").out.split()
    assert f"usb-Honeywell_Barcode_Scanner_{SERIALS['us']}-event-kbd" in by_id
    props = vm.sh(f"udevadm info -q property {node}").out
    assert "EDGED_KIND=scanner" in props and "LIBINPUT_IGNORE_DEVICE=1" in props


def test_each_scan_is_read_under_its_scanners_layout_and_told_apart_by_serial(till, scanners, three, watch):
    """edged finds each scanner by vendor/product/serial and grabs it; a watching client gets
    exactly the barcode each typed under the layout it is programmed for (us, de, no), attributed
    to it. Then two of them type at the same time: each scan is still read under its own layout."""
    nodes = {layout: _state(till, layout)["node"] for layout in three}
    assert nodes == {layout: g.event_node() for layout, g in three.items()} and len(set(nodes.values())) == 3
    for layout, g in three.items():
        _scan(till, g, layout, layout, BARCODES[layout], watch)
    assert [(s["device"], s["code"], s["ended"]) for s in watch.scans()] == \
        [(layout, BARCODES[layout], "suffix") for layout in three]
    seen = len(watch.scans())
    us, de = three["us"], three["de"]
    torn = _torn(till, "us") + _torn(till, "de")
    us.type("us", "US-111/ab.zy", wait=False)
    de.type("de", "DE-222/zy.ö", wait=False)
    assert (us.outcome(), de.outcome()) == ("typed", "typed")
    try:
        watch.wait("two scans or a torn one", lambda _: len(watch.scans()) >= seen + 2
                   or _torn(till, "us") + _torn(till, "de") > torn, timeout=90)
    except TimeoutError:  # see _scan: kept in the output, then scanned again below
        till.log(f"LOST SCAN while two typed at once: {_evidence(till, 'de')}")
    # a scan torn while both typed at once: that scanner scans again, alone
    for name, g, text in (("us", us, "US-111/ab.zy"), ("de", de, "DE-222/zy.ö")):
        if not [s for s in watch.scans(name) if s["code"] == text]:
            _scan(till, g, name, name, text, watch)
    both = watch.scans()[seen:]
    assert sorted((s["device"], s["code"]) for s in both) == [("de", "DE-222/zy.ö"), ("us", "US-111/ab.zy")]


def test_nothing_reaches_tty1_while_edged_holds_the_scanner(till, scanners, three, plugged, watch):
    """The grab keeps a scan off the console. Control first, on the same kind of gadget: a scanner
    edged is not configured for (another serial) types into tty1's login prompt, so the check
    below can fail."""
    scanners.reset_console()
    try:
        stranger = plugged("SCANXX99")
        stranger.event_node()
        assert stranger.type("us", "771234", enter=False) == "typed"
        till.vm.wait_for("the stranger's keys on tty1", "grep -q 771234 /dev/vcs1", timeout=30)

        _state(till, "us")
        before = scanners.console()
        _scan(till, three["us"], "us", "us", EAN, watch)
        assert [s["code"] for s in watch.scans()] == [EAN]
        after = scanners.console()
        assert after == before and EAN not in after
    finally:
        scanners.reset_console()


def test_unplugged_mid_scan_comes_back_and_the_half_scan_is_no_barcode(till, scanners, three, watch):
    """The scanner's cable is pulled between two keys of a scan (the gadget unbinds itself from the
    UDC): edged marks it offline, re-opens it by itself when it is plugged back, reads the next
    scan whole, and never delivers the torn one."""
    g = three["de"]
    first = _state(till, "de")
    assert g.type("de", "HALB-0815/zy.x", unplug_after=6).startswith("aborted")
    _state(till, "de", "error")
    g.replug()
    back = _state(till, "de")
    assert back["node"] == g.event_node() and first["node"]
    _scan(till, g, "de", "de", "GANZ-4711/yz.ä", watch)
    assert [s["code"] for s in watch.scans()] == ["GANZ-4711/yz.ä"]
    states = [(e["state"], e["detail"]) for e in watch.events() if e["event"] == "scanner.state"]
    assert [s for s, _ in states if s == "offline"] == ["offline"] and states[-1][0] == "online", states
    assert [d for s, d in states if s == "offline"][0] in ("unplugged", "device gone", "read failed: [Errno 19] No such device"), states


def _wait_share(till, what: str, path: Path, ready, timeout: float) -> str:
    """PATH in the 9p share (written by the guest, read here: no guest command), once READY says so."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text() if path.exists() else ""
        if ready(text):
            return text
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s; {path.name}: {text[-1500:]}")
        time.sleep(0.05)


def _record(till, node: str, name: str, layout: str, scans: int, timeout: float = TIMEOUT,
            wait: bool = True) -> str:
    """`edged scan record` on NODE in the guest (as a technician runs it), started; with WAIT,
    listening (else _listening() says when)."""
    log = f"{OUT}/{name}.log"
    till.vm.sh(f"rm -f {OUT}/{name}.*; systemd-run --unit=record-{name} --collect -p StandardOutput=file:{log} "
               f"-p StandardError=file:{log} edged scan record {node} {OUT}/{name}.json --layout {layout} "
               f"--scans {scans} --timeout {timeout}")
    if wait:
        _listening(till, name)
    return name


def _listening(till, name: str) -> None:
    _wait_share(till, f"edged scan record {name} listening", till.vm.share / "out" / f"{name}.log",
                lambda text: any(line.startswith("recording") for line in text.splitlines()), 120)


def _recorded(till, name: str) -> dict:
    # `wrote` is its last line, printed once the recording is saved.
    _wait_share(till, f"edged scan record {name} done", till.vm.share / "out" / f"{name}.log",
                lambda text: any(line.startswith("wrote") for line in text.splitlines()), 300)
    return json.loads((till.vm.share / "out" / f"{name}.json").read_text())


@pytest.fixture
def edged_stopped(till):
    """edged stopped, as a technician stops it to record a scanner it holds (`edged scan record`
    says so when it finds the node grabbed); started again afterwards, without waiting for it (the
    next module restarts it with its own configuration)."""
    till.vm.sh("systemctl stop edged")
    yield
    till.vm.sh("systemctl start --no-block edged")


def test_scan_record_captures_real_kernel_events(till, scanners, three, edged_stopped):
    """`edged scan record` in the guest on four real event nodes at once: the counter's three
    scanners (usbhid on dummy_hcd) and QEMU's own usb-kbd on xHCI (keys sent over QMP, German
    layout). Each recording reads back as the barcodes its device typed under its layout, and
    holds only its own device's keys. These recordings are the fixtures
    tests/fixtures/scans/usb-gadget-*.json and qemu-usb-kbd-de.json (README.md there says how they
    were made); the ordinary suite replays them."""
    kbd = scanners.qemu_kbd("reckbd", "QKBDREC1")
    try:
        # Started at once: each is a python3 start, seconds of emulated CPU.
        names = {layout: _record(till, g.event_node(), f"usb-gadget-{layout}", layout, 2, wait=False)
                 for layout, g in three.items()}
        # Keys sent over QMP one command at a time: on this loaded 2-core host a gap of over a
        # second between two (seen in CI) split the recording's one scan in two. Not more than
        # 2.5 s: once its scan is in, the recorder waits twice that for the keyboard to be quiet.
        _record(till, kbd.event_node(), "qemu-usb-kbd-de", "de", 1, timeout=2.5, wait=False)
        for name in [*names.values(), "qemu-usb-kbd-de"]:
            _listening(till, name)
        # One device after the other: QEMU's keyboard loses keys when the guest is too busy to
        # poll it (seen with a gadget typing at the same time in CI), so it goes first and the
        # gadgets wait for its scan to be read (its recorder's quiet wait then runs while they
        # type); a 20 ms intercharacter delay because on this loaded TCG guest even a recorder
        # falls behind a full-speed gadget (the kernel then drops events; usb-gadget-de.json has one).
        kbd.type("de", QEMU_BARCODE, gap=0.1)
        _wait_share(till, "the keyboard's scan read", till.vm.share / "out" / "qemu-usb-kbd-de.log",
                    lambda text: "  scan: " in text, 120)
        for layout, g in three.items():
            assert g.type(layout, BARCODES[layout], delay=0.02) == "typed"
            assert g.type(layout, EAN, delay=0.02) == "typed"
        for layout, name in names.items():
            doc = _recorded(till, name)
            assert doc["scans"] == [BARCODES[layout], EAN] and doc["layout"] == layout
            keys = [e for e in doc["events"] if e[2] == 1]  # EV_KEY: press and release of every key
            typed = BARCODES[layout] + EAN
            assert len(keys) == 2 * (len(typed) + 2) + 2 * sum(c in SHIFTED[layout] for c in typed)
        assert _recorded(till, "qemu-usb-kbd-de")["scans"] == [QEMU_BARCODE]
    finally:
        kbd.unplug()
