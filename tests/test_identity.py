"""The till's identity: its Ed25519 key made at first start, kept to itself, signing every closed
day and export; a lost key replaced by the next epoch, journaled; a bad key stops the start with
one line. The real daemon (`edged run --simulate`) and the real CLI, as subprocesses."""
from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edged import identity
from edged.cli import main
from edged.client import BlockingClient
from edged.day.signing import day_problem, manifest_problem
from edged.journal.disk import RealDisk
from edged.journal.store import Store
from other_user import AsUser, as_user

TOML = 'till_id = "till-9"\n'
DAY1, DAY2 = "2026-11-19", "2026-11-20"


def _edged(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=60, **kw)


class Till:
    """`edged run --simulate` in d (state in d/st, log in d/log-N.txt), and its socket."""

    def __init__(self, d: Path) -> None:
        self.d, self.state, self.sock = d, d / "st", d / "s.sock"
        (d / "edged.toml").write_text(TOML)
        self.proc: subprocess.Popen | None = None
        self.logs: list[Path] = []

    def run(self) -> subprocess.CompletedProcess:
        """A start expected to fail: its exit and output."""
        return _edged("run", "--simulate", "--config", str(self.d / "edged.toml"), "--state-dir", str(self.state),
                      "--socket", str(self.sock))

    def start(self) -> None:
        log = self.d / f"log-{len(self.logs)}.txt"
        self.logs.append(log)
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "edged", "run", "--simulate", "--config",
                                          str(self.d / "edged.toml"), "--state-dir", str(self.state),
                                          "--socket", str(self.sock)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60  # a bound against a hang, not a speed figure
        while True:
            assert self.proc.poll() is None, log.read_text()
            try:
                with BlockingClient.connect(str(self.sock), client="test", timeout=10) as c:
                    c.request("status")
                return
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)

    def request(self, op: str, **params):
        with BlockingClient.connect(str(self.sock), client="test-pos", timeout=30) as c:
            return c.request(op, **params)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                assert self.proc.wait(30) == 0, self.logs[-1].read_text()
            finally:
                if self.proc.poll() is None:
                    self.proc.kill()
                    self.proc.wait()
            self.proc = None

    def sales(self, day: str, n: int) -> None:
        self.request("append", records=[{"kind": "sale", "body": {"day": day, "i": i, "total": 999},
                                         "tx_id": f"{day}-{i}"} for i in range(n)])

    def records(self, kind: str) -> list:
        store = Store(RealDisk(str(self.state / "journal")))
        store.open()
        try:
            return [r for r in store.records(store.first_seq) if r.kind == kind]
        finally:
            store.close()


@pytest.fixture
def till(short_dir):
    t = Till(short_dir)
    yield t
    t.stop()


def _key(state: Path) -> Ed25519PrivateKey:
    return serialization.load_pem_private_key((state / "identity" / "ed25519.key").read_bytes(), password=None)


def _public(state: Path) -> bytes:
    return identity.parse_public(json.loads((state / "identity" / "identity.json").read_text())["public_key"])


def _secrets(key: Ed25519PrivateKey) -> list[bytes]:
    """Every way the private key could leak into a file: its PEM, its 32 raw bytes and their hex and base64."""
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    der = key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    body = b"".join(pem.splitlines()[1:-1])
    return [pem, body, raw, raw.hex().encode(), base64.b64encode(raw).rstrip(b"="), der]


def _files(*roots: Path):
    for root in roots:
        for d, _dirs, names in os.walk(root):
            for name in names:
                yield Path(d) / name


