"""The polkit rule the package ships for udisks2, run by duktape, the JavaScript engine Debian 12's
polkitd runs rules with, given the polkit API the way polkitd gives it: edged's user may mount and
power off removable drives, nothing else, nobody else."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

RULE = Path(__file__).parent.parent / "debian" / "50-edged-udisks2.rules"
# ES5 only, as duktape takes it. polkitd hands a rule an action with lookup() and a subject with
# user; a rule that returns nothing leaves the decision to the next one ("not_handled").
RUNNER = """
var rule = null;
var polkit = {Result: {YES: 'yes', NO: 'no', AUTH_ADMIN: 'auth_admin', NOT_HANDLED: 'not_handled'},
              addRule: function (f) { rule = f; }};
new Function('polkit', RULE_TEXT)(polkit);
CASES.forEach(function (c) {
  var details = c[2];
  var r = rule({id: c[0], lookup: function (k) { return details[k]; }}, {user: c[1]});
  print(r === undefined ? 'not_handled' : r);
});
"""
UD = "org.freedesktop.udisks2."
STICK = {"drive.removable": "true", "drive.removable.bus": "usb", "id.type": "vfat"}
INTERNAL = {"id.type": "ext4"}


def test_rule_grants_edged_mount_and_power_off_of_removable_drives_only(tmp_path):
    duk = shutil.which("duk")
    if duk is None:
        pytest.skip("no duk (Debian package duktape, which make test installs) to run the polkit rule")
    cases = [
        (UD + "filesystem-mount", "_edged", STICK, "yes"),
        (UD + "filesystem-mount-other-seat", "_edged", STICK, "yes"),  # a service has no seat
        (UD + "power-off-drive-other-seat", "_edged", STICK, "yes"),
        (UD + "power-off-drive", "_edged", STICK, "yes"),
        (UD + "filesystem-mount-system", "_edged", INTERNAL, "not_handled"),
        (UD + "filesystem-mount-other-seat", "_edged", INTERNAL, "not_handled"),
        (UD + "filesystem-unmount-others", "_edged", STICK, "not_handled"),
        (UD + "modify-device", "_edged", STICK, "not_handled"),
        (UD + "filesystem-mount-other-seat", "cashier", STICK, "not_handled"),
        ("org.freedesktop.login1.reboot", "_edged", {}, "not_handled"),
    ]
    script = tmp_path / "run.js"
    script.write_text(f"var RULE_TEXT = {json.dumps(RULE.read_text())};\n"
                      f"var CASES = {json.dumps([c[:3] for c in cases])};\n" + RUNNER)
    out = subprocess.run([duk, str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [c[3] for c in cases]
