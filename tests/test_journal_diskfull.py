"""A really full disk: the journal on a small ext4 filesystem on a loop device (root, as in CI)."""
from __future__ import annotations

import os
import subprocess

import pytest

from edged.journal.disk import RealDisk
from edged.journal.store import Entry, JournalError, Store


def _mount_small_ext4(where) -> str:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a loop device")
    image, mnt = where / "fs.img", where / "mnt"
    mnt.mkdir()
    with open(image, "wb") as f:
        f.truncate(8 << 20)
    made = subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mkfs.ext4 failed: {made.stderr.strip()}")
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    return str(mnt)


def test_disk_full_refuses_cleanly_keeps_every_acked_record_and_recovers_when_space_is_freed(short_dir):
    mnt = _mount_small_ext4(short_dir)
    try:
        root = os.path.join(mnt, "journal")
        store = Store(RealDisk(root), segment_size=1 << 20)
        store.open()
        filler = os.path.join(mnt, "filler")
        with open(filler, "wb") as f:  # leave about 300 KiB
            free = os.statvfs(mnt).f_bavail * os.statvfs(mnt).f_frsize
            f.write(b"\0" * max(free - (300 << 10), 0))
            f.flush()
            os.fsync(f.fileno())
        acked, refused = [], None
        for i in range(2000):
            result = store.append([[Entry("sale", {"i": i, "pad": "x" * 4000})]])[0]
            if isinstance(result, JournalError):
                refused = result
                break
            acked.append(result[0].seq)
        assert refused is not None, "the disk never filled up"
        assert refused.code == "journal_unavailable" and "disk full" in refused.message
        assert store.read_only is None  # not fatal: the write was cut back
        assert len(acked) > 10 and acked == list(range(1, len(acked) + 1))
        os.unlink(filler)
        again = store.append([[Entry("sale", {"after": True})]])[0]
        assert not isinstance(again, JournalError), again
        assert again[0].seq == len(acked) + 1
        store.close()

        reopened = Store(RealDisk(root), segment_size=1 << 20)
        reopened.open()
        assert not reopened.problems
        records = list(reopened.records(1))
        assert [r.seq for r in records] == list(range(1, len(acked) + 2))
        assert [r.body["i"] for r in records[:-1]] == list(range(len(acked)))
        reopened.close()
    finally:
        subprocess.run(["umount", mnt], check=False)