def test_key_made_at_first_start_signs_days_and_exports_and_never_leaves(till, tmp_path):
    till.start()
    folder = till.state / "identity"
    st_dir, st_key = os.stat(folder), os.stat(folder / "ed25519.key")
    assert stat.S_IMODE(st_dir.st_mode) == 0o700 and stat.S_IMODE(st_key.st_mode) == 0o600
    assert st_dir.st_uid == st_key.st_uid == os.geteuid()
    key, public = _key(till.state), _public(till.state)
    assert key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw) == public
    status = till.request("status")
    assert status["identity"] == {"fingerprint": identity.fingerprint(public), "epoch": 1}
    shown = _edged("status", "--socket", str(till.sock))
    assert f"identity  key {identity.fingerprint(public)}, epoch 1" in shown.stdout

    till.sales(DAY1, 3)
    till.request("day_close", business_day=DAY1)
    stick = tmp_path / "stick"
    stick.mkdir()
    exported = _edged("export", DAY1, "--to", str(stick), "--socket", str(till.sock))
    assert exported.returncode == 0, exported.stderr
    till.stop()
    till.start()  # a restart keeps the key
    assert _key(till.state).private_bytes_raw() == key.private_bytes_raw()
    till.sales(DAY2, 2)
    till.request("day_close", business_day=DAY2)
    status_text = json.dumps(till.request("status"), default=repr).encode()
    days = till.request("days")["days"]
    as_json = _edged("sync", "log", "--json", "--socket", str(till.sock))  # the days as JSON: the signature in hex
    assert as_json.returncode == 0 and len(json.loads(as_json.stdout)["days"]) == 2, as_json.stderr
    till.stop()

    closes = till.records("day.close")
    assert [r.body["business_day"] for r in closes] == [DAY1, DAY2]
    other = identity.parse_public(identity.public_text(Ed25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)))
    for rec, day in zip(closes, days):
        assert rec.body["signature"]["epoch"] == 1
        assert day["signature"] == {**rec.body["signature"], "ed25519": rec.body["signature"]["ed25519"].hex()}
        assert day_problem(rec.body, public) is None
        assert "signed by key" in day_problem(rec.body, other)
        forged = {**rec.body, "counts": {"sale": 1}}  # a changed total, same signature
        assert "does not match" in day_problem(forged, public)
    [manifest_path] = stick.rglob("manifest.json")
    manifest = json.loads(manifest_path.read_text())
    assert manifest["format"] == "edged-export/3" and manifest["key"]["fingerprint"] == identity.fingerprint(public)
    assert manifest_problem(manifest, public) is None
    assert manifest_problem({**manifest, "till_id": "till-1"}, public) is not None

    secrets = _secrets(key)
    places = list(_files(till.state / "journal", stick, *till.logs))
    assert len(places) > 5
    for path in places:
        data = path.read_bytes()
        leaked = [i for i, s in enumerate(secrets) if s in data]
        assert not leaked, f"{path} holds the private key (form {leaked})"
    assert not [s for s in secrets if s in status_text]
    assert not list((till.state / "journal").rglob("*.key"))


@pytest.fixture(scope="module")
def signed_state(tmp_path_factory):
    """A state directory whose till signed and closed DAY1 (epoch 1)."""
    d = Path(tempfile.mkdtemp(prefix="edged-t-", dir="/tmp"))
    t = Till(d)
    try:
        t.start()
        t.sales(DAY1, 4)
        t.request("day_close", business_day=DAY1)
        t.stop()
        keep = tmp_path_factory.mktemp("signed") / "st"
        shutil.copytree(t.state, keep)
    finally:
        t.stop()
        shutil.rmtree(d, ignore_errors=True)
    return keep


def test_lost_key_gives_the_next_epoch_journaled_and_the_next_day_signed_by_it(signed_state, till):
    shutil.copytree(signed_state, till.state)
    old = _public(till.state)
    shutil.rmtree(till.state / "identity")
    till.start()
    new = _public(till.state)
    assert new != old
    assert till.request("status")["identity"] == {"fingerprint": identity.fingerprint(new), "epoch": 2}
    till.sales(DAY2, 1)
    till.request("day_close", business_day=DAY2)
    till.stop()
    log = till.logs[-1].read_text()
    assert "CRITICAL" in log and f"the key of epoch 1 ({identity.fingerprint(old)})" in log
    [rec] = till.records("identity.key")
    assert rec.body["epoch"] == 2 and rec.body["previous"] == identity.fingerprint(old)
    assert rec.body["public_key"] == identity.public_text(new) and rec.body["till_id"] == "till-9"
    day1, day2 = till.records("day.close")
    assert day_problem(day1.body, old) is None and day_problem(day2.body, new) is None
    assert day2.body["signature"]["epoch"] == 2 and day_problem(day2.body, old) is not None
    till.start()  # and once only: the next start journals nothing more
    till.stop()
    assert len(till.records("identity.key")) == 1


def test_a_replacement_key_whose_record_a_crash_lost_is_journaled_at_the_next_start(signed_state, till):
    shutil.copytree(signed_state, till.state)
    old = _public(till.state)
    shutil.rmtree(till.state / "identity")
    made = identity.create(str(till.state), 2)  # as the last start did, before it died
    till.start()
    till.stop()
    [rec] = till.records("identity.key")
    assert rec.body["fingerprint"] == made.fingerprint and rec.body["previous"] == identity.fingerprint(old)
    assert "earlier start" in rec.body["reason"]


def _one_line_refusal(till: Till, *expected: str) -> str:
    run = till.run()
    assert run.returncode == 1, run.stderr
    assert "Traceback" not in run.stderr
    last = run.stderr.splitlines()[-1]
    assert last.startswith("edged: "), last
    for text in expected:
        assert text in last, last
    assert not till.sock.exists()  # never served
    return last


def test_a_corrupt_key_stops_the_start_with_one_line(signed_state, till):
    shutil.copytree(signed_state, till.state)
    key = till.state / "identity" / "ed25519.key"
    key.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    key.chmod(0o600)
    _one_line_refusal(till, str(key), "not a readable PEM private key", "edged archive enroll")
    assert key.read_bytes().startswith(b"-----BEGIN")  # never replaced on a guess


