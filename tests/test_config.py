"""Config: defaults, validation errors naming file and key, check-config's exit codes."""
from __future__ import annotations

import subprocess
import sys

import pytest

from edged import config
from edged.cli import main

BAD = [
    # (toml text, expected fragments of the one-line error)
    ("tillid = 'x'", ["tillid: unknown key", "did you mean 'till_id'"]),
    ("[daemon]\nsockt = '/x'", ["daemon.sockt: unknown key", "did you mean 'socket'"]),
    ("[printers.receipt]\nhost='h'\nport = 70000", ["printers.receipt.port: must be between 1 and 65535, got 70000"]),
    ("[printers.receipt]\nhost='h'\nport = '9100'", ["printers.receipt.port: must be an integer, got a string"]),
    ("[printers.receipt]\nhost='h'\nport = true", ["printers.receipt.port: must be an integer, got a boolean"]),
    ("[printers.receipt]\nbackend = 'bluetooth'", ["printers.receipt.backend: must be one of", "'bluetooth'"]),
    ("[printers.receipt]\nbackend = 'network'", ["printers.receipt.host: required for backend 'network'"]),
    ("[printers.receipt]\nbackend = 'serial'", ["printers.receipt.device: required for backend 'serial'"]),
    ("[printers.receipt]\nbackend = 'usb'", ["printers.receipt.vendor_id: backend 'usb' needs vendor_id"]),
    ("[printers.receipt]\nbackend = 'usblp'", ["printers.receipt.device: required for backend 'usblp'"]),
    ("[printers.receipt]\nbackend = 'usb'\nvendor_id = 0x0416\nproduct_id = 0x5011\nout_ep = 0x81",
     ["printers.receipt.out_ep: an OUT (0x01..0x0f) endpoint address such as 0x01, got 0x81"]),
    ("[printers.receipt]\nbackend = 'usb'\nvendor_id = 0x0416\nproduct_id = 0x5011\nin_ep = 0x02",
     ["printers.receipt.in_ep: an IN (0x81..0x8f) endpoint address such as 0x82, got 0x02"]),
    ("[printers.receipt]\nbackend = 'usb'\nvendor_id = 0x0416\nproduct_id = 0x5011\nin_ep = 0x80",
     ["printers.receipt.in_ep: an IN (0x81..0x8f)", "got 0x80"]),
    ("[printers.receipt]\nbackend = 'usb'\nvendor_id = 0x0416\nproduct_id = 0x5011\nin_ep = 0x100",
     ["printers.receipt.in_ep: must be between 0 and 255, got 256"]),
    ("[printers.receipt]\nbackend = 'usblp'\ndevice = '/dev/usb/lp0'\nout_ep = 2",
     ["printers.receipt.out_ep: only backend 'usb' talks to endpoints"]),
    ("[printers.receipt]\nhost='h'\nprofile = 'TM-T99'", ["printers.receipt.profile: unknown python-escpos profile 'TM-T99'"]),
    ("[printers.receipt]\nhost='h'\ncodepage = 'PC999'", ["printers.receipt.codepage: code page 'PC999' is not usable"]),
    ("[printers.receipt]\nhost='h'\nstatus_interval = 0.01", ["printers.receipt.status_interval: must be between 0.2 and 600"]),
    ("[printers.receipt]\nhost='h'\nbaudrate = 12345", ["printers.receipt.baudrate: must be one of"]),
    ("daemon = 5", ["daemon: must be a table, got an integer"]),
    ("printers = 'x'", ["printers: must be a table of named entries"]),
    ("[printers.'bad name']\nhost='h'", ["printers: name 'bad name'"]),
    ("[printers.'a.b']\nhost='h'", ["printers: name 'a.b'"]),
    ("[daemon]\nsocket = 'edged.sock'", ["daemon.socket: must be an absolute path"]),
    ("[daemon]\nsocket = '/tmp/" + "x" * 120 + "'", ["daemon.socket: path too long for a unix socket"]),
    ("till_id = 'till 1'", ["till_id: use letters, digits"]),
    ("[daemon]\ncpu = 'fast'", ["daemon.cpu: must be \"auto\", \"any\" or a CPU number, got 'fast'"]),
    ("[daemon]\ncpu = '4096'", ["daemon.cpu: CPU 4096 is not one edged may run on here"]),
    ("[daemon]\nlog_level = 'verbose'", ["daemon.log_level: must be one of 'debug', 'info', 'warning', 'error'"]),
    ("[printers.receipt]\nhost='h'\nportt = 9100", ["printers.receipt.portt: unknown key", "did you mean 'port'"]),
    ("till_id = ", ["not valid TOML"]),
    ("[printers.receipt]\nhost='h'\n[drawers.cash]\nprinter = 'kitchen'",
     ["drawers.cash.printer: no printer 'kitchen' in [printers]"]),
    ("[printers.a]\nhost='h'\n[printers.b]\nhost='h'\n[drawers.cash]\nsensor = 'open_low'",
     ["drawers.cash.printer: name its printer (a, b)"]),
    ("[printers.receipt]\nhost='h'\n[drawers.cash]\nsensor = 'high'", ["drawers.cash.sensor: must be one of 'none'"]),
    ("[printers.receipt]\nhost='h'\n[drawers.cash]\npin = 3", ["drawers.cash.pin: must be one of 2, 5"]),
    ("[printers.receipt]\nhost='h'\npaper_width = 76", ["printers.receipt.paper_width: must be one of 58, 80"]),
]


