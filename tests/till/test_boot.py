"""The package under real systemd in the guest: installed, running, hardened as shipped."""
from __future__ import annotations


def test_edged_runs_as_packaged(till):
    assert till.vm.sh("systemctl is-active edged.socket edged").out.split() == ["active", "active"]
    # The unit as shipped: no drop-in changed it for the tests.
    assert till.vm.sh("systemctl show edged -p DropInPaths --value").out.strip() == ""
    assert till.vm.sh("systemctl show edged -p User --value").out.strip() == "_edged"
    assert till.status()["journal"]
