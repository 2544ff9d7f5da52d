"""`edged bench fleet` runs end to end on a small fleet and reports every figure it promises."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from brokers import need_mosquitto
from edged.fleet.localpg import BINARIES, binaries

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_bench_fleet_reports_latency_rate_baseline_and_catch_up(tmp_path, backend):
    need_mosquitto()
    if backend == "postgresql" and binaries() is None:
        pytest.skip(f"no PostgreSQL server installed ({BINARIES}; make test installs postgresql)")
    out = subprocess.run([sys.executable, "-m", "edged", "bench", "fleet", "--tills", "2", "--records", "300",
                          "--samples", "20", "--catch-up", "2000", "--dir", str(tmp_path), "--backend", backend],
                         capture_output=True, text=True, cwd=REPO, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert re.search(r"append -> committed at head office p50 [\d.]+ ms  p99 [\d.]+ ms \(20 sales", text), text
    how = "by COPY" if backend == "postgresql" else "inserted 5,000 to a transaction"
    assert re.search(r"2 tills appending 300 sales each at once: [\d,]+ records/s archived .* the same rows "
                     rf"{how} by one process: [\d,]+ rows/s: [\d.]+x", text), text
    assert re.search(r"the tills' appends \(fdatasync each\) ended after [\d.]+ s of [\d.]+ s \([\d,]+ records/s", text)
    assert ("-> PostgreSQL archive" if backend == "postgresql" else "-> SQLite archive") in text
    assert re.search(r"caught up in [\d.]+ s: [\d,]+ records/s", text), text
    held = int(re.search(r"the archive holds ([\d,]+) records", text)[1].replace(",", ""))
    assert held >= 2 * 300 + 20 + 2000, text  # every sale of every till, and the one back from its outage
    assert list(tmp_path.iterdir()) == []  # nothing left behind
