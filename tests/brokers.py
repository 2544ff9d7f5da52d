"""A real Mosquitto for the tests: started on a free loopback port with a config of the test's own,
stopped by its PID (terminate, then kill), whatever the test did. Nothing of it outlives the test."""
from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edged.fleet.localbroker import MOSQUITTO, LocalBroker, free_port  # noqa: F401  (free_port: for the tests)


def need_mosquitto() -> None:
    if not os.path.exists(MOSQUITTO):
        pytest.skip("mosquitto is not installed (`make test` installs it as root: apt-get install mosquitto)")


# The broker's per-till ACL (docs/FLEET.md, "Who may publish what"): a till's certificate CN is its
# MQTT username; it may publish only under its own id and read only its own acks and records.
FLEET_ACL = """\
pattern write edged/v1/till/%u/up
pattern write edged/v1/till/%u/status
pattern write edged/v1/till/%u/hello
pattern write edged/v1/till/%u/down-ack
pattern read edged/v1/till/%u/ack
pattern read edged/v1/till/%u/down
pattern read edged/v1/broadcast/down
user ingest
topic read edged/v1/till/+/up
topic read edged/v1/till/+/status
topic read edged/v1/till/+/hello
topic read edged/v1/till/+/down-ack
topic write edged/v1/till/+/ack
topic write edged/v1/till/+/down
topic write edged/v1/broadcast/down
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


class Mosquitto(LocalBroker):
    """edged's loopback broker with the tests' settings: anonymous, passwords, or mutual TLS with
    the per-till ACL."""

    def __init__(self, workdir: Path, acl: str | None = None, passwords: dict[str, str] | None = None,
                 pki: Pki | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        lines: list[str] = []
        if pki is not None:  # mutual TLS: the client certificate's CN is the username the ACL sees
            cert, key = pki.issue("broker", server=True)
            lines += [f"cafile {pki.ca}", f"certfile {cert}", f"keyfile {key}", "require_certificate true",
                      "use_identity_as_username true", "use_username_as_clientid true", "allow_anonymous false"]
        elif passwords is not None:
            pw = workdir / "passwords"
            pw.write_text("")
            for user, password in passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True, capture_output=True)
            lines += [f"password_file {pw}", "allow_anonymous false"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (workdir / "acl").write_text(acl)
            lines.append(f"acl_file {workdir / 'acl'}")
        super().__init__(workdir, lines, tls=pki is not None)


def have_tools() -> bool:
    return shutil.which("mosquitto_passwd") is not None and os.path.exists(MOSQUITTO)
