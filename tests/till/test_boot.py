"""The package under real systemd in the guest: installed, running, hardened as shipped."""
from __future__ import annotations


def test_edged_runs_as_packaged(till):
    assert till.vm.sh("systemctl is-active edged.socket edged").out.split() == ["active", "active"]
    # The unit as shipped: no drop-in changed it for the tests.
    assert till.vm.sh("systemctl show edged -p DropInPaths --value").out.strip() == ""
    assert till.vm.sh("systemctl show edged -p User --value").out.strip() == "_edged"
    assert till.status()["journal"]


def test_hardened_unit_exposure_stays_low(till):
    """The unit as packaged, hardened as shipped: systemd's own score stays at or under 3.0."""
    out = till.vm.sh("systemd-analyze security edged.service --no-pager").out
    score = float(out.rsplit("Overall exposure level for edged.service:", 1)[1].split()[0])
    till.log(f"systemd-analyze security edged.service: {score}")
    assert score <= 3.0, out[-1500:]


def test_packaged_rules_and_users_are_in_place(till):
    """What the tests below rely on came from the .deb, not from the test harness."""
    vm = till.vm
    assert "edged" in vm.sh("dpkg -S /lib/udev/rules.d/70-edged.rules").out
    assert vm.sh("id -nG _edged").out.split()[0] == "_edged"
    assert "edged" in vm.sh("ls /usr/share/polkit-1/rules.d/ /etc/polkit-1/rules.d/ 2>/dev/null").out