def test_an_identity_json_naming_another_key_stops_the_start(signed_state, till):
    shutil.copytree(signed_state, till.state)
    info_path = till.state / "identity" / "identity.json"
    info = json.loads(info_path.read_text())
    info["public_key"] = identity.public_text(bytes(32))
    info_path.write_text(json.dumps(info))
    _one_line_refusal(till, str(info_path), "names another key")


def test_a_key_another_user_owns_stops_the_start(signed_state, till):
    shutil.copytree(signed_state, till.state)
    key = till.state / "identity" / "ed25519.key"
    os.chown(key, 65534, 65534)
    _one_line_refusal(till, str(key), "owned by", "chown")


@pytest.mark.parametrize("name", ["ed25519.key", "identity.json"])
@pytest.mark.parametrize("what", ["fifo", "symlink", "device", "directory"])
def test_no_key_file_that_is_not_a_regular_file_is_read(signed_state, till, name, what):
    shutil.copytree(signed_state, till.state)
    path = till.state / "identity" / name
    path.unlink()
    if what == "fifo":
        os.mkfifo(path, 0o600)  # opened without O_NONBLOCK, the start would hang here
    elif what == "symlink":
        path.symlink_to("/dev/zero")
    elif what == "device":
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero
    else:
        path.mkdir(0o700)
    _one_line_refusal(till, str(path))


def test_loose_modes_are_tightened_and_logged(signed_state, till):
    shutil.copytree(signed_state, till.state)
    folder = till.state / "identity"
    folder.chmod(0o755)
    (folder / "ed25519.key").chmod(0o644)
    before = _public(till.state)
    till.start()
    till.stop()
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / "ed25519.key").st_mode) == 0o600
    assert _public(till.state) == before  # the same key: whether to replace it is the technician's call
    log = till.logs[-1].read_text()
    assert f"{folder / 'ed25519.key'} was mode 0644, now 0600" in log and f"{folder} was mode 0755, now 0700" in log


def test_edged_identity_prints_the_key_and_the_enroll_command(signed_state, short_dir):
    (short_dir / "edged.toml").write_text(TOML)
    state = short_dir / "st"
    conf = ["--config", str(short_dir / "edged.toml"), "--state-dir", str(state)]
    none = _edged("identity", *conf)
    assert none.returncode == 1 and "no key yet" in none.stderr and "--init" in none.stderr
    shutil.copytree(signed_state, state)
    public = identity.public_text(_public(state))
    text = _edged("identity", *conf)
    assert text.returncode == 0, text.stderr
    assert "till_id      till-9" in text.stdout and f"public key   {public}" in text.stdout
    assert f"edged archive enroll ARCHIVE_DIR till-9 {public}" in text.stdout
    out = json.loads(_edged("identity", *conf, "--json").stdout)
    assert out["till_id"] == "till-9" and out["epoch"] == 1 and out["public_key"] == public
    assert out["fingerprint"] == identity.fingerprint(_public(state))
    assert out["enroll"] == f"edged archive enroll ARCHIVE_DIR till-9 {public}"
    # A till with a journal makes its key in the daemon (only it knows which epoch comes next).
    shutil.rmtree(state / "identity")
    refused = _edged("identity", *conf, "--init")
    assert refused.returncode == 1 and "holds a journal" in refused.stderr
    assert not (state / "identity" / "ed25519.key").exists()


def test_identity_init_as_root_makes_a_key_for_the_owner(short_dir):
    short_dir.chmod(0o755)  # others may reach the state directory, as /var/lib
    (short_dir / "edged.toml").write_text(TOML)
    state = short_dir / "lib" / "edged"
    conf = ["--config", str(short_dir / "edged.toml"), "--state-dir", str(state)]
    made = _edged("identity", *conf, "--init", "--owner", "65534")
    assert made.returncode == 0, made.stderr
    assert "made key sha256:" in made.stderr and "epoch        1 " in made.stdout
    for path, mode in ((state, 0o750), (state / "identity", 0o700), (state / "identity" / "ed25519.key", 0o600)):
        st = os.stat(path)
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (65534, mode), path
    again = _edged("identity", *conf, "--init", "--owner", "65534")
    assert again.returncode == 0 and "nothing changed" in again.stderr
    # Its owner may read the public half, and its daemon starts with that key; others are told to use sudo.
    code, out, _err = as_user(65534, lambda: _main_captured("identity", *conf, "--json"))
    assert code == 0 and json.loads(out)["epoch"] == 1
    stranger = AsUser(4123, lambda: _main_captured("identity", *conf), gid=4123, groups=())
    try:
        code, _out, err = stranger.result()
    finally:
        stranger.release()
    assert code == 1 and "permission denied" in err and "sudo edged identity" in err


def _main_captured(*argv: str) -> tuple[int, str, str]:
    """The CLI's main() in this (forked, setuid) process: exit code, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()
