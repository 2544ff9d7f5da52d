"""Opening what is on a stick without trusting it: no link followed, no FIFO or device read.

The export directory is opened with O_NOFOLLOW and every file in it relative to
that fd, by a plain name, with O_NOFOLLOW|O_NONBLOCK: a symbolic link anywhere
is refused, nothing outside the directory can be named, and a FIFO cannot hang
the open. Each file is lstat-ed before it is opened (a device node is never
opened: opening some has effects) and fstat-ed after (it must be the regular
file just seen, of the size the manifest gives), so every limit holds before a
byte is read. Refused carries the one line that says why.
"""
from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class Refused(Exception):
    """Something on the stick is not what an export holds; str() says what."""


def _what(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a device node"),
                       (stat.S_ISBLK, "a device node"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a directory")):
        if test(mode):
            return name
    return "not a regular file"


def open_dir(path: Path, root: Path | None = None) -> tuple[int, tuple[int, int]]:
    """(fd, (device, inode)) of an export directory that is a real directory, not a link. Found
    under `root` (a PATH given on the command line), it is opened one directory at a time from
    there, each with O_NOFOLLOW: a directory on the stick swapped for a link after the walk saw it
    cannot lead the read off the stick."""
    parts = path.relative_to(root).parts if root is not None and path != root else ()
    try:
        first = root if parts and root is not None else path  # parts only below a root
        fd = os.open(first, (os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC) if parts else DIR_FLAGS)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("the export directory is a symbolic link or not a directory: refused") from None
        raise Refused(f"the export directory cannot be opened ({e.strerror})") from None
    for part in parts:
        try:
            nxt = os.open(part, DIR_FLAGS, dir_fd=fd)
        except OSError as e:
            what = "a symbolic link or not a directory" if e.errno in (errno.ELOOP, errno.ENOTDIR) else e.strerror
            raise Refused(f"{part} on the way to the export directory: {what}: refused") from None
        finally:
            os.close(fd)
        fd = nxt
    st = os.fstat(fd)
    return fd, (st.st_dev, st.st_ino)


def open_file(dir_fd: int, name: str, size: int | None = None, limit: int | None = None) -> tuple[int, int]:
    """(fd, size) of the regular file `name` in the directory; Refused unless it is one of exactly
    `size` bytes (or at most `limit`)."""
    try:
        before = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        raise Refused(f"{name}: missing") from None
    except OSError as e:
        raise Refused(f"{name}: cannot be read ({e.strerror})") from None
    if not stat.S_ISREG(before.st_mode):
        raise Refused(f"{name}: {_what(before.st_mode)}, not a regular file: refused")
    try:
        fd = os.open(name, FILE_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        why = "a symbolic link" if e.errno == errno.ELOOP else e.strerror
        raise Refused(f"{name}: cannot be opened ({why})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
            raise Refused(f"{name}: replaced while being opened: refused")
        if size is not None and st.st_size != size:
            raise Refused(f"{name}: {st.st_size} bytes, the manifest says {size} (changed after export)")
        if limit is not None and st.st_size > limit:
            raise Refused(f"{name}: {st.st_size} bytes, more than the {limit} allowed")
    except BaseException:
        os.close(fd)
        raise
    return fd, st.st_size


def read_small(dir_fd: int, name: str, limit: int) -> bytes:
    """The whole of a small file (at most `limit` bytes, checked before reading and while reading)."""
    fd, size = open_file(dir_fd, name, limit=limit)
    try:
        chunks, got = [], 0
        while got <= limit:
            chunk = os.read(fd, limit + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
    finally:
        os.close(fd)
    if got > limit:
        raise Refused(f"{name}: grew past {limit} bytes while being read: refused")
    return b"".join(chunks)
