"""udev/70-edged.rules is the device registry, rendered: a test keeps the two in step."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from edged import config
from edged.devices import registry

RULES = Path(__file__).resolve().parents[1] / "udev" / registry.RULES_NAME


def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_packaged_rules_are_the_registry_rendered():
    assert RULES.read_text() == registry.rules_text(), (
        "udev/70-edged.rules differs from edged/devices/registry.py: regenerate it with "
        "`edged udev-rules > udev/70-edged.rules`")
    cli = subprocess.run([sys.executable, "-m", "edged", "udev-rules"], capture_output=True, text=True, check=True)
    assert cli.stdout == RULES.read_text()


def test_every_registry_entry_has_its_rules_and_nothing_else_is_granted():
    lines = rule_lines(RULES.read_text())
    marks = [line for line in lines if "EDGED_KIND}=\"" in line]
    expected = sum(len(k.subsystems) * len(k.matches) for k in registry.KINDS)
    assert len(marks) == expected
    for kind in registry.KINDS:
        for m in kind.matches:
            mine = [line for line in marks if f'{{idVendor}}=="{m.vendor}"' in line
                    and f'EDGED_KIND}}="{kind.name}"' in line]
            assert len(mine) == len(kind.subsystems), (kind.name, m)
            for line in mine:
                node = {"usb": "usb", "usbmisc": "lp", "tty": "tty", "input": "event"}[
                    line.split('SUBSYSTEM=="')[1].split('"')[0]]
                assert f'ENV{{EDGED_NODE}}="{node}"' in line  # raw USB and usblp nodes get names of their own
                if m.product:
                    assert f'{{idProduct}}=="{m.product}"' in line
                if 'SUBSYSTEM=="tty"' in line:  # ModemManager must not send AT commands to it
                    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in line
                if 'SUBSYSTEM=="input"' in line:  # a desktop must not type the scanner's keys
                    assert 'KERNEL=="event[0-9]*"' in line and 'ENV{LIBINPUT_IGNORE_DEVICE}="1"' in line
    # Epson also makes office printers and scanners: raw USB only with a printer-class interface.
    epson_usb = [line for line in marks if '"04b8"' in line and 'SUBSYSTEM=="usb"' in line]
    assert epson_usb and all('ID_USB_INTERFACES}=="*:0701??:*"' in line for line in epson_usb)
    # Access is granted once, to the daemon's group, for marked nodes only; no broad groups.
    grants = [line for line in lines if "GROUP=" in line or "MODE=" in line]
    assert grants == [f'GROUP="{registry.DAEMON_GROUP}", MODE="0660"']
    assert lines.index('ENV{EDGED_KIND}!="?*", GOTO="edged_end"') < lines.index(grants[0])
    assert not re.search(r'GROUP="(input|dialout|plugdev|lp)"', RULES.read_text())
    assert lines[0] == 'ACTION=="remove", GOTO="edged_end"' and lines[-1] == 'LABEL="edged_end"'
    assert lines[-2] == 'SYMLINK+="edged/$env{EDGED_ID}"'


def test_site_rules_cover_configured_devices_the_registry_lacks(tmp_path):
    cfg = config.from_dict({
        "printers": {"known": {"backend": "usb", "vendor_id": 0x0519, "product_id": 0x0003},
                     # an Epson TM may be set to a vendor-defined USB class: the packaged rule
                     # (printer class only) might not grant it, so it gets a site rule
                     "tm": {"backend": "usb", "vendor_id": 0x04B8, "product_id": 0x0202},
                     "odd": {"backend": "usb", "vendor_id": 0x1234, "product_id": 0xABCD}},
        "scanners": {"front": {"vendor": "05e0", "product": "1200"},
                     "back": {"vendor": "AbCd", "product": "0001"}}})
    assert registry.covered("usb", "0519", "0003").name == "printer"
    assert registry.covered("input", "abcd", "0001") is None
    site = registry.site_rules_text(cfg, "edged.toml")
    lines = rule_lines(site)
    # Only the two unknown devices, each on every subsystem its kind uses, marked for 70-edged.rules.
    assert sorted(re.findall(r'ATTRS?\{idVendor\}=="(\w+)"', site)) == [
        "04b8", "04b8", "1234", "1234", "abcd", "abcd"]
    assert "ID_USB_INTERFACES" not in site
    assert 'SUBSYSTEM=="input", KERNEL=="event[0-9]*", ATTRS{idVendor}=="abcd", ATTRS{idProduct}=="0001", ' \
           'ENV{EDGED_KIND}="scanner", ENV{EDGED_NODE}="event", ENV{LIBINPUT_IGNORE_DEVICE}="1"' in lines
    assert 'SUBSYSTEM=="usb", ENV{DEVTYPE}=="usb_device", ATTR{idVendor}=="1234", ATTR{idProduct}=="abcd", ' \
           'ENV{EDGED_KIND}="printer", ENV{EDGED_NODE}="usb"' in lines
    assert not any("GROUP=" in line for line in lines)  # the packaged file grants, after these
    assert registry.SITE_RULES_NAME < registry.RULES_NAME
    none = registry.site_rules_text(config.from_dict({}), "edged.toml")
    assert "nothing: the packaged rules cover every configured device" in none
    path = tmp_path / "edged.toml"
    path.write_text('[scanners.back]\nvendor = "abcd"\nproduct = "0001"\n')
    cli = subprocess.run([sys.executable, "-m", "edged", "udev-rules", "--for-config", str(path)],
                         capture_output=True, text=True)
    assert cli.returncode == 0 and 'ATTRS{idVendor}=="abcd"' in cli.stdout
    bad = subprocess.run([sys.executable, "-m", "edged", "udev-rules", "--for-config", str(tmp_path / "nope.toml")],
                         capture_output=True, text=True)
    assert bad.returncode != 0 and "nope.toml" in bad.stderr
