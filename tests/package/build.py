"""The .deb built the way Debian's build machines build it: in a clean Debian 12 that holds only
build-essential and debian/control's Build-Depends, as an unprivileged user, without network.

The build root is debootstrapped once and cached under a hash of the Build-Depends, so a changed
debian/control gets a fresh root and a Build-Depends missing from it fails here on every machine,
not only on a fresh one. Each build runs in systemd-nspawn with a throw-away overlay over that root
(nothing a build writes outlives it) and HOME=/nonexistent, as sbuild does.
The libraries the .deb carries (debian/vendor.txt) are downloaded, hash-checked, before the
offline build into the source's debian/wheels/, as the source package's own component.

Usage (make package): python3 tests/package/build.py PKG_DIR   (builds PKG_DIR/src; the .deb lands in PKG_DIR)
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from rootfs import CACHE, debootstrap

BUILDER_UID = 2642  # the build user inside the root; owns the copied source while it builds
NSPAWN = ["systemd-nspawn", "--register=no", "--keep-unit", "--quiet", "--as-pid2"]


def build_depends(control: Path) -> list[str]:
    """debian/control's Build-Depends, one relation per entry (comments and line breaks gone)."""
    text = "\n".join(line for line in control.read_text().splitlines() if not line.startswith("#"))
    field = re.search(r"^Build-Depends:(.*?)(?=^\S)", text, re.M | re.S)
    if field is None:
        raise SystemExit(f"{control}: no Build-Depends field")
    return [" ".join(rel.split()) for rel in field.group(1).split(",") if rel.strip()]


def build_root(src: Path, log) -> Path:
    """The cached clean root for these Build-Depends; made (a few minutes) when missing or stale."""
    deps = build_depends(src / "debian/control")
    root = CACHE / f"bookworm-build-{hashlib.sha256(chr(10).join(deps).encode()).hexdigest()[:12]}"
    if (root / ".complete").exists():
        return root
    for stale in CACHE.glob("bookworm-build-*"):
        shutil.rmtree(stale, ignore_errors=True)
    t0 = time.monotonic()
    log(f"build root: debootstrap Debian 12 with build-essential into {root} (first build only)")
    debootstrap(root, "buildd", [])
    log("build root: installing the Build-Depends of debian/control")
    # apt-get build-dep reads the relations from the source's own debian/control.
    nspawn(root, ["apt-get", "build-dep", "-y", "-q", "--no-install-recommends", "/src"],
           binds=[f"--bind-ro={src}:/src"], network=True)
    nspawn(root, ["useradd", "--uid", str(BUILDER_UID), "--no-create-home", "--home-dir", "/nonexistent",
                  "builder"], network=False)
    (root / ".complete").write_text("\n".join(deps) + "\n")
    log(f"build root: ready in {time.monotonic() - t0:.0f} s")
    return root


def fetch_wheels(src: Path, log) -> None:
    """src/debian/wheels: what debian/vendor.txt pins, downloaded once into the cache, hash-checked.
    Downloaded by this machine's pip, with this machine's index and certificate settings."""
    vendor = src / "debian/vendor.txt"
    shelf = CACHE / f"wheels-{hashlib.sha256(vendor.read_bytes()).hexdigest()[:12]}"
    if not (shelf / ".complete").exists():
        log(f"wheels: downloading what debian/vendor.txt pins into {shelf}")
        shutil.rmtree(shelf, ignore_errors=True)
        shelf.mkdir(parents=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary",
                               "xkbcommon", "--require-hashes", "-r", str(vendor), "-d", str(shelf)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{done.stdout}{done.stderr}edged: downloading the libraries debian/vendor.txt "
                             f"pins failed (pip download exited {done.returncode})")
        (shelf / ".complete").touch()
    shutil.copytree(shelf, src / "debian/wheels", ignore=shutil.ignore_patterns(".complete"), dirs_exist_ok=True)


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
    src = pkg_dir / "src"
    root = build_root(src, log)
    fetch_wheels(src, log)
    subprocess.run(["chown", "-R", f"{BUILDER_UID}:{BUILDER_UID}", str(pkg_dir)], check=True)
    build_log = pkg_dir / "build.log"
    build_log.unlink(missing_ok=True)
    t0 = time.monotonic()
    log(f"building in the clean root as an unprivileged user, no network (log: {build_log})")
    nspawn(root, ["dpkg-buildpackage", "-us", "-uc", "-b"], binds=[f"--bind={pkg_dir}:/build"],
           network=False, volatile=True, user="builder", chdir="/build/src",
           env=["HOME=/nonexistent", "LANG=C.UTF-8", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"], log_file=build_log)
    subprocess.run(["chown", "-R", "0:0", str(pkg_dir)], check=True)
    deb = next(pkg_dir.glob("edged_*.deb"))
    log(f"built {deb} in {time.monotonic() - t0:.0f} s")
    return deb


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__.splitlines()[-1].strip())
    build(Path(sys.argv[1]).resolve(), lambda line: print(f"edged: {line}", file=sys.stderr, flush=True))
