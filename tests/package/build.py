"""The .deb built the way Debian's build machines build it: in a clean Debian 12 that holds only
build-essential and debian/control's Build-Depends, as an unprivileged user, without network.

The build root is debootstrapped once and cached under a hash of debian/control's Source paragraph
(made again after a week, for Debian's point releases), so a changed debian/control gets a fresh
root and a Build-Depends missing from it fails here on every machine, not only on a fresh one. Each build runs in systemd-nspawn with a throw-away overlay over that root
(nothing a build writes outlives it) and HOME=/nonexistent, as sbuild does.
The libraries the .deb carries (debian/vendor.txt) are downloaded, hash-checked, before the
offline build into the source's debian/wheels/, as the source package's own component.

Usage (make package): python3 tests/package/build.py PKG_DIR   (builds PKG_DIR/src; the .deb lands in PKG_DIR)
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

from rootfs import CACHE, debootstrap

BUILDER_UID = 2642  # the build user inside the root; owns the copied source while it builds
NSPAWN = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--as-pid2"]
# Part of the cache key: a change to how the root is made below makes a new root.
RECIPE = "buildd variant; apt-get build-dep /src; builder uid 2642 home /nonexistent"
MAX_AGE = 7 * 86400  # then made again, so builds follow Debian 12's point releases
KEEP = 3  # build roots kept (for checkouts with other Build-Depends), the most recently used


def source_stanza(control: Path) -> str:
    """debian/control's Source paragraph (Build-Depends, -Arch, -Indep, Build-Conflicts...),
    comments dropped and whitespace normalised: what apt-get build-dep reads."""
    lines = [line for line in control.read_text().splitlines() if not line.startswith("#")]
    stanza = "\n".join(lines).split("\n\n")[0]
    if not re.search(r"^Build-Depends:", stanza, re.M):
        raise SystemExit(f"{control}: no Build-Depends field")
    return " ".join(stanza.split())


@contextlib.contextmanager
def locked(path: Path, mode: int) -> Iterator[None]:
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, mode)
        yield


def build_root(src: Path, log) -> Path:
    """The cached clean root for this Source paragraph; made (about a minute) when missing, stale
    or older than MAX_AGE. Made under a lock in a scratch directory and renamed into place, so a
    half-made root is never used. The caller holds it with a shared lock while building."""
    key = hashlib.sha256(f"{RECIPE}\n{source_stanza(src / 'debian/control')}".encode()).hexdigest()[:12]
    root = CACHE / f"bookworm-build-{key}"
    with locked(CACHE / ".build-roots.lock", fcntl.LOCK_EX):
        done = root / ".complete"
        if done.exists() and time.time() - done.stat().st_mtime < MAX_AGE:
            os.utime(root)  # most recently used
            return root
        t0 = time.monotonic()
        scratch = CACHE / f".making-{key}"
        _remove(scratch)
        log(f"build root: debootstrap Debian 12 with build-essential into {root}")
        debootstrap(scratch, "buildd", [])
        log("build root: installing the Build-Depends of debian/control")
        # apt-get build-dep reads the relations from the source's own debian/control.
        nspawn(scratch, ["apt-get", "build-dep", "-y", "-q", "--no-install-recommends", "/src"],
               binds=[f"--bind-ro={src}:/src"], network=True)
        nspawn(scratch, ["useradd", "--uid", str(BUILDER_UID), "--no-create-home", "--home-dir",
                         "/nonexistent", "builder"], network=False)
        (scratch / ".complete").write_text(f"{RECIPE}\n{source_stanza(src / 'debian/control')}\n")
        with locked(root.with_name(root.name + ".lock"), fcntl.LOCK_EX):  # nobody builds in the old one
            _remove(root)
            scratch.rename(root)
        _prune(root)
        log(f"build root: ready in {time.monotonic() - t0:.0f} s")
        return root


def _prune(keep: Path) -> None:
    """Only the KEEP most recently used roots stay; one a build holds (shared lock) is left alone."""
    roots = sorted((r for r in CACHE.glob("bookworm-build-*") if r.is_dir()),
                   key=lambda r: r.stat().st_mtime, reverse=True)
    for old in [r for r in roots if r != keep][KEEP - 1:]:
        with open(old.with_name(old.name + ".lock"), "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            _remove(old)


def _remove(path: Path) -> None:
    """rm -rf that stays on this filesystem (a killed nspawn or debootstrap may leave mounts)."""
    if path.exists():
        subprocess.run(["umount", "-R", "-q", str(path)], stderr=subprocess.DEVNULL, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", str(path)], check=True)


def fetch_wheels(src: Path, log) -> None:
    """src/debian/wheels: what debian/vendor.txt pins, downloaded once into the cache, hash-checked.
    Downloaded by this machine's pip, with this machine's index and certificate settings."""
    vendor = src / "debian/vendor.txt"
    shelf = CACHE / f"wheels-{hashlib.sha256(vendor.read_bytes()).hexdigest()[:12]}"
    with locked(CACHE / ".wheels.lock", fcntl.LOCK_EX):
        if not (shelf / ".complete").exists():
            log(f"wheels: downloading what debian/vendor.txt pins into {shelf}")
            scratch = shelf.with_name(".making-" + shelf.name)
            _remove(scratch)
            scratch.mkdir(parents=True)
            done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                                   "xkbcommon", "--require-hashes", "-r", str(vendor), "-d", str(scratch)],
                                  stdin=subprocess.DEVNULL, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"{done.stdout}{done.stderr}edged: downloading the libraries debian/vendor.txt "
                                 f"pins failed (pip download exited {done.returncode})")
            (scratch / ".complete").touch()
            _remove(shelf)
            scratch.rename(shelf)
            for old in CACHE.glob("wheels-*"):
                if old != shelf:
                    _remove(old)
        shutil.copytree(shelf, src / "debian/wheels", ignore=shutil.ignore_patterns(".complete"),
                        dirs_exist_ok=True)


def nspawn(root: Path, argv: list[str], *, binds: list[str] = (), network: bool, volatile: bool = False,
           user: str | None = None, chdir: str | None = None, env: list[str] = (),
           log_file: Path | None = None) -> None:
    cmd = [*NSPAWN, "-D", str(root), *binds, *(f"--setenv={e}" for e in env)]
    cmd += [] if network else ["--private-network"]
    cmd += ["--volatile=overlay"] if volatile else []
    cmd += [f"--user={user}"] if user else []
    cmd += [f"--chdir={chdir}"] if chdir else []
    out = open(log_file, "a") if log_file else None
    try:
        done = subprocess.run([*cmd, "--", *argv], stdin=subprocess.DEVNULL,
                              stdout=out or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    finally:
        if out:
            out.close()
    if done.returncode != 0:
        tail = log_file.read_text().splitlines()[-40:] if log_file else (done.stdout or "").splitlines()[-40:]
        where = f" (whole log: {log_file})" if log_file else ""
        raise SystemExit("\n".join([*tail, f"edged: `{' '.join(argv)}` failed in the clean build root{where}"]))


def build(pkg_dir: Path, log) -> Path:
    """Build PKG_DIR/src; the .deb and its companions land in PKG_DIR, the log in PKG_DIR/build.log."""
    root = build_root(pkg_dir / "src", log)
    fetch_wheels(pkg_dir / "src", log)
    # The build user owns only a directory of its own: the source, and where the .deb lands.
    work = pkg_dir / "build"
    _remove(work)
    work.mkdir()
    (pkg_dir / "src").rename(work / "src")
    build_log = pkg_dir / "build.log"
    build_log.unlink(missing_ok=True)
    t0 = time.monotonic()
    log(f"building in the clean root as an unprivileged user, no network (log: {build_log})")
    try:
        subprocess.run(["chown", "-R", f"{BUILDER_UID}:{BUILDER_UID}", str(work)], check=True)
        with locked(root.with_name(root.name + ".lock"), fcntl.LOCK_SH):
            nspawn(root, ["dpkg-buildpackage", "-us", "-uc", "-b"], binds=[f"--bind={work}:/build"],
                   network=False, volatile=True, user="builder", chdir="/build/src",
                   env=["HOME=/nonexistent", "LANG=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"],
                   log_file=build_log)
    finally:
        subprocess.run(["chown", "-R", "0:0", str(work)], check=True)
        (work / "src").rename(pkg_dir / "src")
        for made in work.iterdir():
            made.rename(pkg_dir / made.name)
        work.rmdir()
    deb = next(pkg_dir.glob("edged_*.deb"))
    log(f"built {deb} in {time.monotonic() - t0:.0f} s")
    return deb


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[-1].strip())
    build(Path(sys.argv[1]).resolve(), lambda line: print(f"edged: {line}", file=sys.stderr, flush=True))
