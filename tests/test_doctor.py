"""`edged doctor` against a real simulated daemon, real files and this machine's user database."""
from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edged import config
from edged.cli import doctor, doctor_nodes
from edged.client import BlockingClient
from edged.devices import registry
from edged.journal import frame as fr


def _exists(getter, name: str) -> bool:
    try:
        getter(name)
    except KeyError:
        return False
    return True


HAS_EDGED_USERS = _exists(pwd.getpwnam, doctor.DAEMON_USER) or _exists(grp.getgrnam, doctor.CLIENT_GROUP)


def edged(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=60)


def run_doctor(cfg: Path, sock: Path, state: Path, *extra: str) -> tuple[int, dict[str, list[str]]]:
    """Exit code, and each check's lines (status line, then its hint if any)."""
    done = edged("doctor", "--config", str(cfg), "--socket", str(sock), "--state-dir", str(state), *extra)
    assert done.stderr == ""
    lines: dict[str, list[str]] = {}
    last = ""
    for line in done.stdout.splitlines():
        m = re.match(r"^(OK|WARN|FAIL|N/A)\s+(\S+)\s+(.*)$", line)
        if m:
            lines.setdefault(m.group(2), []).append(f"{m.group(1)} {m.group(3)}")
        else:
            assert line.startswith(" " * 16 + "-> "), line
            lines[last].append(line.strip())
        last = m.group(2) if m else last
    return done.returncode, lines


def failing(lines: dict[str, list[str]]) -> set[str]:
    return {check for check, ls in lines.items() if any(x.startswith("FAIL") for x in ls)}


