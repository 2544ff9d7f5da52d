"""Printable names: what a hostile client names itself, its consumer, its kinds or its print jobs
reaches the technician's terminal (edged status, journal consumers, sync log, jobs, tail) and
edged's log escaped, never as control characters."""
from __future__ import annotations

import re
import subprocess
import sys

import pytest

from edged.client import BlockingClient
from edged.printable import printable, printable_lines
from other_user import ATTACKER_UID, KEEP, AsUser, Edged, needs_root

# Retitles the terminal, clears it, then fakes a line; a bidi override; a C1 CSI.
EVIL = "evil\x1b]0;pwned\x07\x1b[2J\nOK all fine\u202e\x9b31m"
RAW = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@pytest.mark.parametrize("text,shown", [
    ("till-1 pos", "till-1 pos"),
    ("Café ß €", "Café ß €"),
    ("a\x1b[2Jb", "a\\x1b[2Jb"),
    ("line\nfake", "line\\nfake"),
    ("\u202egnp.exe", "\\u202egnp.exe"),
    ("\x9b31m\x7f\t", "\\x9b31m\\x7f\\t"),
    (42, "42"),
])
def test_printable_escapes_what_a_terminal_would_act_on(text, shown):
    assert printable(text) == shown


def test_printable_lines_keeps_the_lines_and_escapes_the_rest():
    assert printable_lines("a\x1b\nb\r") == "a\\x1b\nb\\r"


def _misbehave(sock: str) -> dict:
    c = BlockingClient.connect(sock, EVIL, timeout=10)
    KEEP.append(c)  # stays connected: `edged status` lists it
    c.request("append", records=[{"kind": EVIL, "body": EVIL, "tx_id": EVIL}])
    c.request("subscribe", consumer=EVIL, **{"from": 1}, kinds=[EVIL])
    c.request("ack", consumer=EVIL, seq=1)
    c.request("print", job_id=EVIL, raw=b"hello\n")
    return {"ok": True}


def _cli(sock: str, *args: str) -> str:
    run = subprocess.run([sys.executable, "-m", "edged", *args, "--socket", sock], capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return run.stdout


@needs_root
def test_names_from_a_hostile_client_are_shown_and_logged_escaped(short_dir):
    with Edged(short_dir) as edged:
        evil = AsUser(ATTACKER_UID, lambda: _misbehave(edged.sock), hold=True)
        try:
            assert evil.result() == {"ok": True}
            shown = {
                "status": _cli(edged.sock, "status"),
                "consumers": _cli(edged.sock, "journal", "consumers"),
                "sync log": _cli(edged.sock, "sync", "log"),
                "jobs": _cli(edged.sock, "jobs"),
            }
        finally:
            evil.release()
        tail = subprocess.run([sys.executable, "-m", "edged", "journal", "dump", "--state-dir",
                               str(short_dir / "state")], capture_output=True, text=True, timeout=60)
    shown["tail"] = tail.stdout
    escaped = printable(EVIL)
    for what, out in shown.items():
        assert not RAW.search(out), (what, out)
        assert escaped in out, (what, out)
        assert not any(line.startswith("OK all fine") for line in out.splitlines())  # no faked line
    log = edged.log.read_text()
    assert "evil\\x1b]0;pwned\\x07" in log and not RAW.search(log)
