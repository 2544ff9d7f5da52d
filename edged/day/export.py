"""Writing a closed day to a directory (a mounted USB stick, or `--to DIR`).

Layout: `EDGED/<till_id>/<YYYYMMDD>/` holding `journal.seg` (a segment of the
day's records, frames byte for byte as in the journal, header = first seq and
the chain before it) and `manifest.json` (docs/JOURNAL.md, "Exports").

Nothing that looks complete exists before everything is durable: the files
are written into `.<YYYYMMDD>.partial`, each fsynced, the directory fsynced,
then renamed to `<YYYYMMDD>` and the parent fsynced. A stick pulled on the way
leaves at most a `.partial` directory, which the next export of that day removes. Every
path is opened relative to its parent's fd with O_NOFOLLOW: a symlink
anywhere on the stick is refused, never followed. Nothing on the stick is run
or loaded. This runs in a worker thread: stick writes can take seconds.
"""
from __future__ import annotations

import collections
import errno
import hashlib
import json
import os
import stat
import time
from collections.abc import Callable
from typing import Any

from .. import __version__
from ..identity import Identity
from ..journal import frame as fr
from .signing import sign_manifest

FORMAT = "edged-export/1"
FORMAT_EXCLUDED = "edged-export/2"  # records left out (`excluded`): an older reader refuses it by name
# Signed by the till's key (day/signing.py), `excluded` or not; /1 and /2 are read only with --allow-unsigned.
FORMAT_SIGNED = "edged-export/3"
TOP = "EDGED"
CHUNK = 256 << 10
# Where a stick can be pulled: before creating the temporary directory, before each data file,
# mid-file, before the manifest, before the directory fsync, the rename and the parent's fsync.
STEPS = ("mkdir", "file", "write", "manifest", "fsync-dir", "rename", "fsync-parent")
GONE = (errno.EIO, errno.ENODEV, errno.ENXIO, errno.ENOTCONN, errno.ESHUTDOWN)
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class ExportError(Exception):
    """The export did not complete; str() says why (disk full, read-only, I/O error, a link)."""


def day_dir(business_day: str) -> str:
    return business_day.replace("-", "")


