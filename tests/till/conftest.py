"""Fixtures for `make test-till`: the .deb under test, the cached guest image, and one booted
Debian 12 guest per run with the .deb installed (the real unit, udev rules, sysusers, polkit rule
under real systemd). Tests plug USB devices into it (till.py) and look at what edged did."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from counter import plugged  # noqa: E402
from image import image  # noqa: E402
from install import installed  # noqa: E402
from vm import VM  # noqa: E402

from till import Till  # noqa: E402

REPO = HERE.parents[1]
WORK = Path(os.environ.get("TILL_DIR", "/var/tmp/edged-till"))


def log(line: str) -> None:
    """Progress and figures, shown as the run goes (pytest -s)."""
    print(f"  [till] {line}", file=sys.stderr, flush=True)


@pytest.fixture(scope="session")
def deb() -> Path:
    if os.geteuid() != 0:
        pytest.skip("the till VM test needs root (mmdebstrap, the image cache in /var/cache)")
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mkfs.vfat", "mcopy"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (make test-till installs it)")
    given = os.environ.get("EDGED_DEB")
    if given:
        return Path(given)
    log("building the .deb (make package)")
    subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "package", f"PKG_DIR={WORK / 'package'}"],
                   check=True, stdout=subprocess.DEVNULL)
    return next((WORK / "package").glob("edged_*.deb"))


def _host_probe() -> float:
    """Seconds a fixed Python loop takes on the host now: this shared machine's pace varies by a
    third between runs, and the suite's wall time with it (docs/ARCHITECTURE.md, "A till in a VM")."""
    t0 = time.perf_counter()
    n = 0
    for i in range(2_000_000):
        n += i
    return time.perf_counter() - t0


@pytest.fixture(scope="session")
def vm(deb):
    log(f"host pace: a 2,000,000-step Python loop in {_host_probe():.2f} s (the run's baseline)")
    t0 = time.monotonic()
    img = image(deb, log)
    share = WORK / "share"
    # Emptied, not replaced: a guest kept running (below) has this very directory mounted.
    share.mkdir(parents=True, exist_ok=True)
    for old in share.iterdir():
        shutil.rmtree(old) if old.is_dir() and not old.is_symlink() else old.unlink()
    (share / "out").mkdir()
    shutil.copy(deb, share / "edged.deb")
    shutil.copytree(HERE / "guest", share / "guest")
    machine = VM(img, WORK / "run", share, log, keep=bool(os.environ.get("EDGED_TILL_KEEP")))
    # EDGED_TILL_KEEP=1 (developers only): leave the guest running after the run, and use it
    # next time instead of booting again. CI never sets it.
    if os.environ.get("EDGED_TILL_KEEP") and machine.attach():
        if os.environ.get("EDGED_TILL_OVERLAY"):
            _overlay(machine, share)
        yield machine
        machine.detach()
        return
    try:
        machine.img = installed(img, deb, WORK / "run", log)
        machine.boot()
        machine.wait_for("edged running", "systemctl is-active edged", timeout=120)
        if os.environ.get("EDGED_TILL_OVERLAY"):
            _overlay(machine, share)
        log(f"vm: edged running {time.monotonic() - t0:.1f} s since the run began")
        yield machine
    finally:
        if os.environ.get("EDGED_TILL_KEEP") and machine.proc is not None and machine.proc.poll() is None:
            log(f"vm: left running for the next run (EDGED_TILL_KEEP): QEMU pid {machine.proc.pid}")
            machine.detach()
        else:
            machine.stop()


def _overlay(machine: VM, share: Path) -> None:
    """EDGED_TILL_OVERLAY=1 (developers only, never CI): this checkout's edged/ over the installed
    package's, so a change is tried in the guest without building a .deb."""
    shutil.copytree(REPO / "edged", share / "overlay" / "edged", ignore=shutil.ignore_patterns("__pycache__"))
    machine.sh("cp -r /mnt/host/overlay/edged /usr/lib/edged/ && systemctl restart edged", timeout=240)
    machine.wait_for("edged running", "systemctl is-active edged", timeout=60)
    log("vm: EDGED_TILL_OVERLAY: this checkout's edged/ replaces the package's (not a package test)")


