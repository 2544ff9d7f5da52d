"""Shared fixtures (short socket paths) and CI's rule on skips (tests/ci_skips.py)."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from ci_skips import CI_MAY_SKIP, allowed  # noqa: E402

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture
def short_dir():
    """A short directory: unix socket paths must stay under 108 bytes."""
    path = Path(tempfile.mkdtemp(prefix="edged-t-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL of the tests' own (unix socket only), for the whole run; each test makes its database."""
    from edged.fleet.localpg import BINARIES, LocalPostgres, binaries
    if binaries() is None:
        pytest.skip(f"no PostgreSQL server installed ({BINARIES}; make test installs postgresql)")
    pg = LocalPostgres(Path(tempfile.gettempdir()) / "edged-tests-pg")
    pg.start()
    yield pg
    pg.stop()


_databases = iter(range(1, 1_000_000))


@pytest.fixture(params=["sqlite", "postgresql"])
def archive_at(request, tmp_path):
    """Where a new, empty head-office archive is: a directory (SQLite), or a PostgreSQL database.
    The archive's tests run on both: one code path (edged/day/backend.py)."""
    if request.param == "sqlite":
        return str(tmp_path / "archive")
    return request.getfixturevalue("postgres").create_database(f"archive{next(_databases)}")


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true",
                     help="run the long variants (ten times the power-loss workloads and fuzz cases, 500 SIGKILLs)")
    parser.addoption("--package", action="store_true",
                     help="run tests/package: build the .deb, boot Debian 12 in systemd-nspawn, install it "
                          "(`make test-package`; root, a few minutes)")
    parser.addoption("--till", action="store_true",
                     help="run tests/till: boot a Debian 12 guest under QEMU, install the .deb, plug USB "
                          "printers, scanners, sticks and serial adapters into it (`make test-till`; root)")


def pytest_ignore_collect(collection_path, config):
    """tests/package boots a container, tests/till a VM: only with --package / --till."""
    if collection_path.name == "package" and collection_path.parent.name == "tests":
        return not config.getoption("--package")
    if collection_path.name == "till" and collection_path.parent.name == "tests":
        return not config.getoption("--till")
    return None


def pytest_configure(config):
    config.addinivalue_line("markers", "long: runs only with --long (ten times the workloads; not in CI)")

    if config.getoption("--long"):
        os.environ["EDGED_LONG_TESTS"] = "1"
        os.environ.setdefault("EDGED_KILLS", "500")
        os.environ.setdefault("EDGED_FUZZ_SCALE", "10")


def pytest_collection_modifyitems(config, items):
    """Tests marked long run only with --long: without it they are deselected (counted in the
    summary as deselected), not skipped."""
    if config.getoption("--long"):
        return
    long = [item for item in items if item.get_closest_marker("long")]
    if long:
        config.hook.pytest_deselected(items=long)
        items[:] = [item for item in items if not item.get_closest_marker("long")]


def _refused_in_ci(report) -> None:
    """A skip (or an expected failure) CI does not accept becomes a failure naming what is missing."""
    if hasattr(report, "wasxfail"):
        reason = f"expected to fail: {report.wasxfail}"
    elif report.skipped and isinstance(report.longrepr, tuple):
        reason = report.longrepr[2].removeprefix("Skipped: ")
    else:
        return
    if allowed(reason) is None:
        report.outcome = "failed"
        report.longrepr = (f"skipped in CI, which must provide what this test needs: {reason}\n"
                           f"(make test installs the test tools; tests/ci_skips.py lists the only skips "
                           f"CI accepts)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if IN_CI:
        _refused_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """Skips while collecting (a module-level skip or importorskip) count too."""
    outcome = yield
    if IN_CI:
        _refused_in_ci(outcome.get_result())


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not IN_CI:
        return
    seen: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        if isinstance(report.longrepr, tuple):
            reason = report.longrepr[2].removeprefix("Skipped: ")
            why = allowed(reason)
            if why:
                seen[why] = seen.get(why, 0) + 1
    terminalreporter.section("skips CI accepts (tests/ci_skips.py)")
    if not seen:
        terminalreporter.write_line("none")
    for why, count in seen.items():
        terminalreporter.write_line(f"{count} skipped: {why}")
    missing = set(CI_MAY_SKIP.values()) - set(seen)
    for why in sorted(missing):
        terminalreporter.write_line(f"(listed, not skipped this run: {why})")

from fleetkit import fleet  # noqa: E402,F401  (the online tests' fixture: tests/fleetkit.py)
