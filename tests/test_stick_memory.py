"""Verify and import stream: their peak RSS does not grow with the size of a stick. The child reads its
own high-water mark (VmHWM) as it ends: getrusage's ru_maxrss would also count the pytest process the
child was forked from, whose pages it shared until exec. A 0.2 MB and a 48 MB export (signed, 240,000 records) are checked by the real CLI;
both stay under 100 MB and within a few MB of each other. The 1 GB figure is `edged bench import`'s."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import sticks

RUN = ("import sys; from edged.cli import main; rc = main(sys.argv[1:]); "
       "print('maxrss', [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0]); "
       "sys.exit(rc)")


def _peak(*args) -> int:
    """Peak RSS in kB of `edged ARGS` run in a child; it must succeed."""
    out = subprocess.run([sys.executable, "-c", RUN, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return int(out.stdout.split("maxrss ")[-1])


def test_peak_rss_does_not_grow_with_the_stick(tmp_path: Path):
    key = sticks.new_key()
    peaks = {}
    for name, records in (("small", 1000), ("big", 240_000)):
        stick = tmp_path / name
        export = sticks.synthetic(stick, key, records, till=f"till-{name}")
        size = (export / "journal.seg").stat().st_size
        assert size > (40 << 20) if name == "big" else size < (1 << 20)
        arc = tmp_path / f"archive-{name}"
        assert subprocess.run([sys.executable, "-m", "edged", "archive", "enroll", arc, f"till-{name}",
                               key.public_text], capture_output=True).returncode == 0
        peaks[name] = (_peak("verify", "--key", f"till-{name}={key.public_text}", stick),
                       _peak("import", "--archive", arc, stick))
    for small, big in zip(peaks["small"], peaks["big"]):
        assert big < 100 * 1024, peaks
        assert big - small < 16 * 1024, peaks  # 48 MB more stick, not 48 MB more memory
    print("peak RSS (kB), verify and import:", peaks)
