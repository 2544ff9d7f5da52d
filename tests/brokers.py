"""A real Mosquitto for the tests: started on a free loopback port with a config of the test's own,
stopped by its PID (terminate, then kill), whatever the test did. Nothing of it outlives the test."""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

MOSQUITTO = "/usr/sbin/mosquitto"


def need_mosquitto() -> None:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (`make test` installs it as root: apt-get install mosquitto)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The broker's per-till ACL (docs/FLEET.md, "Who may publish what"): a till's certificate CN is its
# MQTT username; it may publish only under its own id and read only its own acks.
FLEET_ACL = """\
pattern write edged/v1/till/%u/up
pattern write edged/v1/till/%u/status
pattern read edged/v1/till/%u/ack
user ingest
topic read edged/v1/till/+/up
topic read edged/v1/till/+/status
topic write edged/v1/till/+/ack
"""


class Pki:
    """A throwaway CA for one test: the broker's certificate (for 127.0.0.1) and client certificates
    whose CN is the MQTT username (`use_identity_as_username`)."""

    def __init__(self, workdir: Path) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edged test CA")])
        self.name = name
        self.cert = (self._builder(name, self.key.public_key())
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))
        self.ca = self._write("ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def _builder(self, subject: x509.Name, public) -> x509.CertificateBuilder:
        now = datetime.datetime.now(datetime.UTC)
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public)
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                .not_valid_after(now + datetime.timedelta(days=1)))

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        path.chmod(0o600)
        return str(path)

    def issue(self, cn: str, server: bool = False) -> tuple[str, str]:
        """(certificate, key) PEM files for CN; server: valid for 127.0.0.1."""
        key = ec.generate_private_key(ec.SECP256R1())
        b = self._builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]), key.public_key())
        if server:
            b = b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                critical=False)
        cert = b.sign(self.key, hashes.SHA256())
        return (self._write(f"{cn}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{cn}.key", key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption())))


class Mosquitto:
    def __init__(self, workdir: Path, acl: str | None = None, passwords: dict[str, str] | None = None,
                 pki: Pki | None = None) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self.proc: subprocess.Popen | None = None
        lines = ["persistence false", "log_dest stdout", "log_type error", "log_type warning", "log_type notice"]
        if os.geteuid() == 0:
            lines.append("user root")  # else it drops to `mosquitto`, who cannot read the test's files
        self.tls = pki is not None
        if pki is not None:  # mutual TLS: the client certificate's CN is the username the ACL sees
            cert, key = pki.issue("broker", server=True)
            lines += [f"cafile {pki.ca}", f"certfile {cert}", f"keyfile {key}", "require_certificate true",
                      "use_identity_as_username true", "use_username_as_clientid true", "allow_anonymous false"]
        elif passwords is not None:
            pw = self.dir / "passwords"
            pw.write_text("")
            for user, password in passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            lines += [f"password_file {pw}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (self.dir / "acl").write_text(acl)
            lines.append(f"acl_file {self.dir / 'acl'}")
        self.settings = "\n".join(lines) + "\n"

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def start(self, port: int | None = None) -> Mosquitto:
        """Start (again: on the same port when it ran before)."""
        self.port = port or self.port or free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\n" + self.settings)
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=open(self.dir / "log", "ab"),
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mosquitto did not start: {(self.dir / 'log').read_text()[-2000:]}") from None
                time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def have_tools() -> bool:
    return shutil.which("mosquitto_passwd") is not None and os.path.exists(MOSQUITTO)
