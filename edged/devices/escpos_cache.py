"""Where python-escpos keeps its printer database cache: a directory edged owns, never /tmp.

python-escpos pickles its capabilities database at import into ESCPOS_CAPABILITIES_PICKLE_DIR,
and calls mkdtemp() at import even when that is set, so a plain import leaves a /tmp/tmpXXXXXXXX
behind in every process. load() runs that import once, before anything else imports escpos: the
printer package and the drawer call it, so a command without printer code (`edged scan record`)
never pays it.
A cache is only a cache: whatever is wrong with it (half-written after a power cut, disk full,
unwritable), edged starts, reading the database from the package instead.

Reading the database means PyYAML's pure-Python parser going through its 96 KB of JSON: 0.13 s on
our build host, seconds on a slow till (4-8 s in the till VM). So the .deb ships the pickle, made from
the very database it vendors when the package is built (prebuild(), debian/rules), next to the
vendored libraries: the first start after install and every user's first command read that.
"""
from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

log = logging.getLogger("edged.escpos")


def cache_dir() -> Path | None:
    """systemd's CacheDirectory=edged for the daemon, else the XDG cache dir of the user running
    edged; None when neither can be written (HOME=/nonexistent while a package is built)."""
    systemd = os.environ.get("CACHE_DIRECTORY", "").split(":")[0]
    if systemd and Path(systemd).name == "edged":  # not another unit's cache, inherited
        candidates = [Path(systemd)]
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


# The package's read-only shelf: /usr/lib/edged/escpos-cache in the .deb (edged and the vendored
# libraries are in /usr/lib/edged). Absent in a checkout or a virtualenv: then cache_dir() alone.
PACKAGED = Path(__file__).resolve().parents[2] / "escpos-cache"


def load() -> None:
    """Import escpos.capabilities with its pickle from the package, or in cache_dir(), and no
    stray temp directory."""
    if "escpos.capabilities" in sys.modules:
        return
    if os.environ.get("ESCPOS_CAPABILITIES_PICKLE_DIR"):
        _import_in(None, None)  # someone chose the directory: only keep mkdtemp() out of /tmp
        return
    source = _database()
    # Someone's own database (ESCPOS_CAPABILITIES_FILE): never the package's pickle, whose date
    # escpos would compare with that file's (and, run as root, rewrite from it).
    if source is not None and not os.environ.get("ESCPOS_CAPABILITIES_FILE") and _packaged(source):
        return
    cache = cache_dir()
    # One directory per database content: a new python-escpos (or a downgrade) never meets a
    # pickle made from another database, whatever the files' dates say.
    shelf = cache / f"escpos-{_digest(source)}" if cache is not None and source is not None else None
    if shelf is not None and shelf.is_dir() and any(shelf.glob("*.capabilities.pickle")):
        try:
            _import_in(shelf, shelf)
            return
        except Exception as e:  # noqa: BLE001 - a damaged pickle raises about anything (TypeError, MemoryError...)
            log.warning("printer database cache %s unreadable (%s); reading the database again", shelf, e)
            shutil.rmtree(shelf, ignore_errors=True)
    # escpos writes a new pickle in place, which a second edged process starting at the same
    # moment could read half-written. So it writes into a scratch directory; the finished,
    # flushed file is renamed into the cache for the processes after this one.
    for where in ([cache] if cache is not None else []) + [None, Path("/dev/shm")]:
        try:
            scratch = Path(tempfile.mkdtemp(prefix=".escpos-", dir=where))
        except OSError:
            continue
        try:
            _import_in(scratch, scratch)
        except OSError as e:  # full or failing disk: try the next place
            log.warning("cannot write python-escpos's printer database cache in %s: %s", scratch.parent, e)
            continue
        else:
            if shelf is not None and source is not None:
                _keep(scratch, shelf, source)
            return
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    raise OSError("python-escpos cannot load its printer database: no writable directory for its cache")


def _packaged(source: Path) -> bool:
    """The import done from the package's shelf, if it holds this database's pickle for this
    Python and escpos would read it (not older than the database: else escpos writes a new one)."""
    made = PACKAGED / f"escpos-{_digest(source)}" / _pickle_name()
    try:
        if made.stat().st_mtime < source.stat().st_mtime:
            return False
        _import_in(made.parent, None)
    except FileNotFoundError:
        return False
    except Exception as e:  # noqa: BLE001 - a damaged pickle raises about anything (TypeError, MemoryError...)
        log.warning("the package's printer database cache %s is unreadable (%s); using edged's own", made, e)
        return False
    return True


def prebuild(dest: Path) -> Path:
    """For the package build: this python-escpos's database pickled into DEST/escpos-<digest>/,
    dated as the database (escpos reads a pickle not older than it). Run in a process that has not
    imported escpos yet. The pickle's path."""
    source = _database()
    if source is None:
        raise OSError("python-escpos's capabilities.json not found")
    shelf = dest / f"escpos-{_digest(source)}"
    shelf.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".escpos-", dir=dest))
    try:
        _import_in(scratch, scratch)
        made = shelf / _pickle_name()
        os.replace(scratch / _pickle_name(), made)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    stamp = source.stat().st_mtime
    os.utime(made, (stamp, stamp))
    return made


def _pickle_name() -> str:
    return f"{platform.python_version()}.capabilities.pickle"  # as escpos names it


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


def _keep(scratch: Path, shelf: Path, source: Path) -> None:
    """The pickle escpos just wrote, flushed and renamed into SHELF; older shelves removed."""
    try:
        made = next(scratch.glob("*.capabilities.pickle"))
        with open(made, "rb") as f:
            os.fsync(f.fileno())
        # escpos re-reads its database when that looks newer than the pickle (package files
        # carry the changelog's date; clocks jump): the pickle never looks older.
        stamp = max(time.time(), source.stat().st_mtime + 1)
        os.utime(made, (stamp, stamp))
        shelf.mkdir(exist_ok=True)
        os.replace(made, shelf / made.name)
        fd = os.open(shelf, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        for old in shelf.parent.glob("escpos-*"):
            if old != shelf:
                shutil.rmtree(old, ignore_errors=True)
    except (OSError, StopIteration) as e:
        log.warning("cannot keep python-escpos's printer database cache in %s: %s", shelf, e)


def _database() -> Path | None:
    """The database escpos will read: ESCPOS_CAPABILITIES_FILE when set, else its own."""
    if os.environ.get("ESCPOS_CAPABILITIES_FILE"):
        given = Path(os.environ["ESCPOS_CAPABILITIES_FILE"])
        return given if given.is_file() else None
    spec = importlib.util.find_spec("escpos")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "capabilities.json"
    return path if path.is_file() else None


def _digest(source: Path) -> str:
    return hashlib.sha256(source.read_bytes()).hexdigest()[:16]