def build(closed: dict[str, Any], frames: bytes, chain_before: bytes,
          exclude: frozenset[str] = frozenset(), ident: Identity | None = None,
          ) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files, manifest) for one closed day; `frames` runs from its first record to its day.close.

    Records of the `exclude` kinds are left out. Each run of them leaves its seq range and the
    chain link after it in the manifest, so the records after it still check out, and a reader
    knows those seqs were left out on purpose, not lost."""
    counts: collections.Counter[str] = collections.Counter()
    left_out: collections.Counter[str] = collections.Counter()
    runs: list[list[Any]] = []  # [first seq, last seq, chain link after last (hex)]
    kept = []
    pos, chain_after = 0, chain_before
    while pos < len(frames):  # the counts and chain head of exactly what is written
        rec = fr.decode(frames, pos, None)
        if rec.kind in exclude:
            left_out[rec.kind] += 1
            if runs and runs[-1][1] == rec.seq - 1:
                runs[-1][1:] = [rec.seq, rec.chain.hex()]
            else:
                runs.append([rec.seq, rec.seq, rec.chain.hex()])
        else:
            counts[rec.kind] += 1
            kept.append(frames[pos:pos + rec.size])
        pos, chain_after = pos + rec.size, rec.chain
    seg = fr.encode_segment_head(closed["first_seq"], chain_before) + (b"".join(kept) if exclude else frames)
    files = {"journal.seg": seg}
    manifest = {
        "format": FORMAT, "till_id": closed["till_id"], "business_day": closed["business_day"],
        "first_seq": closed["first_seq"], "last_seq": closed["seq"], "day_close_seq": closed["seq"],
        "chain_before": chain_before.hex(), "chain_after": chain_after.hex(), "counts": dict(counts),
        "numbers": closed["numbers"], "exported_at": int(time.time()), "edged_version": __version__,
        "files": {name: {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
                  for name, data in files.items()},
    }
    if exclude:
        manifest["format"] = FORMAT_EXCLUDED
        manifest["excluded"] = {"kinds": sorted(exclude), "counts": dict(left_out), "runs": runs}
    if ident is not None:
        manifest["format"] = FORMAT_SIGNED
        sign_manifest(manifest, ident)
    return files, manifest


def manifest_bytes(manifest: dict[str, Any]) -> bytes:
    """manifest.json as written (and as `day.exported` records its sha256)."""
    return (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()


def size(files: dict[str, bytes], manifest: dict[str, Any]) -> int:
    """The bytes an export writes: its files and manifest.json. Progress counts up to this, and the
    `done` event reports it, so the two figures are one measure."""
    return sum(map(len, files.values())) + len(manifest_bytes(manifest))


def write(root: str, till_id: str, business_day: str, files: dict[str, bytes], manifest: dict[str, Any],
          progress: Callable[[int, int], None] = lambda done, total: None,
          step: Callable[[str], None] = lambda name: None) -> str:
    """Write the export under root; its final path. ExportError (nothing final written) on failure.
    step(name) is called before each of STEPS ("write": after the first chunk is written)."""
    name = day_dir(business_day)
    doc = manifest_bytes(manifest)
    total, done = size(files, manifest), 0
    fds: list[int] = []
    till: int | None = None
    partial = f".{name}.partial"
    try:
        root_fd = _opendir(None, root, fds, create=False)
        top = _opendir(root_fd, TOP, fds, create=True)
        till = _opendir(top, till_id, fds, create=True)
        for leftover in sorted(os.listdir(till)):  # left by a stick pulled last time
            if leftover.startswith(f".{name}.replaced-") and not _exists(till, name):
                os.rename(leftover, name, src_dir_fd=till, dst_dir_fd=till)  # the good old export back
            elif leftover == partial or leftover.startswith(f".{name}.replaced-"):
                _remove_tree(till, leftover)
        step("mkdir")
        os.mkdir(partial, 0o755, dir_fd=till)
        tmp = _opendir(till, partial, fds, create=False)
        for fname, data in [*files.items(), ("manifest.json", doc)]:  # the manifest last
            step("manifest" if fname == "manifest.json" else "file")
            fd = os.open(fname, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                         dir_fd=tmp)
            try:
                view, first = memoryview(data), True
                while view:
                    # A write may be short: on a stick that fills up, vfat takes what fits and says
                    # how much (no ENOSPC until the next write). Seen on real USB: the rest of
                    # journal.seg was dropped and the export counted as done.
                    n = os.write(fd, view[:CHUNK])
                    if n <= 0:
                        raise OSError(errno.ENOSPC, "nothing more could be written", fname)
                    view, done = view[n:], done + n
                    progress(done, total)
                    if first and fname != "manifest.json":
                        step("write")
                    first = False
                os.fsync(fd)
            finally:
                os.close(fd)
        step("fsync-dir")
        os.fsync(tmp)
        old = None
        step("rename")
        if _exists(till, name):  # written before (a re-export by date): replaced as a whole
            old = f".{name}.replaced-{int(time.time())}"
            os.rename(name, old, src_dir_fd=till, dst_dir_fd=till)
        os.rename(partial, name, src_dir_fd=till, dst_dir_fd=till)
        step("fsync-parent")
        # vfat writes the new name's entry with start cluster 0 and fills it in only when the
        # moved directory's inode is written back: fsync that too, or a stick pulled before the
        # unmount holds an entry that points at the root directory (seen on real USB sticks).
        os.fsync(tmp)
        os.fsync(till)
        if old:
            _remove_tree(till, old)
            os.fsync(till)
        os.fsync(top)
        os.fsync(root_fd)  # EDGED itself may be new; a directory target has no unmount to flush it
        return os.path.join(root, TOP, till_id, name)
    except OSError as e:
        if till is not None:  # a full stick gets its space back; a pulled one keeps it till next time
            try:
                _remove_tree(till, partial)
            except OSError:
                pass
        raise ExportError(_why(e)) from None
    finally:
        for fd in fds:
            os.close(fd)


READ_ONLY = "the stick is read-only"
# EROFS from a stick whose device takes writes: the kernel set its filesystem read-only after an
# error, typically left by a stick pulled out mid-write (vfat: "deleting FAT entry beyond EOF").
DAMAGED = ("the stick's filesystem is damaged: the kernel set it read-only after an error (was it pulled out "
           "while being written?); repair it on a computer (fsck.vfat, fsck.exfat, or Windows' error check) or "
           "use another stick")


def _why(e: OSError) -> str:
    if e.errno == errno.ELOOP:
        return f"{e.filename or 'a path'} on the stick is a symbolic link; refused"
    if e.errno == errno.ENOSPC:
        return "the stick is full"
    if e.errno == errno.EROFS:
        return READ_ONLY
    if e.errno in GONE:
        return f"the stick was removed or failed ({e.strerror})"
    return f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")


def _opendir(parent: int | None, name: str, fds: list[int], create: bool) -> int:
    if create:
        try:
            os.mkdir(name, 0o755, dir_fd=parent)
        except FileExistsError:
            pass
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(errno.ELOOP, "a symbolic link or not a directory", name) from None
        raise
    fds.append(fd)
    return fd


def _exists(parent: int, name: str) -> bool:
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.ELOOP, "a symbolic link or not a directory", name)
    return True


def _remove_tree(parent: int, name: str) -> None:
    """Remove parent/name without following any link in it."""
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return
    fd = os.open(name, DIR_FLAGS, dir_fd=parent)
    try:
        for entry in os.listdir(fd):
            _remove_tree(fd, entry)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent)
