"""A PostgreSQL of its own for the bench and the tests: a new cluster (initdb) listening on a unix
socket only, no TCP at all, stopped by pg_ctl (and by its PID if that fails) and removed with its
files. Never a service: nothing of it outlives the program that started it.

PostgreSQL refuses to run as root; as root (CI) the cluster runs as Debian's user postgres, in a
directory of its own under /tmp (the caller's temporary directory is root's alone), removed at
stop.
"""
from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import quote

BINARIES = "/usr/lib/postgresql/*/bin"  # Debian's postgresql-NN packages


def binaries() -> Path | None:
    """The newest PostgreSQL server installed (its bin directory), or None."""
    found = sorted(glob.glob(BINARIES), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    return Path(found[-1]) if found and (Path(found[-1]) / "initdb").exists() else None


class LocalPostgres:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.bin = binaries()
        self.root: Path | None = None
        self.user = "edged"

    @property
    def socket_dir(self) -> Path:
        assert self.root is not None
        return self.root / "run"

    def url(self, database: str = "edged") -> str:
        return f"postgresql:///{quote(database)}?host={quote(str(self.socket_dir))}&user={self.user}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run([*as_postgres, *argv], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=check, timeout=120)

    def start(self) -> LocalPostgres:
        if self.bin is None:
            raise RuntimeError(f"no PostgreSQL server here ({BINARIES}: the Debian package postgresql)")
        if os.geteuid() == 0:
            self.root = Path(tempfile.mkdtemp(prefix="edged-pg.", dir="/tmp"))
            shutil.chown(self.root, "postgres", "postgres")
        else:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self.root = Path(tempfile.mkdtemp(prefix="pg.", dir=self.workdir))
        data = self.root / "data"
        self._run("mkdir", "-m", "0700", str(self.socket_dir))
        try:
            # --no-sync: initdb's own files only; the server itself keeps fsync on (the bench measures it).
            self._run(str(self.bin / "initdb"), "-D", str(data), "-A", "trust", "-U", self.user, "-E", "UTF8",
                      "--locale=C", "--no-sync")
            self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-l", str(self.root / "postgres.log"), "-w",
                      "-t", "60", "-o", f"-c listen_addresses='' -k {self.socket_dir}", "start")
        except subprocess.CalledProcessError as e:
            log = self.root / "postgres.log"
            tail = log.read_text()[-1500:] if log.exists() else ""
            self.stop()
            raise RuntimeError(f"PostgreSQL did not start: {e.stderr.strip()[-1500:]} {tail}") from None
        return self

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database, empty or a copy of the one at URL `template` (nobody connected to it); its URL."""
        assert self.bin is not None
        copy = ["-T", template.split("?")[0].rsplit("/", 1)[1]] if template else []
        self._run(str(self.bin / "createdb"), "-h", str(self.socket_dir), "-U", self.user, *copy, name)
        return self.url(name)

    def stop(self) -> None:
        root, self.root = self.root, None
        if root is None or self.bin is None:
            return
        data = root / "data"
        if (data / "postmaster.pid").exists():
            done = self._run(str(self.bin / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "-t", "30", "stop",
                             check=False)
            pidfile = data / "postmaster.pid"
            if done.returncode != 0 and pidfile.exists():
                try:
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
                except (OSError, ValueError, IndexError):
                    pass
        shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
