"""`edged demo`: the real daemon on the simulated till, seen through a client and the CLI.

It starts `edged run --simulate` in a temporary directory with a real sd_notify socket, talks
to it as a client, runs the technician's commands in that directory, and stops it with
SIGTERM. The directory goes at the end, with whatever the processes it started put in $TMPDIR;
the daemon's log is kept in a file whose path is printed, with the log's last warnings.
Every capability adds its step (tour_steps.py, tour_journal.py, tour_identity.py, tour_trust.py,
tour_online.py).
"""
from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..client import Client
from ..systemd import NotifyListener
from .format import plural
from .tour_identity import identity_steps
from .tour_journal import day_steps, journal_steps, sync_steps
from .tour_online import online_steps
from .tour_steps import DemoTill, device_steps, step
from .tour_trust import trust_steps

DEMO_CONFIG = """\
till_id = "demo-till-1"

[numbering.receipt]
first = 3000000
last = 3999999

[sync]
offline_after = 1      # seconds without the sync layer before it counts as offline

[deadlines."order.web"]
consumer = "pos"       # a web order must be picked up by the POS app
within = 2             # seconds (in a shop: minutes)

[export]
exclude_kinds = ["stock.move"]   # stock is managed at head office
"""
WARNINGS_SHOWN = 8
TAIL_ON_FAILURE = 20
_WARNING = re.compile(r"^\d{4}-\d\d-\d\d (\d\d:\d\d:\d\d),\d+ (WARNING|ERROR|CRITICAL) +(.*)$")


def default_log() -> Path:
    """Where the daemon's log is kept: in the virtualenv edged runs from (a checkout's .venv),
    else in the current directory; never in the temporary directory, which goes at the end."""
    if sys.prefix != sys.base_prefix:
        return Path(sys.prefix) / "demo.log"
    return Path("edged-demo.log")


def run_demo(log_path: Path | None = None) -> int:
    log_path = (log_path or default_log()).absolute()
    with tempfile.TemporaryDirectory(prefix="edged-demo-") as tmp:  # short: socket paths < 108 bytes
        till = DemoTill(Path(tmp))
        # Stopped like any program (Ctrl+C, a closed terminal, kill): unwind, so the daemon is
        # stopped and the temporary directory removed rather than left behind.
        previous = {sig: signal.signal(sig, till.on_stop) for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)}
        try:
            return _run(till, log_path)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def _run(till: DemoTill, log_path: Path) -> int:
    (till.root / "tmp").mkdir()
    (till.root / "edged.toml").write_text(DEMO_CONFIG)
    notify = NotifyListener(till.root / "notify.sock")
    notify.read_always()
    step(1, "start the daemon on the simulated till")
    print(f"  in a temporary directory, removed at the end: {till.root}")
    print(f"$ cd {till.root}")
    print("$ edged run --simulate --config edged.toml --state-dir state --socket edged.sock")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = dict(till.env, NOTIFY_SOCKET=notify.path, WATCHDOG_USEC="20000000")  # as edged.service: 20 s
    with open(log_path, "w") as log:
        proc = till.spawn([sys.executable, "-m", "edged", "run", "--simulate", "--config", "edged.toml",
                           "--state-dir", "state", "--socket", "edged.sock"],
                          env=env, stdout=log, stderr=subprocess.STDOUT)
    ready, code = False, None
    try:
        till.check_stop()
        ready = notify.wait_for("READY=1", 30) is not None
        if not ready:
            print("edged did not report READY=1 within 30 s")
            return 1
        print(f"systemd would hear: READY=1, then {notify.wait_for('STATUS=', 5)}")
        print(f"watchdog ping (sent only while every part is healthy): {notify.wait_for('WATCHDOG=1', 5)}")
        asyncio.run(_client_steps(till))
        identity_steps(till)
        asyncio.run(trust_steps(till))
        online_steps(till)
        step(17, "a technician checks the journal files, then the whole till (`edged doctor`: what only "
                 "the Debian package brings, its user and udev rules, does not apply to a simulated till)")
        till.cli("journal", "verify", "--state-dir", "state")
        till.cli("doctor", "--config", "edged.toml", "--socket", "edged.sock", "--state-dir", "state")
    finally:
        step(18, "stop it the way systemd does (SIGTERM)")
        with till.held():  # a second Ctrl+C must not leave it running
            code = _stop(proc)
        print(f"systemd would hear: {notify.wait_for('STOPPING=1', 2)}; exit code {code}")
        notify.sock.close()
        _log_summary(log_path, tail=not ready or code != 0)
    return 0 if code == 0 else 1


def _stop(proc: subprocess.Popen) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


async def _client_steps(till: DemoTill) -> None:
    async with await Client.connect(till.socket, client="edged-demo") as client:
        await device_steps(client, till)
        await journal_steps(client, till)
    await sync_steps(till)
    async with await Client.connect(till.socket, client="demo-manager") as manager:
        await day_steps(manager, till)


def _log_summary(log_path: Path, tail: bool) -> None:
    """Where the log is, and its last warnings; all of its end when the daemon failed."""
    lines = log_path.read_text(encoding="utf-8", errors="replace").splitlines()
    print(f"\nthe daemon's log: {log_path} ({plural(len(lines), 'line')})")
    if tail:
        print("\n".join(f"  {line}" for line in lines[-TAIL_ON_FAILURE:]))
        return
    warnings = [m for m in map(_WARNING.match, lines) if m]
    if not warnings:
        print("  no warnings or errors in it")
        return
    errors = sum(m[2] != "WARNING" for m in warnings)
    print(f"  {plural(len(warnings) - errors, 'warning')}, {plural(errors, 'error')} in it"
          + (f"; the last {WARNINGS_SHOWN}:" if len(warnings) > WARNINGS_SHOWN else ":"))
    for m in warnings[-WARNINGS_SHOWN:]:
        print(f"  {m[1]} {m[2]:<7} {m[3]}")
