"""The polkit rule the package ships for udisks2, run by a JavaScript engine the way polkitd runs it:
edged's user may mount and power off removable drives, nothing else, nobody else."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

RULE = Path(__file__).parent.parent / "debian" / "50-edged-udisks2.rules"
RUNNER = """
const fs = require('fs');
let rule = null;
const polkit = {Result: {YES: 'yes', NO: 'no', AUTH_ADMIN: 'auth_admin', NOT_HANDLED: 'not_handled'},
                addRule: f => { rule = f; }};
new Function('polkit', fs.readFileSync(process.argv[1], 'utf8'))(polkit);
for (const [id, user, details] of JSON.parse(process.argv[2])) {
  const r = rule({id: id, lookup: k => details[k]}, {user: user});
  console.log(r === undefined ? 'not_handled' : r);
}
"""
UD = "org.freedesktop.udisks2."
STICK = {"drive.removable": "true", "drive.removable.bus": "usb", "id.type": "vfat"}
INTERNAL = {"id.type": "ext4"}


def test_rule_grants_edged_mount_and_power_off_of_removable_drives_only():
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("no JavaScript engine (node) to run the polkit rule")
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
    out = subprocess.run([node, "-e", RUNNER, "--", str(RULE), json.dumps([c[:3] for c in cases])],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [c[3] for c in cases]
