"""`edged bench import`: head office's verify and import of a stick, beside reading its bytes.

The stick is generated here, streamed to disk: signed edged-export/3 exports of
one till, byte for byte what a till writes (frames from journal/frame.py, a
day.close body as day/book.py builds it, signed with day/signing.py by a key
from identity.create, a manifest as day/export.build makes it). Then, in the
same run: the baseline (reading every file in 1 MiB chunks), `edged verify
--key` and `edged import --archive` (after `edged archive enroll`), each as a
child process whose wall time and peak RSS (wait4) are reported. It reports,
it does not judge: exit 0 whatever the figures, 1 when a command failed.
"""
from __future__ import annotations

import datetime
import hashlib
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from .. import __version__, identity
from ..day import cores
from ..day import export as ex
from ..day.signing import sign_day, sign_manifest
from ..journal import frame as fr
from .common import edged_argv, scratch

TILL = "bench-till"
FIRST_DAY = datetime.date(2026, 1, 5)
DAY_BYTES = 32 << 20  # a big till's day; a 1 GB stick holds 30 of them
MAX_DAYS = 30
CHUNK = 1 << 20
UID = 1000  # the POS app's uid: its records carry it as their tx_id's scope
_NAMES = (("Brot", 450), ("Käse", 800), ("Milch", 129), ("Äpfel 1 kg", 299), ("Kaffee", 649))


@dataclass
class Stick:
    root: str
    till_id: str
    public_key: str  # ed25519:<hex>, what head office enrolls
    days: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)  # export directories
    records: int = 0  # every record in every journal.seg, day.close records included
    size: int = 0  # bytes of every file on the stick


def _sale(seq: int, number: int, pad: str) -> bytes:
    """A sale's payload as the POS app appends it (tx_id, receipt number, its uid)."""
    name, price = _NAMES[seq % len(_NAMES)]
    qty = 1 + seq % 3
    body = {"receipt": number, "total": price * qty, "lines": [[name, qty, price]], "pad": pad}
    return fr.payload_of("sale", body, f"pos-{seq}", "receipt", number, UID)


MIN_RECORD = 160  # bytes: a sale's frame without padding is about this


def _pad(record_bytes: int, typical: int) -> str:
    """Padding that brings the frame of sale `typical` to record_bytes (the others within a few bytes)."""
    pad = ""
    for _ in range(3):  # the str header grows with the padding: settle it
        size = len(_sale(typical, typical, pad)) + fr.HEAD_SIZE
        pad = "x" * max(0, len(pad) + record_bytes - size)
    return pad


def _write_day(folder: str, day: str, first_seq: int, chain_before: bytes, records: int, first_number: int,
               pad: str, ident: identity.Identity) -> tuple[int, int, bytes]:
    """One export, journal.seg streamed to disk; (records written, seq after it, chain after it)."""
    os.makedirs(folder)
    sha, size = hashlib.sha256(), 0
    fd = os.open(os.path.join(folder, "journal.seg"), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        def put(data: bytes) -> None:
            nonlocal size
            sha.update(data)
            size += len(data)
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]

        put(fr.encode_segment_head(first_seq, chain_before))
        start = datetime.datetime.fromisoformat(day).replace(hour=8, tzinfo=datetime.UTC)
        ts0, step = int(start.timestamp() * 1e6), 12 * 3600 * 10 ** 6 // max(records, 1)
        chain, seq, buf, held = chain_before, first_seq, [], 0
        for i in range(records):
            payload = _sale(seq, first_number + i, pad)
            frame, chain = fr.encode(seq, ts0 + i * step, payload, seq, seq, chain)
            buf.append(frame)
            held += len(frame)
            seq += 1
            if held >= CHUNK:
                put(b"".join(buf))
                buf, held = [], 0
        numbers = {"receipt": [first_number, first_number + records - 1]} if records else {}
        body: dict[str, Any] = {"business_day": day, "till_id": TILL, "first_seq": first_seq, "last_seq": seq - 1,
                "counts": {"sale": records} if records else {}, "numbers": numbers, "chain": chain,
                "closed_at": start.timestamp() + 13 * 3600, "client": "bench", "pid": os.getpid(), "uid": 0}
        sign_day(body, ident)
        payload = fr.payload_of("day.close", body, f"day.close:{day}", None, None)
        frame, after = fr.encode(seq, ts0 + 13 * 3600 * 10 ** 6, payload, seq, seq, chain)
        buf.append(frame)
        put(b"".join(buf))
    finally:
        os.close(fd)
    manifest = {
        "format": ex.FORMAT_SIGNED, "till_id": TILL, "business_day": day, "first_seq": first_seq,
        "last_seq": seq, "day_close_seq": seq, "chain_before": chain_before.hex(), "chain_after": after.hex(),
        "counts": {**body["counts"], "day.close": 1}, "numbers": numbers, "exported_at": int(time.time()),
        "edged_version": __version__, "files": {"journal.seg": {"size": size, "sha256": sha.hexdigest()}},
    }
    sign_manifest(manifest, ident)
    with open(os.path.join(folder, "manifest.json"), "xb") as f:
        f.write(ex.manifest_bytes(manifest))
    return records + 1, seq + 1, after