def start_daemon(cfg: Path, state: Path, sock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--simulate", "--config", str(cfg),
                             "--state-dir", str(state), "--socket", str(sock)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 20
    while not sock.exists():
        assert proc.poll() is None and time.time() < deadline, "daemon did not start"
        time.sleep(0.05)
    return proc


def test_a_running_till_then_paper_out_then_stopped_then_a_damaged_journal(short_dir):
    cfg, state, sock = short_dir / "edged.toml", short_dir / "state", short_dir / "edged.sock"
    cfg.write_text('till_id = "till-7"\n[printers.receipt]\nbackend = "network"\nhost = "127.0.0.1"\n'
                   "status_interval = 0.2\n")
    proc = start_daemon(cfg, state, sock)
    try:
        with BlockingClient.connect(str(sock), "test") as c:
            before = c.request("status")["journal"]["last_seq"]
            c.request("append", records=[{"kind": "sale", "body": {"i": i}} for i in range(3)])
        code, lines = run_doctor(cfg, sock, state)
        assert lines["config"] == [f"OK {cfg} (till till-7)"]
        assert lines["socket"][0].startswith(f"OK {sock}: edged ") and "on till till-7 (simulated), up " in \
            lines["socket"][0]
        # The count and the lists below come from the same status: the config names one printer,
        # the simulated till emulates it and adds two scanners.
        assert lines["socket"][0].endswith("; 1 printer, 2 scanners")
        assert lines["journal"] == [f"OK {before + 3} records in 1 segment (seq 1..{before + 3}) in {state}"]
        assert lines["printers"] == ["OK receipt (simulated): ready"]
        assert all(x.startswith("OK ") for x in lines["scanners"]) and len(lines["scanners"]) == 2  # simulated
        assert re.fullmatch(rf"(OK|WARN|FAIL) [\d.]+ [GM]B free of [\d.]+ [GM]B \(\d+ %\) on {state}",
                            lines["disk"][0])
        assert lines["sticks"] == ["OK no stick edged can use is plugged in"], lines["sticks"]
        assert list(lines) == ["config", "user", "devices", "udev", "socket", "journal", "printers",
                               "scanners", "sticks", "disk"]
        # What only the Debian package brings does not apply to a simulated till: N/A, never FAIL.
        for check in ("user", "devices", "udev"):
            assert lines[check][0].startswith("N/A not part of a simulated till: "), lines[check]
            assert len(lines[check]) == 1  # no hint to install anything
        assert failing(lines) <= {"disk"} and code == (1 if failing(lines) else 0)

        assert "paper_out" in edged("sim", "set", "paper_out=on", "--socket", str(sock)).stdout
        code, lines = run_doctor(cfg, sock, state)
        printer = lines["printers"][0]
        assert printer.startswith("FAIL receipt (simulated): error: ") and "paper_out" in printer
        assert lines["printers"][1] == "-> load a new paper roll and close the cover"
        assert "printers" in failing(lines) and code == 1

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        code, lines = run_doctor(cfg, sock, state)
        assert lines["socket"] == [f"FAIL {sock}: cannot connect (No such file or directory)",
                                   "-> systemctl status edged; journalctl -u edged -e"]
        assert lines["printers"][0] == "WARN not checked: daemon not reachable"
        assert lines["journal"][0].startswith(f"OK {before + 3} records")  # readable with the daemon stopped
        assert code == 1
        # Nothing says the till is simulated now: the package's parts are judged ...
        assert lines["devices"] == ["OK no device nodes configured (network printers are checked below)"]
        assert not any(x.startswith("N/A") for ls in lines.values() for x in ls)
        if not HAS_EDGED_USERS:
            assert lines["user"][0] == "FAIL no user _edged, no group edged"
            assert "--reinstall" not in lines["user"][1]  # this edged runs from a checkout
        # ... unless the technician says so.
        code, lines = run_doctor(cfg, sock, state, "--simulated")
        assert [lines[c][0][:4] for c in ("user", "devices", "udev")] == ["N/A "] * 3
        assert failing(lines) == {"socket"}

        copy = short_dir / "copy"
        shutil.copytree(state, copy)
        segment = sorted((copy / "journal" / "segments").glob("*.seg"))[0]
        data = bytearray(segment.read_bytes())
        data[fr.SEG_HEAD_SIZE + fr.HEAD_SIZE + 2] ^= 0x40  # inside the first record's payload
        segment.write_bytes(bytes(data))
        code, lines = run_doctor(cfg, sock, copy)
        assert lines["journal"] == [f"FAIL {segment.name} offset {fr.SEG_HEAD_SIZE}: checksum mismatch",
                                    f"-> edged journal verify --state-dir {copy}   (every problem, in detail)"]
        assert code == 1
    finally:
        proc.kill()
        proc.wait()


def test_a_bad_config_key_is_named_and_devices_are_not_guessed(short_dir):
    cfg = short_dir / "edged.toml"
    cfg.write_text('[printers.receipt]\nbackend = "network"\nhots = "10.0.0.9"\n')
    code, lines = run_doctor(cfg, short_dir / "none.sock", short_dir / "state")
    assert lines["config"] == [f"FAIL {cfg}: printers.receipt.hots: unknown key (did you mean 'host'?)",
                               f"-> fix it, then: edged check-config {cfg}"]
    assert lines["devices"][0] == "WARN not checked: the config is invalid"
    assert lines["journal"][0] == f"WARN no journal in {short_dir / 'state'}"
    assert code == 1


def test_read_write_permission_by_owner_group_and_other(tmp_path):
    node = tmp_path / "ttyUSB0"
    node.write_bytes(b"")
    if os.getuid() == 0:
        os.chown(node, 4242, 4343)  # an owner that is not root, whom every mode lets in
    me, my_group = os.stat(node).st_uid, os.stat(node).st_gid
    stranger, other_group = me + 4242, my_group + 4242
    cases = [  # mode, uid, groups, may open read-write
        (0o600, me, set(), True),
        (0o600, stranger, {my_group}, False),
        (0o660, stranger, {other_group, my_group}, True),
        (0o660, stranger, {other_group}, False),
        (0o640, stranger, {my_group}, False),          # the group may only read
        (0o066, me, {my_group}, False),                # the owner class wins, even when it grants less
        (0o606, stranger, {my_group}, False),          # so does the group class
        (0o606, stranger, {other_group}, True),
        (0o000, 0, set(), True),                       # root
    ]
    for mode, uid, gids, expected in cases:
        node.chmod(mode)
        assert doctor_nodes.opens_read_write(str(node), uid, gids) is expected, (oct(mode), uid, gids)
    with pytest.raises(FileNotFoundError):
        doctor_nodes.opens_read_write(str(tmp_path / "gone"), me, set())


@pytest.mark.skipif(HAS_EDGED_USERS, reason="this machine has edged's users")
def test_device_nodes_missing_and_present_judged_for_this_process(tmp_path):
    lp = tmp_path / "lp0"
    lp.write_bytes(b"")
    lp.chmod(0o600)
    cfg = config.from_dict({"printers": {"a": {"backend": "file", "device": str(lp)},
                                         "b": {"backend": "serial", "device": str(tmp_path / "ttyUSB9")},
                                         "net": {"host": "10.0.0.9"}}})
    found = doctor_nodes.check_devices(cfg, "/etc/edged/edged.toml")
    assert [str(f) for f in found] == [
        f"OK    devices   printer a: {lp}, this process, uid {os.getuid()} (no user _edged) may open it",
        f"FAIL  devices   printer b: no {tmp_path / 'ttyUSB9'}\n{'':16}-> plugged in and switched on? ls /dev/edged/"]
    # A simulated till emulates every printer: their nodes are not its business ...
    assert [str(f) for f in doctor_nodes.check_devices(cfg, "/etc/edged/edged.toml", simulated=True)] == [
        "N/A   devices   not part of a simulated till: its printer and scanners are emulated, no device nodes"]
    # ... but a scanner in the config is opened for real, simulated or not.
    with_scanner = config.from_dict({"printers": {"b": {"backend": "serial", "device": "/dev/ttyUSB9"}},
                                     "scanners": {"front": {"backend": "serial", "device": str(tmp_path / "scan"),
                                                            "suffix": "cr"}}})
    found = doctor_nodes.check_devices(with_scanner, "/etc/edged/edged.toml", simulated=True)
    assert [(f.level, f.found) for f in found] == [("FAIL", f"scanner front: no {tmp_path / 'scan'}")]


def test_a_serial_port_named_by_its_plug_order_number_is_warned_with_the_stable_name():
    """On a real kernel (tests/till/test_serial.py) two USB-serial adapters unplugged and plugged
    back the other way round swap /dev/ttyUSB0 and /dev/ttyUSB1: a config naming one by number
    then talks to the other device. doctor warns and names the device's stable link."""
    links = ["/dev/serial/by-path/pci-0000:00:04.0-usb-0:3:1.0-port0",
             "/dev/serial/by-id/usb-QEMU_QEMU_USB_SERIAL_PRN0001-if00-port0",
             "/dev/edged/serial-tty-0403-6001-PRN0001-if00"]
    found = doctor_nodes.plug_order_finding("printer receipt", "/dev/ttyUSB0", links)
    assert (found.level, found.found, found.hint) == (
        "WARN", "printer receipt: /dev/ttyUSB0 is numbered in plug order: after a replug, or with another "
                "adapter plugged first, it is another device",
        'printers.receipt.device = "/dev/edged/serial-tty-0403-6001-PRN0001-if00" (the device there now)')
    by_id = doctor_nodes.plug_order_finding("scanner front", "/dev/ttyACM1", links[:2])
    assert by_id.hint == ('scanners.front.device = "/dev/serial/by-id/usb-QEMU_QEMU_USB_SERIAL_PRN0001-if00-port0"'
                          " (the device there now)")
    assert "ls -l /dev/edged/" in doctor_nodes.plug_order_finding("scanner front", "/dev/ttyUSB3", []).hint
    # Which configured names count: the kernel's numbered nodes, not stable links or RS-232 ports.
    numbered = [n for n in ("/dev/ttyUSB0", "/dev/ttyACM12", "/dev/input/event3", "/dev/usb/lp1", "/dev/ttyS0",
                            "/dev/ttyUSB", "/dev/edged/printer-lp-0416-5011-X",
                            "/dev/edged/serial-tty-0403-6001-X-if00", "/dev/serial/by-id/usb-X-if00-port0",
                            "/tmp/ttyUSB0", "/dev/ttyUSB0x")
                if doctor_nodes.PLUG_ORDER_NODE.fullmatch(n)]
    assert numbered == ["/dev/ttyUSB0", "/dev/ttyACM12", "/dev/input/event3", "/dev/usb/lp1"]


@pytest.mark.skipif(HAS_EDGED_USERS, reason="this machine has edged's users")
def test_a_numbered_serial_port_in_the_config_gets_the_warning_after_its_node_check():
    cfg = config.from_dict({"printers": {"b": {"backend": "serial", "device": "/dev/ttyUSB97"}},
                            "scanners": {"front": {"backend": "serial", "device": "/dev/ttyACM97", "suffix": "cr"},
                                         "wedge": {"vendor": "05e0", "product": "1200"}}})
    found = [(f.level, f.found.split(":")[0]) for f in doctor_nodes.check_devices(cfg, "/etc/edged/edged.toml")]
    # The wedge scanner is named by USB ids: whatever node it resolves to is not the config's doing.
    assert found == [("FAIL", "printer b"), ("WARN", "printer b"), ("FAIL", "scanner front"),
                     ("WARN", "scanner front"), ("FAIL", "scanner wedge")]


def test_what_the_package_brings_is_reinstalled_on_a_till_and_installed_from_a_checkout():
    assert doctor.packaged("/usr/lib/edged/edged/doctor.py")
    assert not doctor.packaged()  # these tests run from a checkout
    on_till = doctor.package_hint("installs it", "/usr/lib/edged/edged/doctor.py")
    assert on_till == "the edged package installs it: sudo apt install --reinstall edged"
    here = doctor.package_hint("installs it")
    assert "--reinstall" not in here and "runs from a checkout" in here and "edged demo" in here


@pytest.mark.skipif(HAS_EDGED_USERS, reason="this machine has edged's users")
def test_user_check_fails_without_the_package_and_names_the_group_to_join():
    found = doctor.check_users(None)
    assert found.level == "FAIL" and found.found == "no user _edged, no group edged"
    assert found.hint.startswith("the edged package creates them; this edged runs from a checkout: install")
    assert doctor.check_users(None, daemon_user="root", client_group="root").level == "OK"
    joined = doctor.check_users("nobody", daemon_user="root", client_group="root")
    assert (joined.level, joined.hint) == ("WARN", "sudo usermod -aG root nobody, then log in again")


def test_udev_rules_packaged_and_site(tmp_path):
    lib, site = tmp_path / "lib", tmp_path / "etc"
    lib.mkdir()
    site.mkdir()
    cfg_path = tmp_path / "edged.toml"
    cfg_path.write_text('[scanners.front]\nvendor = "abcd"\nproduct = "1234"\n')
    cfg = config.load(cfg_path)

    def check(c=None):
        return [(f.level, f.found) for f in doctor_nodes.check_udev(c, str(cfg_path), [lib], site)]

    assert check() == [("FAIL", f"no 70-edged.rules in {lib}: edged cannot open its devices")]
    (lib / registry.RULES_NAME).write_text(registry.rules_text())
    assert check() == [("OK", f"{lib / registry.RULES_NAME} matches this edged")]
    (lib / registry.RULES_NAME).write_text(registry.rules_text().replace('MODE="0660"', 'MODE="0666"'))
    assert check() == [("WARN", f"{lib / registry.RULES_NAME} differs from this edged's rules")]

    site_file = site / registry.SITE_RULES_NAME
    assert check(cfg)[1] == ("WARN", f"no {site_file}, and the packaged rules miss scanner front")
    epson = tmp_path / "epson.toml"  # granted by the packaged rules only while it shows its printer class
    epson.write_text('[printers.receipt]\nbackend = "usb"\nvendor_id = 0x04b8\nproduct_id = 0x0e15\n')
    assert check(config.load(epson))[1] == ("WARN", f"no {site_file}, and the packaged rules cover printer "
                                                    "receipt only while it shows its USB printer interface")
    made = edged("udev-rules", "--for-config", str(cfg_path))
    assert made.returncode == 0 and 'ATTRS{idVendor}=="abcd"' in made.stdout
    site_file.write_text(made.stdout)
    assert check(cfg)[1] == ("OK", f"{site_file} covers scanner front")
    cfg_path.write_text('[scanners.front]\nvendor = "abcd"\nproduct = "9999"\n')  # the scanner was swapped
    assert check(config.load(cfg_path))[1] == ("WARN", f"{site_file} does not match the config's scanner front")


def test_exit_code_and_free_space_thresholds():
    ok, warn, fail = (doctor.Finding(level, "x", "y") for level in ("OK", "WARN", "FAIL"))
    assert doctor.exit_code([ok, warn, warn]) == 0
    assert doctor.exit_code([ok, fail, warn]) == 1
    mb, gb = 10**6, 10**9
    assert doctor.judge_space(99 * mb, 100 * gb) == "FAIL"
    assert doctor.judge_space(500 * mb, 2 * gb) == "WARN"     # under 1 GB
    assert doctor.judge_space(5 * gb, 100 * gb) == "WARN"     # under 10 %
    assert doctor.judge_space(20 * gb, 100 * gb) == "OK"


def _printer_status(backend: str, state: str = "ok", reasons: tuple[str, ...] = (), endpoints: str = "",
                    detail: str = "") -> dict:
    """A printer as the daemon's `status` describes it (docs/PROTOCOL.md)."""
    return {"simulated": False, "devices": {"receipt": {
        "kind": "printer", "backend": backend, "state": state, "reasons": list(reasons), "drawer_pin3": False,
        "since": 0.0, "detail": detail, "endpoints": endpoints}}}


def test_a_usb_printer_line_says_which_endpoints_edged_uses_and_where_they_came_from():
    found = doctor.check_printers(_printer_status("usb", endpoints="OUT 0x02 IN 0x81 from the device's descriptors"))
    assert [str(f) for f in found] == \
        ["OK    printers  receipt (usb): ready; endpoints OUT 0x02 IN 0x81 from the device's descriptors"]
    found = doctor.check_printers(_printer_status("usb", "error", ("offline",), "OUT 0x01 IN 0x82 from config",
                                                  "connection lost: [Errno 19] No such device"))
    assert found[0].level == "FAIL"
    assert found[0].found == ("receipt (usb): error: offline - connection lost: [Errno 19] No such device; "
                              "endpoints OUT 0x01 IN 0x82 from config")
    assert "cable plugged in" in found[0].hint
    # never opened yet: nothing to say about endpoints
    assert doctor.check_printers(_printer_status("usb", "error", ("offline",)))[0].found == \
        "receipt (usb): error: offline"


def test_a_printer_that_cannot_answer_gets_the_hint_for_its_backend():
    on_file = doctor.check_printers(_printer_status("file", "unknown", ("cannot_read_status",)))[0]
    assert on_file.level == "WARN" and 'backend = "usblp"' in on_file.hint
    one_way = doctor.check_printers(_printer_status("usblp", "unknown", ("cannot_read_status",)))[0]
    assert "cannot answer" in one_way.hint and "usblp" not in one_way.hint


def test_sticks_edged_sees_are_listed_for_the_technician():
    stick = {"device": "sda1", "node": "/dev/sda1", "fs_type": "vfat", "bus": "usb", "label": "TILLSTICK",
             "uuid": "1234-ABCD", "mounted": False}
    found = doctor.check_sticks({"usb": {"mounter": "udisks2", "sticks": [stick, {**stick, "device": "sdb",
                                                                                    "label": "", "mounted": True}]}})
    assert [str(f) for f in found] == ["OK    sticks    sda1 (vfat, TILLSTICK, usb): plugged in",
                                       "OK    sticks    sdb (vfat, usb): mounted"]
    assert [f.level for f in doctor.check_sticks({"usb": {}})] == ["N/A"]
    assert [f.level for f in doctor.check_sticks({"usb": {"watching": False, "sticks": []}})] == ["WARN"]
    hostile = doctor.check_sticks({"usb": {"sticks": [{**stick, "label": "\x1b]0;pwn\x07"}]}})
    assert "\x1b" not in hostile[0].found and "\\x1b" in hostile[0].found
    assert doctor.check_sticks(None)[0].found == "not checked: daemon not reachable"
