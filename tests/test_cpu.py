"""daemon.cpu: every thread of a running edged on one CPU (cheap hand-offs), or where the scheduler likes."""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from edged.cpu import problem
from test_daemon import NotifyListener, start_daemon

ALLOWED = os.sched_getaffinity(0)


def threads_cpus(pid: int) -> dict[str, str]:
    """Each thread's name -> the CPUs it may run on, as the kernel says."""
    out = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        fields = dict(line.split(":\t", 1) for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
                      if ":\t" in line)
        out[f"{fields['Name']}/{tid}"] = fields["Cpus_allowed_list"].strip()
    return out



def parse(listing: str) -> set[int]:
    cpus: set[int] = set()
    for part in listing.split(","):
        lo, _, hi = part.partition("-")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    return cpus


@pytest.mark.parametrize("setting,expect", [("auto", {max(ALLOWED)}), ("any", ALLOWED), (str(min(ALLOWED)), {min(ALLOWED)})])
def test_threads_of_a_running_edged_share_the_configured_cpus(short_dir, setting, expect):
    cfg = short_dir / "edged.toml"
    cfg.write_text(f"[daemon]\ncpu = '{setting}'\n")
    notify = NotifyListener(short_dir / "notify")
    proc = start_daemon(short_dir, notify, "--config", str(cfg))
    try:
        assert "READY=1" in notify.collect("READY=1"), proc.stderr.read()
        cpus = threads_cpus(proc.pid)
        assert len(cpus) >= 3, cpus  # the loop, the journal thread, the notifier's listener at least
        assert {name: parse(c) for name, c in cpus.items()} == {name: expect for name in cpus}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        err = proc.stderr.read()
        if len(ALLOWED) > 1 and setting != "any":
            assert f"threads on CPU {min(expect)} (of " in err
        else:
            assert "threads on any of CPUs" in err
    finally:
        proc.kill()
        proc.wait()


def test_a_cpu_edged_may_not_use_is_a_config_error():
    assert problem("auto") is None and problem("any") is None and problem(str(max(ALLOWED))) is None
    assert "must be \"auto\", \"any\" or a CPU number, got 'fast'" in problem("fast")
    assert "CPU 4096 is not one edged may run on here (allowed: " in problem("4096")
    assert "got '-1'" in problem("-1")
