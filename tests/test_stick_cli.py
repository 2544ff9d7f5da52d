"""Head office's commands as a stranger runs them (the real CLI, as a subprocess with a timeout):
enroll/keys/retire, verify with and without keys, and a FIFO, a device node or a symbolic link at every
path an export names: never a hang, never a byte read from outside the export."""
from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

import sticks

D2 = sticks.DAYS[1]


def _cli(*args, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def g():
    tmp, short = Path(tempfile.mkdtemp(prefix="edged-cli-")), Path(tempfile.mkdtemp(prefix="e-", dir="/tmp"))
    yield sticks.genuine(tmp / "genuine", short)
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(short, ignore_errors=True)


def test_enroll_keys_retire_and_import(g, tmp_path):
    arc = tmp_path / "archive"
    key_a, key_b = g.keys["till-a"], g.keys["till-b"]
    out = _cli("import", g.stick("till-a", D2), "--archive", arc)
    assert out.returncode == 1 and "no till keys are enrolled" in out.stdout
    assert "which is not enrolled for till-a" in out.stdout and "1 export refused" in out.stdout
    out = _cli("archive", "enroll", arc, "till-a", key_a)
    assert out.returncode == 0 and out.stdout.startswith("enrolled: till-a key sha256:")
    assert _cli("archive", "enroll", arc, "till-a", key_a).stdout.startswith("already enrolled: till-a")
    out = _cli("archive", "enroll", arc, "till-b", key_a)
    assert out.returncode == 1 and "already enrolled for till till-a: one key, one till" in out.stderr
    assert _cli("archive", "enroll", arc, "till-b", "ed25519:12").returncode == 1
    assert _cli("archive", "enroll", arc, "till-b", key_b, "--epoch", "1").returncode == 0
    out = _cli("import", g.root, "--archive", arc)
    assert out.returncode == 0, out.stdout
    assert "imported till-a 2026-03-02: 6 records added, 0 already archived, signed by sha256:" in out.stdout
    keys = _cli("archive", "keys", arc).stdout.splitlines()
    assert len(keys) == 2 and keys[0].startswith("till-a  epoch 1  sha256:") and keys[0].endswith("in use")
    status = _cli("archive", "status", arc).stdout
    assert "till-a: 4 days (2026-03-01 .. 2026-03-04), 25 records, seq 1..25, gaps: none" in status
    assert "(epoch 1): signed 4 days" in status
    fp = keys[1].split()[3]
    out = _cli("archive", "retire", arc, fp)
    assert out.returncode == 0 and "retired: till-b key" in out.stdout
    assert "retired" in _cli("archive", "keys", arc).stdout.splitlines()[1]
    out = _cli("import", g.stick("till-b", sticks.DAYS[0]), "--archive", arc)
    assert out.returncode == 1 and "retired on" in out.stdout
    assert _cli("archive", "retire", arc, "sha256:" + "0" * 32).returncode == 1


def test_verify_with_and_without_keys(g, tmp_path):
    out = _cli("verify", g.root)
    assert out.returncode == 0, out.stdout
    assert "authenticity NOT checked" in out.stdout and "signed by: till-a sha256:" in out.stdout
    ok = _cli("verify", "--key", f"till-a={g.keys['till-a']}", "--key", f"till-b={g.keys['till-b']}", g.root)
    assert ok.returncode == 0 and "NOT checked" not in ok.stdout and ok.stdout.count("ok   ") == 5
    wrong = _cli("verify", "--key", f"till-a={g.keys['till-b']}", g.stick("till-a", D2))
    assert wrong.returncode == 1 and "belongs to till till-a, not till-a" not in wrong.stdout
    assert "belongs to till till-a" in wrong.stdout or "not among" in wrong.stdout or "not enrolled" in wrong.stdout
    bad = _cli("verify", "--key", "till-a=nonsense", g.root)
    assert bad.returncode == 2 and "a public key is written ed25519:" in bad.stderr
    arc = tmp_path / "archive"
    assert _cli("archive", "enroll", arc, "till-a", g.keys["till-a"]).returncode == 0
    out = _cli("verify", "--archive", arc, g.root)
    assert out.returncode == 1 and out.stdout.count("ok   till-a") == 4 and "NOT checked" not in out.stdout
    assert "FAIL till-b 2026-03-01" in out.stdout and "not enrolled for till-b" in out.stdout
    stick = tmp_path / "stick"
    e = sticks.copy_export(g.export("till-a", D2), stick)
    sticks.rechain(e, lambda recs: recs, sign_day=False)  # as a day closed before the till signed
    m = sticks.manifest(e)
    del m["key"], m["signature"]
    m["format"] = "edged-export/1"
    sticks.write_manifest(e, m)
    out = _cli("verify", stick)
    assert out.returncode == 1 and "--allow-unsigned" in out.stdout and len(out.stdout.splitlines()) == 1
    out = _cli("verify", "--allow-unsigned", stick)
    assert out.returncode == 0 and "UNSIGNED (--allow-unsigned)" in out.stdout


def _fifo_serving(path: Path, first: bytes, second: bytes) -> threading.Thread:
    """A FIFO that serves the genuine bytes to the first reader and altered ones to the next: what
    got altered sales archived before."""
    os.mkfifo(path)

    def serve():
        for data in (first, second):
            try:
                fd = os.open(path, os.O_WRONLY)  # blocks until a reader opens it
            except OSError:
                return
            try:
                os.write(fd, data)
            except OSError:
                pass
            finally:
                os.close(fd)
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


@pytest.mark.parametrize("what", ["fifo", "serving-fifo", "device", "symlink-outside", "symlink-inside"])
@pytest.mark.parametrize("name", ["manifest.json", "journal.seg", "<export dir>"])
def test_no_hang_and_nothing_read_outside(g, tmp_path, what, name):
    stick = tmp_path / "stick"
    e = sticks.copy_export(g.export("till-a", D2), stick)
    genuine_d4 = sticks.copy_export(g.export("till-a", sticks.DAYS[3]), stick)
    secret = tmp_path / "outside"
    secret.mkdir()
    shutil.copy(e / "journal.seg", secret / "journal.seg")
    shutil.copy(e / "manifest.json", secret / "manifest.json")
    target = e if name == "<export dir>" else e / name
    data = target.read_bytes() if target.is_file() else b""
    if target.is_dir():
        shutil.rmtree(target)
    else:
        target.unlink()
    if what == "fifo":
        os.mkfifo(target)
    elif what == "serving-fifo":
        _fifo_serving(target, data, data.replace(b"10,00", b"00,01"))
    elif what == "device":
        os.mknod(target, 0o600 | (stat.S_IFDIR if False else stat.S_IFCHR), os.makedev(1, 5))
    elif what == "symlink-outside":
        os.symlink(secret / (name if name != "<export dir>" else ""), target)
    else:
        os.symlink(genuine_d4 / (name if name != "<export dir>" else ""), target)
    before = os.stat(secret / "journal.seg").st_atime_ns, os.stat(secret / "manifest.json").st_atime_ns
    arc = tmp_path / "archive"
    assert _cli("archive", "enroll", arc, "till-a", g.keys["till-a"]).returncode == 0
    for args in (("verify", stick), ("import", stick, "--archive", arc)):
        out = _cli(*args, timeout=30)
        assert out.returncode == 1, (args, out.stdout)
        refused = [line for line in out.stdout.splitlines() if line.startswith(("FAIL", "REFUSED"))]
        assert len(refused) == 1 and "Traceback" not in out.stdout + out.stderr, out.stdout + out.stderr
        assert "20260302" in refused[0]
        assert ("ok   till-a 2026-03-04" in out.stdout or "imported till-a 2026-03-04: 8 records added" in out.stdout
                or "8 already archived" in out.stdout), out.stdout
    if what == "serving-fifo":  # the FIFO was never opened: its writer is still waiting; let it go
        with open(os.open(target, os.O_RDONLY | os.O_NONBLOCK), "rb", closefd=True):
            pass
    assert (os.stat(secret / "journal.seg").st_atime_ns, os.stat(secret / "manifest.json").st_atime_ns) == before


def test_a_damaged_keys_table_is_one_line(tmp_path):
    """A keys row edited into nonsense (the review): import, verify --archive and keys stop on one line."""
    arc = tmp_path / "archive"
    key = sticks.new_key()
    assert _cli("archive", "enroll", arc, "till-a", key.public_text).returncode == 0
    with sqlite3.connect(arc / "archive.sqlite") as db:
        db.execute("UPDATE keys SET public_key='ed25519:zz'")
    for args in (("archive", "keys", arc), ("import", "--archive", arc, tmp_path), ("verify", "--archive", arc, tmp_path)):
        out = _cli(*args)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr)
        assert out.stderr.count("\n") == 1 and "keys table is damaged" in out.stderr, out.stderr
