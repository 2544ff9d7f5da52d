"""`edged bench import` measures genuine exports: what its generator writes is what a till writes."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from edged import identity
from edged.bench import import_ as bench_import
from edged.day import export as ex
from edged.day.signing import day_problem, manifest_problem
from edged.journal import frame as fr
from edged.journal import kinds


def _check_export(folder: Path, public: bytes, seq: int, chain: bytes) -> tuple[int, bytes, int]:
    """Every check a verifier makes, with edged's own code; (next seq, chain after, records)."""
    assert sorted(os.listdir(folder)) == ["journal.seg", "manifest.json"]  # never the private key
    raw = (folder / "manifest.json").read_bytes()
    m = json.loads(raw)
    assert raw == ex.manifest_bytes(m)
    assert manifest_problem(m, public) is None
    assert m["format"] == ex.FORMAT_SIGNED and m["till_id"] == bench_import.TILL
    assert m["key"] == {"epoch": 1, "public_key": identity.public_text(public),
                        "fingerprint": identity.fingerprint(public)}
    seg = (folder / "journal.seg").read_bytes()
    assert m["files"] == {"journal.seg": {"size": len(seg), "sha256": hashlib.sha256(seg).hexdigest()}}
    assert fr.decode_segment_head(seg) == (seq, chain) == (m["first_seq"], bytes.fromhex(m["chain_before"]))
    pos, records, before = fr.SEG_HEAD_SIZE, [], chain
    while pos < len(seg):
        rec = fr.decode(seg, pos, chain)  # CRC and chain link
        assert rec.seq == seq
        records.append(rec)
        before, chain, seq, pos = chain, rec.chain, seq + 1, pos + rec.size
    assert pos == len(seg)
    close = records[-1]
    assert close.kind == "day.close" and kinds.problem(close) is None
    assert all(r.kind == "sale" and r.tx_uid == bench_import.UID for r in records[:-1])
    body = close.body
    assert day_problem(body, public) is None
    assert (body["first_seq"], body["last_seq"], body["chain"]) == (m["first_seq"], close.seq - 1, before)
    assert body["counts"] == {"sale": len(records) - 1} and body["business_day"] == m["business_day"]
    numbers = [r.number for r in records[:-1]]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
    assert body["numbers"] == {"receipt": [numbers[0], numbers[-1]]}
    assert m["counts"] == dict(collections.Counter(r.kind for r in records))
    assert (m["last_seq"], m["day_close_seq"], m["chain_after"]) == (close.seq, close.seq, chain.hex())
    # The till's own export code makes the same segment and manifest of these frames.
    files, built = ex.build({**body, "seq": close.seq}, seg[fr.SEG_HEAD_SIZE:], bytes.fromhex(m["chain_before"]))
    assert files == {"journal.seg": seg}
    unsigned = {k: v for k, v in m.items() if k not in ("key", "signature")}
    assert {**built, "format": ex.FORMAT_SIGNED, "exported_at": m["exported_at"]} == unsigned
    return seq, chain, len(records)


def test_generated_stick_is_genuine(tmp_path):
    stick = bench_import.generate(str(tmp_path / "stick"), 300_000, 200, str(tmp_path / "state"))
    public = identity.parse_public(stick.public_key)
    assert identity.load(str(tmp_path / "state")).public == public
    assert len(stick.exports) == 3 and stick.days == ["2026-01-05", "2026-01-06", "2026-01-07"]
    assert [Path(e) for e in stick.exports] == sorted((tmp_path / "stick" / "EDGED" / bench_import.TILL).iterdir())
    seq, chain, records = 1, fr.GENESIS, 0
    for folder in stick.exports:  # each day continues the one before: seq and chain
        seq, chain, n = _check_export(Path(folder), public, seq, chain)
        records += n
    assert stick.records == records == seq - 1
    files = bench_import.files_of(stick.root)
    assert len(files) == 6 and stick.size == sum(map(os.path.getsize, files)) == bench_import.read_all(files)
    assert 250_000 < stick.size < 350_000


def test_record_size_follows_the_option(tmp_path):
    for size in (bench_import.MIN_RECORD, 1000):
        stick = bench_import.generate(str(tmp_path / f"s{size}"), 400_000, size, str(tmp_path / f"k{size}"))
        assert abs(stick.size / stick.records - size) < size * 0.1


def test_bench_import_runs_and_cleans_up(tmp_path):
    """The whole harness: generator, baseline, verify --key, enroll, import (needs head office's
    edged-export/3 support); it reports and leaves nothing behind."""
    out = subprocess.run([sys.executable, "-m", "edged", "bench", "import", "--megabytes", "1", "--dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    for what in ("(baseline)", "edged verify --key", "edged import --archive", "peak RSS", "targets:"):
        assert what in out.stdout, out.stdout
    assert list(tmp_path.iterdir()) == []
