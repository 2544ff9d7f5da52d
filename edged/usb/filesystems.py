"""The filesystems a stick may have: one table, read by the config and the mounters.

`usb.filesystems` (config.py) takes its default from the rows marked
`default`; the mounters (mount.py) take each mount's options and, for a
kernel without the driver, the FUSE helper from the row of the stick's type.
A name the table does not list (ext4 on a test stick, say) may still be
configured: it is mounted with the common flags alone, like ext4 here.

Adding one: a row here (its options, the tools it needs and the Debian
package that brings them), and the package in debian/control if edged should
pull it in.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

# Every mount gets these: nothing on a stick is ever run or trusted (mount.py checks them after mounting).
FLAGS = ("nosuid", "nodev", "noexec", "noatime")


@dataclass(frozen=True)
class Filesystem:
    name: str  # blkid TYPE / ID_FS_TYPE, and mount's -t
    ownerless: bool = False  # no owners on disk: uid/gid/umask given at mount time (edged's user, 077)
    fuse: str | None = None  # mount -t type of the FUSE helper, for a kernel without the driver
    tools: tuple[str, ...] = ()  # programs needed besides mount(8) / udisksctl
    package: str | None = None  # the Debian package that brings the tools
    default: bool = False  # in usb.filesystems unless the config says otherwise


FILESYSTEMS: dict[str, Filesystem] = {fs.name: fs for fs in (
    Filesystem("vfat", ownerless=True, default=True),
    # Some Debian kernels (and this project's test machines) have no exfat driver: exfat-fuse then.
    Filesystem("exfat", ownerless=True, fuse="exfat-fuse", tools=("mount.exfat-fuse",), package="exfat-fuse",
               default=True),
    Filesystem("ext4"),
)}


def lookup(name: str) -> Filesystem:
    """The table's row for name; a name it does not list gets the common flags alone."""
    return FILESYSTEMS.get(name) or Filesystem(name)


def defaults() -> list[str]:
    """usb.filesystems when the config does not set it."""
    return [fs.name for fs in FILESYSTEMS.values() if fs.default]


def mount_options(name: str) -> str:
    """The -o options for a stick of this type: the common flags, and for a type without owners on
    disk, edged's user as its owner with umask 077."""
    extra = f",uid={os.getuid()},gid={os.getgid()},umask=077" if lookup(name).ownerless else ""
    return ",".join(FLAGS) + extra