def generate(root: str, total_bytes: int, record_bytes: int, state_dir: str) -> Stick:
    """A stick of about total_bytes under root: signed exports of TILL, one per day, in seq order."""
    ident = identity.create(state_dir, 1)
    stick = Stick(root, TILL, ident.public_text)
    days = max(3, min(MAX_DAYS, -(-total_bytes // DAY_BYTES)))  # 3 at least: days must link up
    per_day = max(1, total_bytes // days // record_bytes)
    pad = _pad(record_bytes, days * per_day // 2)
    seq, chain, number = 1, fr.GENESIS, 1
    for d in range(days):
        day = (FIRST_DAY + datetime.timedelta(days=d)).isoformat()
        folder = os.path.join(root, ex.TOP, TILL, ex.day_dir(day))
        written, seq, chain = _write_day(folder, day, seq, chain, per_day, number, pad, ident)
        number += per_day
        stick.days.append(day)
        stick.exports.append(folder)
        stick.records += written
        stick.size += sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder))
    return stick


def files_of(root: str) -> list[str]:
    return sorted(os.path.join(base, name) for base, _dirs, names in os.walk(root) for name in names)


def read_all(paths: list[str]) -> int:
    """The baseline: every byte of every file read once, in 1 MiB chunks; the bytes read."""
    buf, total = bytearray(CHUNK), 0
    for path in paths:
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(buf):
                total += n
    return total


def drop_caches() -> str | None:
    """Empty the page cache so every step reads from disk; why not (None: done)."""
    os.sync()  # drop_caches drops only clean pages
    if os.geteuid() != 0:
        return "not root"
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
    except OSError as e:
        return f"/proc/sys/vm/drop_caches: {e.strerror}"
    return None


@dataclass
class Child:
    argv: list[str]
    wall: float
    max_rss: int  # bytes
    returncode: int
    output: str


def child(args: list[str], scratch_dir: str) -> Child:
    """`edged ARGS` as a child process: wall time, peak RSS (from wait4: the largest of it and the workers it
    waited for), exit code and output."""
    argv = edged_argv(*args)
    with tempfile.TemporaryFile(dir=scratch_dir) as out:  # a file, not a pipe: nothing to drain while waiting
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read().decode(errors="replace")
    return Child(argv, wall, usage.ru_maxrss * 1024, proc.returncode, text)


def _failed(c: Child) -> int:
    print(f"  FAILED (exit {c.returncode}): {' '.join(c.argv[1:])}")
    for line in c.output.splitlines()[-40:]:
        print(f"    {line}")
    return 1


def _line(what: str, seconds: float, stick: Stick, extra: str = "") -> str:
    return (f"  {what:<44} {seconds:8.3f} s {stick.records / seconds:>12,.0f} records/s "
            f"{stick.size / seconds / 1e6:>8,.0f} MB/s{extra}")


def run(megabytes: int, record_bytes: int, where: str | None) -> int:
    with scratch(where) as base:
        t0 = time.perf_counter()
        try:
            stick = generate(os.path.join(base, "stick"), megabytes << 20, record_bytes,
                             os.path.join(base, "state"))
        except OSError as e:  # a full disk, say: one line
            print(f"edged bench import: generating the stick in {base} failed: {e.strerror or e}")
            return 1
        print(f"edged bench import: a {stick.size / 1e6:,.0f} MB stick, {len(stick.exports)} signed exports "
              f"({ex.FORMAT_SIGNED}) of till {stick.till_id}, {stick.records:,} records of "
              f"{stick.size / stick.records:,.0f} B on average, generated in {time.perf_counter() - t0:.1f} s "
              f"under {base}")
        why = drop_caches()
        print("  page cache dropped before each step (sync; echo 3 > /proc/sys/vm/drop_caches)" if why is None else
              f"  page cache NOT dropped ({why}): every step reads what the generator left in memory")
        t0 = time.perf_counter()
        read = read_all(files_of(stick.root))
        plain = time.perf_counter() - t0
        if read != stick.size:
            print(f"  the stick's files hold {read:,} bytes, the generator wrote {stick.size:,}")
            return 1
        print(_line("read the same files, 1 MiB chunks (baseline)", plain, stick))
        start = child(["--version"], base)
        if start.returncode:
            return _failed(start)
        drop_caches()
        verify = child(["verify", "--key", f"{stick.till_id}={stick.public_key}", stick.root], base)
        if verify.returncode:
            return _failed(verify)
        print(_line("edged verify --key (signatures checked)", verify.wall, stick,
                    f"  peak RSS {verify.max_rss / 1e6:,.0f} MB  {verify.wall / plain:,.1f}x the baseline"))
        archive = os.path.join(base, "archive")
        enroll = child(["archive", "enroll", archive, stick.till_id, stick.public_key], base)
        if enroll.returncode:
            return _failed(enroll)
        drop_caches()
        imported = child(["import", "--archive", archive, stick.root], base)
        if imported.returncode:
            return _failed(imported)
        print(_line("edged import --archive (enrolled key)", imported.wall, stick,
                    f"  peak RSS {imported.max_rss / 1e6:,.0f} MB  {imported.wall / plain:,.1f}x the baseline"))
        print(f"    import said: {(imported.output.strip().splitlines() or [''])[-1]}")
        n = cores.workers()
        print(f"  on {n} core{'s' if n > 1 else ''}: verify checks the exports side by side, "
              "import checks in a worker while it archives (day/cores.py); peak RSS is the largest process's")
        print(f"  both include starting Python and edged: {start.wall:.2f} s (`edged --version`, "
              f"peak RSS {start.max_rss / 1e6:,.0f} MB)")
        print(f"  targets: verify >= 300,000 records/s including signature checks "
              f"(here {stick.records / verify.wall:,.0f}); import >= 100,000 records/s "
              f"(here {stick.records / imported.wall:,.0f}); peak RSS < 100 MB per process for a 1 GB stick "
              f"(here {max(verify.max_rss, imported.max_rss) / 1e6:,.0f} MB for {stick.size / 1e6:,.0f} MB)")
        return 0
