"""The .deb under test, installed into a copy of the cached guest image before the guest boots.

dpkg -i in the running guest took 46-67 s under TCG (py3compile and `edged identity --init` are
Python, ten times slower there); dpkg in a chroot on the host takes seconds. The package's
maintainer scripts are written for both (a till imaged in a workshop is installed this way too):
without a running systemd they enable the units instead of starting them, and without udevd they
leave the rules to the boot's coldplug. The guest then boots with edged enabled: real systemd
starts the packaged unit and real udevd applies the packaged rules to every device plugged later.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from image import Image


def _run(*cmd: str | Path) -> None:
    subprocess.run([str(c) for c in cmd], check=True)


def installed(img: Image, deb: Path, run: Path, log: Callable[[str], None]) -> Image:
    """A copy of IMG's disk in RUN with DEB installed; IMG itself stays as cached."""
    t0 = time.monotonic()
    run.mkdir(parents=True, exist_ok=True)
    disk = run / "till.img"
    disk.unlink(missing_ok=True)
    _run("cp", "--sparse=always", img.disk, disk)
    root = run / "root"
    root.mkdir(exist_ok=True)
    mounts: list[Path] = []
    try:
        _run("mount", "-o", "loop", disk, root)
        mounts.append(root)
        for fs in ("proc", "sys", "dev"):
            _run("mount", "--rbind" if fs == "dev" else "--bind", f"/{fs}", root / fs)
            mounts.append(root / fs)
        shutil.copy(deb, root / "tmp" / "edged.deb")
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["chroot", str(root), "dpkg", "-i", "/tmp/edged.deb"], check=True, env=env,
                       stdout=subprocess.DEVNULL)
        os.unlink(root / "tmp" / "edged.deb")
    finally:
        if mounts:
            subprocess.run(["umount", "-R", str(root)], check=False)
    log(f"install: dpkg -i {deb.name} into a copy of the image in {time.monotonic() - t0:.1f} s")
    return Image(img.kernel, img.initrd, disk)
