"""A Debian 12 root filesystem to boot with systemd-nspawn, built once by debootstrap and cached.

It holds what a till box has before edged arrives: systemd, udev, udisks2 and the Debian
packages the .deb depends on, so `apt install ./edged_*.deb` inside needs no network.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

CACHE = Path("/var/cache/edged-test")
BASE = ["systemd", "systemd-sysv", "dbus", "udev", "udisks2", "apt", "procps", "python3"]


def depends_of(deb: Path) -> list[str]:
    """Package names from the .deb's Depends (first of each alternative, no versions)."""
    field = subprocess.run(["dpkg-deb", "-f", str(deb), "Depends"], check=True, capture_output=True,
                           text=True).stdout
    names = []
    for item in field.split(","):
        name = re.split(r"[\s(|:]", item.strip(), maxsplit=1)[0]
        if name and name not in names:
            names.append(name)
    return names


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


def base_rootfs(packages: list[str], log) -> Path:
    """The cached root for these packages, debootstrapped the first time (about two minutes)."""
    wanted = sorted(set(BASE + packages))
    key = hashlib.sha256(" ".join(wanted).encode()).hexdigest()[:12]
    root = CACHE / f"bookworm-{key}"
    if (root / ".complete").exists():
        log(f"rootfs: cached {root}")
        return root
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    mirror = host_mirror()
    log(f"rootfs: debootstrap Debian 12 minbase + {len(wanted)} packages into {root}")
    subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(wanted)}", "bookworm",
                    str(root), mirror], check=True, stdout=subprocess.DEVNULL)
    # A till installs from the .deb alone: no package lists, so apt cannot reach for a network.
    for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
        lists.unlink()
    (root / "etc/hostname").write_text("till\n")
    (root / ".complete").touch()
    return root