@pytest.mark.parametrize("text,fragments", BAD, ids=[b[1][0][:40] for b in BAD])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, capsys, text, fragments):
    path = tmp_path / "edged.toml"
    path.write_text(text)
    with pytest.raises(config.ConfigError) as err:
        config.load(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    for fragment in fragments:
        assert fragment in message
    assert main(["check-config", str(path)]) == 2
    assert capsys.readouterr().err == f"edged: {message}\n"


def test_empty_file_is_valid_and_defaults_live_in_code(tmp_path):
    path = tmp_path / "edged.toml"
    path.write_text("")
    cfg = config.load(path)
    assert cfg.daemon.socket == "/run/edged/edged.sock"
    assert cfg.printers == {}


def test_paper_width_sets_columns_and_image_width():
    wide = config.PrinterSettings(host="h", profile="TM-T20II")
    assert (wide.line_columns(), wide.head_dots()) == (48, 576)  # from the profile
    narrow = config.PrinterSettings(host="h", profile="TM-T20II", paper_width=58)
    assert (narrow.line_columns(), narrow.head_dots()) == (32, 384)
    assert config.PrinterSettings(host="h", columns=40).line_columns() == 40


def test_printer_settings_are_typed(tmp_path):
    path = tmp_path / "edged.toml"
    path.write_text("till_id = 'till-7'\n[printers.receipt]\nbackend='serial'\ndevice='/dev/ttyS0'\n"
                    "baudrate=38400\ntimeout=1\ncodepage='WPC1252'\n")
    cfg = config.load(path)
    pr = cfg.printers["receipt"]
    assert (pr.backend, pr.device, pr.baudrate, pr.timeout) == ("serial", "/dev/ttyS0", 38400, 1.0)
    assert isinstance(pr.timeout, float)


def test_effective_config_reads_back_identically(tmp_path):
    path = tmp_path / "edged.toml"
    path.write_text("till_id = 'till-7'\n[printers.receipt]\nhost='10.0.0.5'\n[printers.kitchen]\n"
                    "backend='file'\ndevice='/dev/usb/lp0'\n")
    cfg = config.load(path)
    again = tmp_path / "again.toml"
    again.write_text(config.to_toml(cfg))
    assert config.load(again) == cfg


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(config.ConfigError, match="no such file"):
        config.load(tmp_path / "nope.toml")


def test_check_config_exit_codes(tmp_path, capsys):
    good = tmp_path / "good.toml"
    good.write_text("[printers.receipt]\nhost = '192.0.2.1'\n")
    assert main(["check-config", str(good)]) == 0
    out = capsys.readouterr().out
    assert "[printers.receipt]" in out and 'host = "192.0.2.1"' in out and "port = 9100" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[printers.receipt]\nhost = '192.0.2.1'\nport = 0\n")
    assert main(["check-config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"edged: {bad}: printers.receipt.port: must be between 1 and 65535, got 0"]


def test_check_config_as_a_command(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[daemon]\nstate_dri = '/x'\n")
    proc = subprocess.run([sys.executable, "-m", "edged", "check-config", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "daemon.state_dri: unknown key (did you mean 'state_dir'?)" in proc.stderr


def test_usb_endpoints_are_optional_and_the_effective_config_explains_them(tmp_path, capsys):
    path = tmp_path / "edged.toml"
    path.write_text("[printers.receipt]\nbackend = 'usb'\nvendor_id = 0x0416\nproduct_id = 0x5011\n"
                    "[printers.odd]\nbackend = 'usb'\nvendor_id = 0x0416\nproduct_id = 0x5012\n"
                    "out_ep = 0x02\nin_ep = 0x81\n")
    cfg = config.load(path)
    assert (cfg.printers["receipt"].out_ep, cfg.printers["receipt"].in_ep) == (0, 0)  # from the descriptors
    assert (cfg.printers["odd"].out_ep, cfg.printers["odd"].in_ep) == (0x02, 0x81)
    assert main(["check-config", str(path)]) == 0
    out = capsys.readouterr().out
    assert "out_ep = 0  # usb: the bulk OUT endpoint print data goes to" in out
    assert "0: read from the printer's USB descriptors" in out
