"""Shared fixtures: short socket paths and an event loop runner."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def short_dir():
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="edged-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true",
                     help="run the long variants (ten times the power-loss workloads and fuzz cases, 500 SIGKILLs)")
    parser.addoption("--package", action="store_true",
                     help="run tests/package: build the .deb, boot Debian 12 in systemd-nspawn, install it "
                          "(`make test-package`; root, a few minutes)")


def pytest_ignore_collect(collection_path, config):
    """tests/package boots a container: only with --package (make test-package)."""
    if collection_path.name == "package" and collection_path.parent.name == "tests":
        return not config.getoption("--package")
    return None


def pytest_configure(config):
    import os

    if config.getoption("--long"):
        os.environ["EDGED_LONG_TESTS"] = "1"
        os.environ.setdefault("EDGED_KILLS", "500")
        os.environ.setdefault("EDGED_FUZZ_SCALE", "10")
