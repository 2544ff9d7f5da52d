"""`edged sim printer`: the emulator alone, as a technician runs it."""
from __future__ import annotations

import re
import subprocess
import sys

from escpos.printer import Network


def test_standalone_emulator_prints_receipts_and_takes_commands():
    proc = subprocess.Popen([sys.executable, "-m", "edged", "sim", "printer", "--columns", "32"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()
        port = int(re.search(r"tcp 127\.0\.0\.1:(\d+) and pty (/dev/pts/\d+)", first).group(1))
        assert proc.stdout.readline().startswith("commands:")
        p = Network("127.0.0.1", port, timeout=5)
        p.charcode("CP858")
        p.set(align="center")
        p.textln("Smørbrød 4,50 €")
        p.cut()
        out = [proc.stdout.readline() for _ in range(3)]
        assert out[0].startswith("----- receipt (full cut)")
        assert out[1] == " " * 8 + "Smørbrød 4,50 €\n"  # (32 - 15) // 2
        proc.stdin.write("paper_out on\n")
        proc.stdin.flush()
        while not proc.stdout.readline().startswith("paper_out"):
            pass
        assert p.is_online() is False  # DLE EOT 1 now reports offline
        proc.stdin.write("bogus on\n")
        proc.stdin.flush()
        assert "unknown printer state 'bogus'" in proc.stdout.readline()
        p.close()
        proc.stdin.write("quit\n")
        proc.stdin.flush()
        assert proc.wait(10) == 0
    finally:
        proc.kill()
        proc.wait()
