"""Where python-escpos keeps its printer database cache: a directory edged owns, never /tmp.

python-escpos pickles its capabilities database at import into ESCPOS_CAPABILITIES_PICKLE_DIR,
and calls mkdtemp() at import even when that is set, so a plain import leaves a /tmp/tmpXXXXXXXX
behind in every process. load() runs that import once, before anything else imports escpos.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path


def cache_dir() -> Path | None:
    """systemd's CacheDirectory= for the daemon, else the XDG cache dir of the user running edged;
    None when neither can be written (HOME=/nonexistent while a package is built)."""
    if os.environ.get("CACHE_DIRECTORY"):
        candidates = [Path(os.environ["CACHE_DIRECTORY"].split(":")[0])]
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        candidates = [Path(xdg) / "edged"] if os.path.isabs(xdg) else []
    for path in candidates:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    return None


def load() -> None:
    """Import escpos.capabilities with its pickle in cache_dir() and no stray temp directory."""
    if "escpos.capabilities" in sys.modules:
        return
    if os.environ.get("ESCPOS_CAPABILITIES_PICKLE_DIR"):
        _import_in(None, None)  # someone chose the directory: only keep mkdtemp() out of /tmp
        return
    cache = cache_dir()
    name = f"{platform.python_version()}.capabilities.pickle"
    if cache is not None and _fresh(cache / name):
        _import_in(cache, cache)
        return
    # No usable pickle: escpos writes a new one in place, which a second edged process starting
    # at the same moment could read half-written. So it writes into a scratch directory, and
    # the finished file is renamed into the cache (atomic) for the processes after this one.
    scratch = Path(tempfile.mkdtemp(prefix=".escpos-", dir=cache))
    try:
        _import_in(scratch, scratch)
        if cache is not None and (scratch / name).exists():
            os.replace(scratch / name, cache / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _import_in(pickle_dir: Path | None, scratch: Path | None) -> None:
    saved_tempdir, saved_env = tempfile.tempdir, os.environ.get("ESCPOS_CAPABILITIES_PICKLE_DIR")
    holder = Path(tempfile.mkdtemp(prefix=".escpos-import-", dir=scratch))
    tempfile.tempdir = str(holder)  # where escpos's unconditional mkdtemp() lands
    if pickle_dir is not None:
        os.environ["ESCPOS_CAPABILITIES_PICKLE_DIR"] = str(pickle_dir)
    try:
        import escpos.capabilities  # noqa: F401
    finally:
        tempfile.tempdir = saved_tempdir
        shutil.rmtree(holder, ignore_errors=True)
        # Read only at import: child processes choose for themselves (load() again).
        if saved_env is None:
            os.environ.pop("ESCPOS_CAPABILITIES_PICKLE_DIR", None)


def _fresh(pickle: Path) -> bool:
    """The pickle exists and is newer than the database it was made from (escpos's own rule)."""
    spec = importlib.util.find_spec("escpos")
    if spec is None or not spec.submodule_search_locations:
        return False
    source = Path(list(spec.submodule_search_locations)[0]) / "capabilities.json"
    try:
        return pickle.stat().st_mtime >= source.stat().st_mtime
    except OSError:
        return False
