"""Mounting a stick, behind one interface, chosen by `usb.mounter`.

- `udisks2` (production): `udisksctl` asks udisksd over D-Bus; the package's
  polkit rule lets edged's user mount, unmount and power off removable drives,
  so edged needs no mount privilege of its own.
- `mount`: mount(8) and umount(8) directly, at `usb.mount_dir/<device>`, for
  a daemon that has CAP_SYS_ADMIN (root, or tests).
- `directory`: the simulated till; a stick is a directory, nothing is mounted.

Every mount gets nosuid,nodev,noexec,noatime (nothing on a stick is ever run
or trusted), and vfat/exfat, which have no owners of their own, are owned by
edged's user with umask 077 (the options, and the FUSE helper for a kernel
without the driver, come from the table in filesystems.py). The flags are
read back from /proc/self/mountinfo: FUSE helpers (exfat-fuse) do not all
apply noexec, so edged re-applies the flags with a bind remount, and refuses
a mount that still lacks one.
"""
from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import stat
from typing import Protocol

from ..config import UsbSettings
from .filesystems import FLAGS, lookup, mount_options
from .probe import Stick

log = logging.getLogger("edged.usb")
LOOKUP_WAIT = 5.0  # seconds udisksd may take to learn of a stick edged already heard of
GONE_AFTER = 0.5  # seconds a stick's node must stay gone meanwhile to count as pulled


class MountError(Exception):
    """A mount or unmount failed; str() says why."""


class Mounter(Protocol):
    async def mount(self, stick: Stick) -> str: ...
    async def unmount(self, stick: Stick, path: str) -> None: ...
    async def eject(self, stick: Stick) -> None: ...


def _mounts(mountinfo: str) -> list[tuple[str, str, set[str]]]:
    """(source, mount point, per-mount flags) of every mount, the newest (the visible one) first."""
    with open(mountinfo, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = []
    for line in reversed(lines):
        fields = line.split()
        out.append((_unescape(fields[fields.index("-") + 2]), _unescape(fields[4]), set(fields[5].split(","))))
    return out


def mount_flags(path: str, mountinfo: str = "/proc/self/mountinfo") -> set[str] | None:
    """The per-mount flags of the mount at path, or None when nothing is mounted there."""
    real = os.path.realpath(path)
    return next((flags for _src, point, flags in _mounts(mountinfo) if point == real), None)


def mounted_at(node: str, mountinfo: str = "/proc/self/mountinfo") -> str | None:
    """Where the device node is mounted (its newest mount), or None."""
    return next((point for src, point, _flags in _mounts(mountinfo) if src == node), None)


def _real_dir(path: str) -> None:
    """Mount only on a real directory: a symbolic link there would put the stick somewhere else."""
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"{path} is not a directory (a symbolic link?); refused")


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


async def run(argv: list[str], timeout: float) -> str:
    """Run a mount tool; its stdout, or MountError with its own message."""
    proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.DEVNULL,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise MountError(f"{argv[0]} {argv[1]} took longer than {timeout:.0f} s") from None
    if proc.returncode:
        raise MountError((err or out).decode(errors="replace").strip() or f"{argv[0]} failed ({proc.returncode})")
    return out.decode(errors="replace")


class _Checked:
    """Shared by the real mounters: the flags are checked after every mount."""
    timeout: float

    async def enforce(self, stick: Stick, path: str) -> None:
        missing = [f for f in FLAGS if f not in (mount_flags(path) or set())]
        if missing:  # e.g. exfat-fuse drops noexec: set the mount's own flags again
            log.info("%s mounted without %s; remounting with them", stick.device, ",".join(missing))
            try:
                await run(["mount", "-o", "remount,bind," + ",".join(FLAGS), path], self.timeout)
            except MountError as e:
                log.warning("remount of %s failed: %s", path, e)
            missing = [f for f in FLAGS if f not in (mount_flags(path) or set())]
        if missing:
            await self.unmount(stick, path)
            raise MountError(f"the mount of {stick.device} lacks {','.join(missing)}; refused")

    async def unmount(self, stick: Stick, path: str) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def eject(self, stick: Stick) -> None:
        pass