@pytest.fixture(scope="session")
def till(vm) -> Till:
    return Till(vm, log)


_COUNTER: list = []  # the counter's generator while its devices are plugged
_COUNTER_GONE: list = []  # set once taken apart: pytest would hand out the stale value


@pytest.fixture(scope="session")
def counter(till):
    """The printers and scanners of counter.py, plugged once for the doctor, printer and scanner
    modules (one restart of edged for the three); taken apart after the last test using them."""
    devices = plugged(till)
    _COUNTER.append(devices)
    try:
        yield next(devices)
    finally:
        _unplug_counter()


def _unplug_counter() -> None:
    while _COUNTER:
        _COUNTER_GONE.append(True)
        _COUNTER.pop().close()  # the generator's `finally`: every gadget removed


@pytest.fixture(autouse=True)
def _counter_still_plugged(request):
    """A test needing the counter after it was taken apart (modules run out of file order) fails
    saying so, instead of timing out on gadgets that are gone."""
    if _COUNTER_GONE and "counter" in request.fixturenames:
        pytest.fail("the counter's devices were taken apart before this test: run the doctor, printer and "
                    "scanner modules one after the other (as in file order)")


@pytest.hookimpl(trylast=True)  # after the test's own fixtures are torn down
def pytest_runtest_teardown(item, nextitem):
    """The counter's gadgets out as soon as no test ahead needs them: the serial and stick tests
    run on a guest with no gadget program left idling."""
    if _COUNTER and (nextitem is None or "counter" not in nextitem.fixturenames):
        _unplug_counter()


@pytest.fixture(autouse=True)
def _timed(request):
    """Each test's wall time as the run goes (the suite's budget is minutes: where they go shows)."""
    t0 = time.monotonic()
    machine = request.getfixturevalue("vm") if "vm" in request.fixturenames else None
    before = list(machine.spent) if machine else [0, 0.0]
    yield
    spent = f" ({machine.spent[0] - before[0]} guest commands, {machine.spent[1] - before[1]:.1f} s)" if machine else ""
    log(f"{request.node.name}: {time.monotonic() - t0:.1f} s{spent}")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test's report carries the tail of edged's log in the guest: under emulation a
    failure is costly to reproduce, so what edged said then is kept with it."""
    outcome = yield
    rep = outcome.get_result()
    t = item.funcargs.get("till") if hasattr(item, "funcargs") else None
    if rep.failed and rep.when in ("setup", "call") and isinstance(t, Till):
        try:
            tail = t.vm.sh("journalctl -u edged -n 80 --no-pager -o short-monotonic", check=False, timeout=60).out
            tail += "\nits devices now: " + json.dumps(t.status().get("devices"), indent=1)
            # Which of its fds the event loop waits on (a device read that never fires shows here).
            tail += "\n" + t.vm.sh("p=$(systemctl show -p MainPID --value edged); ls -l /proc/$p/fd | "
                                   "sed 's/.*:[0-9][0-9] //'; for f in /proc/$p/fd/*; do "
                                   "[ \"$(readlink $f)\" = 'anon_inode:[eventpoll]' ] && "
                                   "echo \"epoll $f\" && grep tfd /proc/$p/fdinfo/${f##*/}; done; "
                                   "grep -E '^(N|U|H):' /proc/bus/input/devices; echo tty1:; cat /dev/vcs1 | tr -s ' '",
                                   check=False).out
        except Exception as e:  # a wedged guest: the report still goes out
            tail = f"(edged's log could not be read: {e})"
        rep.sections.append(("edged's log in the guest (last 80 lines)", tail))
