"""A bare Debian 12 till (systemd, udev, udisks2) for systemd-nspawn, debootstrapped once and
cached, and the offline bundle: the .deb plus every Debian package it needs beyond that till.

Usage as a script (make bundle): python3 tests/package/rootfs.py bundle DEB OUTDIR
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

CACHE = Path("/var/cache/edged-test")
# What a till box has before edged arrives. No python3: the bundle must bring it if needed.
BASE = ["systemd", "systemd-sysv", "libpam-systemd", "dbus", "udev", "udisks2", "polkitd", "apt", "procps"]


def host_mirror() -> str:
    """This machine's Debian mirror, from its apt sources (the project names no host)."""
    texts = [p.read_text() for p in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
             if p.is_file()]
    for text in texts:  # deb822 .sources first, then one-line sources
        for stanza in text.split("\n\n"):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "bookworm" in suites.group(1).split():
                return uris.group(1)
        for m in re.finditer(r"^deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+bookworm\s", text, re.M):
            return m.group(1)
    raise RuntimeError("no Debian 12 (bookworm) source in /etc/apt/sources.list*: cannot debootstrap")


def base_rootfs(log) -> Path:
    """The cached bare till, debootstrapped the first time (a few minutes). Package lists kept:
    the bundle is computed against it; the booted copies drop them (no network on a till)."""
    root = CACHE / f"bookworm-{hashlib.sha256(' '.join(BASE).encode()).hexdigest()[:12]}"
    if (root / ".complete").exists():
        log(f"rootfs: cached {root}")
        return root
    log(f"rootfs: debootstrap Debian 12 minbase + {', '.join(BASE)} into {root}")
    debootstrap(root, "minbase", BASE)
    (root / "etc/hostname").write_text("till\n")
    (root / ".complete").touch()
    return root


def debootstrap(root: Path, variant: str, include: list[str]) -> None:
    """A Debian 12 tree at ROOT (replacing a half-made one), from this machine's mirror."""
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["debootstrap", f"--variant={variant}", *([f"--include={','.join(include)}"] if include else []),
                    "bookworm", str(root), host_mirror()], check=True, stdout=subprocess.DEVNULL)


def offline(root: Path) -> None:
    """A till installs from the bundle alone: no package lists, so apt cannot reach for a network."""
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()


def bundle(deb: Path, out: Path, log, also: tuple[Path, ...] = (), packages: tuple[str, ...] = ()) -> Path:
    """OUT/: the .deb (and the .debs `also`, and the Debian `packages`) and the Debian packages a
    bare till lacks for them, for `apt install ./OUT/*.deb`."""
    root = base_rootfs(log)
    archives = root / "var/cache/apt/archives"
    for old in archives.glob("*.deb"):
        old.unlink()
    ours = [deb, *also]
    for d in ours:
        shutil.copy(d, root / "tmp" / d.name)
    subprocess.run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--download-only",
                    *[f"/tmp/{d.name}" for d in ours], *packages], check=True, stdout=subprocess.DEVNULL)
    for d in ours:
        (root / "tmp" / d.name).unlink()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for d in ours:
        shutil.copy(d, out)
    for dep in archives.glob("*.deb"):
        shutil.move(str(dep), out)
    log(f"bundle: {out}: {', '.join(d.name for d in ours)} and {len(list(out.glob('*.deb'))) - len(ours)} Debian "
        "packages, "
        f"{sum(p.stat().st_size for p in out.glob('*.deb')) / 1e6:.1f} MB")
    return out


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] != "bundle":
        sys.exit(__doc__.splitlines()[-1].strip())
    bundle(Path(sys.argv[2]), Path(sys.argv[3]), lambda line: print(line, file=sys.stderr))