class MountCommand(_Checked):
    """mount(8) at mount_dir/<device>."""

    def __init__(self, settings: UsbSettings) -> None:
        self.dir, self.timeout = settings.mount_dir, settings.timeout

    def fs_type(self, stick: Stick) -> str:
        # A kernel without the driver (exfat on this one, some Debian builds) mounts through FUSE.
        fs = lookup(stick.fs_type)
        if fs.fuse is None:
            return stick.fs_type
        with open("/proc/filesystems", encoding="ascii") as f:
            kernel = {line.split()[-1] for line in f if line.strip()}
        if fs.name not in kernel and all(shutil.which(tool) for tool in fs.tools):
            return fs.fuse
        return stick.fs_type

    async def mount(self, stick: Stick) -> str:
        os.makedirs(self.dir, mode=0o700, exist_ok=True)
        _real_dir(self.dir)
        path = os.path.join(self.dir, stick.device)
        if (left := mounted_at(stick.node)) is not None:  # left mounted by a crash or a stop mid-export
            await self.unmount(stick, left)
        os.makedirs(path, mode=0o700, exist_ok=True)
        _real_dir(path)
        await run(["mount", "-t", self.fs_type(stick), "-o", mount_options(stick.fs_type), stick.node, path],
                  self.timeout)
        await self.enforce(stick, path)
        return path

    async def unmount(self, stick: Stick, path: str) -> None:
        await run(["umount", path], self.timeout)  # umount writes everything back before it returns
        try:
            os.rmdir(path)
        except OSError as e:
            log.info("mount point %s left behind: %s", path, e.strerror)


class Udisks(_Checked):
    """udisksctl: udisksd mounts under /media/<user>/, as polkit allows."""

    def __init__(self, settings: UsbSettings) -> None:
        self.timeout = settings.timeout

    async def mount(self, stick: Stick) -> str:
        if mounted_at(stick.node) is not None:  # left mounted by a crash or a stop mid-export
            await self.unmount(stick, "")
        argv = ["udisksctl", "mount", "--no-user-interaction", "--block-device", stick.node,
                "--filesystem-type", stick.fs_type, "--options", mount_options(stick.fs_type)]
        loop = asyncio.get_running_loop()
        deadline, missing_since = loop.time() + LOOKUP_WAIT, None
        while True:
            try:
                await run(argv, self.timeout)
                break
            except MountError as e:
                # udisksd hears the same udev event as edged and may not have the device yet
                if "looking up object" not in str(e) or loop.time() > deadline:
                    raise
            # Pulled while udisksd was still learning of it: once the kernel has taken its node
            # away for a while (a partition rescan re-makes it within milliseconds), no retry can
            # bring it back, and the cashier hears why at once instead of seconds later.
            if os.path.exists(stick.node):
                missing_since = None
            elif missing_since is None:
                missing_since = loop.time()
            elif loop.time() - missing_since >= GONE_AFTER:
                raise MountError(f"{stick.node} is gone")
            await asyncio.sleep(0.1)
        path = mounted_at(stick.node)  # not udisksctl's English text: a label may hold anything
        if path is None:
            raise MountError(f"udisksctl mounted {stick.node}, but it is not in /proc/self/mountinfo")
        await self.enforce(stick, path)
        return path

    async def unmount(self, stick: Stick, path: str) -> None:
        await run(["udisksctl", "unmount", "--no-user-interaction", "--block-device", stick.node], self.timeout)

    async def eject(self, stick: Stick) -> None:
        try:  # the drive stops; its light tells the cashier too
            await run(["udisksctl", "power-off", "--no-user-interaction", "--block-device", stick.disk],
                      self.timeout)
        except MountError as e:
            log.info("power-off of %s: %s (unmounted; safe to remove anyway)", stick.disk, e)


class Directory:
    """The simulated till: the stick is its directory; the export fsyncs everything itself."""

    async def mount(self, stick: Stick) -> str:
        if not os.path.isdir(stick.node):
            raise MountError(f"{stick.node} is not a directory")
        return stick.node

    async def unmount(self, stick: Stick, path: str) -> None:
        pass

    async def eject(self, stick: Stick) -> None:
        pass


def mounter(settings: UsbSettings) -> Mounter:
    if settings.mounter == "udisks2":
        return Udisks(settings)
    if settings.mounter == "mount":
        return MountCommand(settings)
    return Directory()
