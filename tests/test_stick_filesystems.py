"""The table of stick filesystems (edged/usb/filesystems.py) is what the config and the mounters read."""
from __future__ import annotations

import os
import shutil

from edged import config
from edged.usb import filesystems
from edged.usb.mount import MountCommand, mount_options
from edged.usb.probe import Stick

COMMON = "nosuid,nodev,noexec,noatime"


def test_the_config_default_comes_from_the_table() -> None:
    assert config.UsbSettings().filesystems == filesystems.defaults() == ["vfat", "exfat"]


def test_mount_options_per_filesystem() -> None:
    owned = f"{COMMON},uid={os.getuid()},gid={os.getgid()},umask=077"
    assert mount_options("vfat") == mount_options("exfat") == owned  # no owners on disk
    assert mount_options("ext4") == mount_options("btrfs") == COMMON  # a name not listed: the flags alone


def test_every_row_names_the_package_of_its_tools() -> None:
    for fs in filesystems.FILESYSTEMS.values():
        assert bool(fs.tools) == bool(fs.package), fs
        assert fs.fuse is None or fs.tools, fs


def test_the_fuse_helper_only_where_the_kernel_lacks_the_driver(tmp_path) -> None:
    mounter = MountCommand(config.UsbSettings(mounter="mount", mount_dir=str(tmp_path)))

    def stick(fs_type: str) -> Stick:
        return Stick("sdz1", "/dev/sdz1", fs_type, "usb")

    assert mounter.fs_type(stick("vfat")) == "vfat"
    assert mounter.fs_type(stick("ext4")) == "ext4"
    with open("/proc/filesystems", encoding="ascii") as f:
        kernel = {line.split()[-1] for line in f if line.strip()}
    fuse = "exfat" not in kernel and shutil.which("mount.exfat-fuse")
    assert mounter.fs_type(stick("exfat")) == ("exfat-fuse" if fuse else "exfat")
