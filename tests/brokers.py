"""A real Mosquitto for the tests: started on a free loopback port with a config of the test's own,
stopped by its PID (terminate, then kill), whatever the test did. Nothing of it outlives the test."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from edged.fleet.localbroker import MOSQUITTO, LocalBroker, free_port  # noqa: F401  (free_port: for the tests)
from edged.fleet.localpki import Pki


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
