"""The till's disk for `make test-till`: a Debian 12 guest image with edged's runtime dependencies
(read from the .deb under test), its kernel and a small initrd, built once and cached.

The cache key is a hash of this file and the package list, so a change to either builds a new
image; an image whose build did not finish is never used (`.complete` is written last). Facts
behind the choices (timings, why MODULES=list, the masked units): ../shared/VM-USB.md.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "package"))
from rootfs import host_mirror  # noqa: E402

CACHE = Path("/var/cache/edged-vm")
# What a till box has before edged arrives, plus what the test harness needs in the guest:
# qemu-guest-agent (the control channel), usbutils (lsusb in failure reports), dosfstools (fsck
# of sticks), kmod (the gadget modules).
BASE = ["systemd", "systemd-sysv", "libpam-systemd", "udev", "dbus", "linux-image-amd64", "initramfs-tools",
        "kmod", "procps", "qemu-guest-agent", "usbutils", "dosfstools", "python3"]
# Units that only cost boot time on a test guest (timers that would run mid-test included).
MASKED = ["e2scrub_reap.service", "e2scrub_all.timer", "apt-daily.timer", "apt-daily-upgrade.timer",
          "dpkg-db-backup.timer", "fstrim.timer", "modprobe@drm.service", "systemd-timesyncd.service"]
# The initrd only has to find the root disk: 6.5 MB instead of 36 MB, seconds off every boot.
INITRD_MODULES = ["virtio_pci", "virtio_blk", "ext4"]
SIZE = "2G"


@dataclass(frozen=True)
class Image:
    kernel: Path
    initrd: Path
    disk: Path


def deb_dependencies(deb: Path) -> list[str]:
    """Depends and Recommends of the .deb, first alternative each, without versions: the guest
    has no network, so dpkg -i must find them all installed."""
    out = []
    for field in ("Depends", "Recommends"):
        text = subprocess.run(["dpkg-deb", "-f", str(deb), field], check=True, capture_output=True,
                              text=True).stdout
        for item in filter(None, (s.strip() for s in text.split(","))):
            out.append(re.split(r"[\s(|:]", item.split("|")[0].strip())[0])
    return out


def packages(deb: Path) -> list[str]:
    return sorted(set(BASE) | set(deb_dependencies(deb)))


def cache_dir(pkgs: list[str]) -> Path:
    key = hashlib.sha256(Path(__file__).read_bytes() + " ".join(pkgs).encode()).hexdigest()[:16]
    return CACHE / f"bookworm-{key}"


def image(deb: Path, log) -> Image:
    """The cached image for this .deb's dependencies, built first when missing (~1.5 min)."""
    pkgs = packages(deb)
    out = cache_dir(pkgs)
    img = Image(out / "vmlinuz", out / "initrd.img", out / "till.img")
    if (out / ".complete").exists():
        log(f"image: cached {out}")
        return img
    t0 = time.monotonic()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    root = out / "rootfs"
    log(f"image: mmdebstrap Debian 12 minbase + {len(pkgs)} packages into {root}")
    hooks = [
        'echo till > "$1/etc/hostname"',
        'printf "/dev/vda / ext4 rw,errors=remount-ro 0 1\\n'
        'hostshare /mnt/host 9p trans=virtio,version=9p2000.L,msize=262144,nofail 0 0\\n" > "$1/etc/fstab"',
        'mkdir -p "$1/mnt/host"',
        'chroot "$1" passwd -d root',
        *[f'ln -sf /dev/null "$1/etc/systemd/system/{unit}"' for unit in MASKED],
        # qemu-ga logs every call at info (~4,900 lines a run: guest-exec, guest-file-*), and
        # journald's share of the guest's emulated CPU was 20 s of it; warnings still get through.
        'mkdir -p "$1/etc/systemd/system/qemu-guest-agent.service.d"',
        'printf "[Service]\\nLogLevelMax=warning\\n" > "$1/etc/systemd/system/qemu-guest-agent.service.d/quiet.conf"',
        'sed -i "s/^MODULES=.*/MODULES=list/" "$1/etc/initramfs-tools/initramfs.conf"',
        'printf "%s\\n" ' + " ".join(INITRD_MODULES) + ' >> "$1/etc/initramfs-tools/modules"',
        'chroot "$1" update-initramfs -u -k all',
        # No network in the guest, and nothing in it names a mirror.
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin && : > "$1/etc/apt/sources.list"',
        'rm -f "$1"/etc/apt/sources.list.d/*',
    ]
    subprocess.run(["mmdebstrap", "--quiet", "--variant=minbase", f"--include={','.join(pkgs)}",
                    *[f"--customize-hook={h}" for h in hooks],
                    "bookworm", str(root), f"deb {host_mirror()} bookworm main"], check=True)
    shutil.copy(max((root / "boot").glob("vmlinuz-*")), img.kernel)
    shutil.copy(max((root / "boot").glob("initrd.img-*")), img.initrd)
    # mkfs -d copies the tree into the file system: no loop device, no mount.
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", "till", "-d", str(root), str(img.disk), SIZE], check=True)
    shutil.rmtree(root)
    (out / ".complete").write_text(" ".join(pkgs) + "\n")
    for old in CACHE.glob("bookworm-*"):
        if old != out:  # one image is enough: an old key's image is never used again
            shutil.rmtree(old, ignore_errors=True)
    log(f"image: built in {time.monotonic() - t0:.0f} s, {img.disk.stat().st_blocks * 512 / 1e6:.0f} MB on disk")
    return img
