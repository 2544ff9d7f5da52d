"""edged commands leave /tmp as they found it: python-escpos's printer database cache goes to a
directory edged owns (edged/devices/escpos_cache.py), never to a fresh mkdtemp() per process."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

PICKLE = f"{platform.python_version()}.capabilities.pickle"


def cached(cache: Path) -> list[str]:
    """What the cache holds: SHELF/PICKLE paths (a shelf per printer database content)."""
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def edged(*args: str, env: dict[str, str], tmp: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=60,
                          env={**env, "TMPDIR": str(tmp)})


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("XDG_CACHE_HOME", "CACHE_DIRECTORY", "ESCPOS_CAPABILITIES_PICKLE_DIR")}
    return {**env, **extra}


def test_cli_runs_leave_tmp_empty_and_cache_the_printer_database_once(tmp_path):
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    config = tmp_path / "edged.toml"
    config.write_text('till_id = "t1"\n')
    env = clean_env(XDG_CACHE_HOME=str(cache))
    for args in (["--version"], ["--help"], ["check-config", str(config)], ["demo", "--help"], ["--version"]):
        done = edged(*args, env=env, tmp=tmp)
        assert done.returncode == 0, (args, done.stderr)
        assert list(tmp.iterdir()) == [], args
    [only] = cached(cache / "edged")
    assert only.startswith("escpos-") and only.endswith("/" + PICKLE)


def test_the_daemon_uses_systemds_cache_directory(tmp_path):
    tmp, cache = tmp_path / "tmp", tmp_path / "var-cache-edged"
    tmp.mkdir()
    cache.mkdir()
    done = edged("--version", env=clean_env(CACHE_DIRECTORY=str(cache)), tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert cached(cache) == [] and list(tmp.iterdir()) == []  # another unit's cache: not edged's
    cache = tmp_path / "var-cache" / "edged"
    cache.mkdir(parents=True)
    done = edged("--version", env=clean_env(CACHE_DIRECTORY=str(cache), XDG_CACHE_HOME=str(tmp_path / "x")),
                 tmp=tmp)
    assert done.returncode == 0, done.stderr
    assert [p.endswith(PICKLE) for p in cached(cache)] == [True] and list(tmp.iterdir()) == []


def test_a_broken_or_foreign_cache_never_stops_edged(tmp_path):
    """Half-written after a power cut, or made from another python-escpos database: read again."""
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = clean_env(XDG_CACHE_HOME=str(cache))
    assert edged("--version", env=env, tmp=tmp).returncode == 0
    [good] = cached(cache / "edged")
    (cache / "edged" / good).write_bytes(b"")
    stale = cache / "edged" / "escpos-0000000000000000"
    stale.mkdir()
    (stale / PICKLE).write_bytes(b"not a pickle")
    done = edged("--version", env=env, tmp=tmp)
    assert done.returncode == 0 and done.stdout.strip().startswith("edged "), done.stderr
    assert cached(cache / "edged") == [good] and (cache / "edged" / good).stat().st_size > 1000
    assert list(tmp.iterdir()) == []


def test_no_writable_cache_dir_still_leaves_nothing(tmp_path):
    """As while the package is built: HOME=/nonexistent, no XDG_CACHE_HOME."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = edged("--help", env=clean_env(HOME="/nonexistent"), tmp=tmp)
    assert done.returncode == 0 and "usage: edged" in done.stdout, done.stderr
    assert list(tmp.iterdir()) == []


def test_processes_starting_together_share_one_cache_without_reading_half_a_file(tmp_path):
    tmp, cache = tmp_path / "tmp", tmp_path / "cache"
    tmp.mkdir()
    env = {**clean_env(XDG_CACHE_HOME=str(cache)), "TMPDIR": str(tmp)}
    script = "import edged.devices.printer.codepages as c, escpos.capabilities as e; print(len(e.CAPABILITIES['profiles']))"
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for _ in range(6)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err for _, err in outs]
    assert len({out for out, _ in outs}) == 1 and int(outs[0][0]) > 10
    assert [p.endswith(PICKLE) for p in cached(cache / "edged")] == [True]
    assert list(tmp.iterdir()) == []


def _python(code: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60, env=env)


LOAD_WITH_PACKAGED = ("import sys, pathlib; from edged.devices import escpos_cache as c; "
                      "c.PACKAGED = pathlib.Path(sys.argv[1]); "
                      "import edged.devices.printer.codepages, escpos.capabilities as e; print(len(e.CAPABILITIES['profiles']))")


def test_the_packages_pickle_is_read_and_no_user_cache_is_made(tmp_path):
    """The .deb ships the database pickled at build time (debian/rules: prebuild): read from there,
    no process parses the database nor writes a cache of its own; an unusable one is passed over."""
    tmp, cache, shelf = tmp_path / "tmp", tmp_path / "cache", tmp_path / "usr-lib-edged" / "escpos-cache"
    tmp.mkdir()
    env = {**clean_env(XDG_CACHE_HOME=str(cache)), "TMPDIR": str(tmp)}
    made = _python("import sys, pathlib; from edged.devices import escpos_cache as c; "
                   "print(c.prebuild(pathlib.Path(sys.argv[1])))", str(shelf), env=env)
    assert made.returncode == 0, made.stderr
    pickled = Path(made.stdout.strip())
    assert pickled.parent.parent == shelf and pickled.name == PICKLE and pickled.stat().st_size > 1000
    first = _python(LOAD_WITH_PACKAGED, str(shelf), env=env)
    assert first.returncode == 0 and int(first.stdout) > 10, first.stderr
    assert not cache.exists() and list(tmp.iterdir()) == []  # the package's pickle was read: nothing made
    # Older than the database (escpos would then parse it and write a new pickle into the package's
    # directory): passed over for the user's own cache; the package's file is left as it was.
    os.utime(pickled, (0, 0))
    before = pickled.read_bytes()
    second = _python(LOAD_WITH_PACKAGED, str(shelf), env=env)
    assert second.returncode == 0 and second.stdout == first.stdout, second.stderr
    assert [p.endswith(PICKLE) for p in cached(cache / "edged")] == [True]
    assert pickled.read_bytes() == before and pickled.stat().st_mtime == 0 and list(tmp.iterdir()) == []
    # Unreadable (a damaged disk): a warning, and the user's own cache.
    shutil.rmtree(cache)
    pickled.write_bytes(b"not a pickle")
    os.utime(pickled, None)
    third = _python(LOAD_WITH_PACKAGED, str(shelf), env=env)
    assert third.returncode == 0 and third.stdout == first.stdout, third.stderr
    assert "unreadable" in third.stderr and [p.endswith(PICKLE) for p in cached(cache / "edged")] == [True]


def test_scanner_commands_never_load_the_printer_database(tmp_path):
    """`edged scan record` (a technician recording a scanner) loads no printer code at all."""
    env = clean_env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    code = ("import sys; from edged.cli import build_parser; build_parser('scan').parse_args(['scan', 'record', "
            "'/dev/null', '/dev/null']); import edged.cli.scan, edged.devices.scanner.fixture; "
            "print('escpos.capabilities' in sys.modules)")
    done = _python(code, env=env)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr
    assert not (tmp_path / "cache").exists()
