"""Fixtures for `make test-package`: the .deb (and a newer rebuild of it) and a booted Debian 12."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from container import UPGRADE_VERSION, Container, log
from rootfs import base_rootfs, bundle

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("PKG_DIR", "/tmp/edged-package"))


def _build(dest: Path, version: str = "") -> Path:
    log(f"building the .deb{' as ' + version if version else ''} (make package)")
    subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "package", f"PKG_DIR={dest}",
                    f"PKG_VERSION={version}"], check=True, stdout=subprocess.DEVNULL)
    return next(dest.glob("edged_*.deb"))


@pytest.fixture(scope="session")
def debs() -> tuple[Path, Path]:
    if os.geteuid() != 0:
        pytest.skip("the package test needs root (debootstrap, systemd-nspawn)")
    for tool in ("systemd-nspawn", "debootstrap", "dpkg-buildpackage", "lintian"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is missing (make test-package installs it)")
    first = _build(WORK / "first")
    newer = _build(WORK / "newer", UPGRADE_VERSION)
    shelf = WORK / "debs"
    shutil.rmtree(shelf, ignore_errors=True)
    shelf.mkdir(parents=True)
    return Path(shutil.copy(first, shelf)), Path(shutil.copy(newer, shelf))


@pytest.fixture(scope="session")
def headoffice_bundle(debs) -> Path:
    """edged-headoffice (built beside the first edged .deb) with Mosquitto and what they need, offline:
    /mnt/packages/headoffice/ inside the till."""
    ho = next((WORK / "first").glob("edged-headoffice_*.deb"))
    return bundle(debs[0], debs[0].parent / "headoffice", log, also=(ho,), packages=("mosquitto",))


@pytest.fixture(scope="session")
def till(debs):
    # The offline bundle lands beside the debs: /mnt/packages/bundle/ inside the till.
    bundle(debs[0], debs[0].parent / "bundle", log)
    box = Container(base_rootfs(log), WORK / "till", debs[0].parent, log)
    box.boot()
    yield box
    box.stop()
