"""Head office's config file, /etc/edged/headoffice.toml: where `edged headoffice ingest` archives
and which broker it takes the tills' batches from. Read as strictly as the till's edged.toml: an
unknown or bad key stops the ingest with one line naming it. Options on the command line win.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import _help, load_as
from ..day.backend import is_url

DEFAULT_PATH = Path("/etc/edged/headoffice.toml")


@dataclass
class IngestSettings:
    archive: str = field(default="", metadata=_help(
        "the archive: a directory (SQLite) or postgresql://USER@HOST/DBNAME (docs/FLEET.md)"))
    broker: str = field(default="", metadata=_help("the tills' MQTT 5 broker, mqtts://HOST:PORT (or mqtt://)"))
    ca: str = field(default="", metadata=_help("the CA certificate that signed the broker's (PEM file)"))
    cert: str = field(default="", metadata=_help("the ingest's client certificate (PEM file; CN ingest)"))
    key: str = field(default="", metadata=_help("its private key (PEM file)"))
    group: str = field(default="ingest", metadata=_help(
        "shared subscription group: ingests of one group share the batches"))

    def problems(self) -> list[tuple[str, str]]:
        if self.broker and not self.broker.startswith(("mqtt://", "mqtts://")):
            return [("broker", f"{self.broker!r}: write mqtts://HOST:PORT (or mqtt://HOST:PORT without TLS)")]
        if bool(self.cert) != bool(self.key):
            return [("cert" if not self.cert else "key", "give both the client certificate and its key")]
        if self.archive and not is_url(self.archive) and not self.archive.startswith("/"):
            return [("archive", f"{self.archive!r}: an absolute directory, or postgresql://...")]
        return []


@dataclass
class HeadOfficeConfig:
    ingest: IngestSettings = field(default_factory=IngestSettings)


def load(path: str | None) -> HeadOfficeConfig:
    """The file given, or the default one when it exists (else every setting from the options)."""
    if path is None:
        return load_as(HeadOfficeConfig, DEFAULT_PATH) if DEFAULT_PATH.exists() else HeadOfficeConfig()
    return load_as(HeadOfficeConfig, Path(path))
