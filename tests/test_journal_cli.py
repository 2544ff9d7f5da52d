"""`edged journal verify|dump` on real files, as a technician runs them."""
from __future__ import annotations

import json

from edged.cli import main
from edged.journal import frame as fr
from edged.journal.disk import RealDisk
from edged.journal.store import Entry, Store


def build(state_dir, n=30, segment_size=2000):
    store = Store(RealDisk(str(state_dir / "journal")), segment_size=segment_size, ranges={"r": (1, 100)})
    store.open()
    for i in range(n):
        store.append([[Entry("sale" if i % 3 else "stock", {"i": i, "name": "Käse"}, tx_id=f"t{i}",
                             counter="r" if i % 3 else None)]])
    store.close()
    return sorted((state_dir / "journal" / "segments").glob("*.seg"))


def test_verify_ok_and_damage_named_by_segment_and_offset(tmp_path, capsys):
    segs = build(tmp_path)
    assert main(["journal", "verify", "--state-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "30 records in" in out and "seq 1..30" in out and out.strip().endswith("OK")
    victim = segs[1]
    data = bytearray(victim.read_bytes())
    offset = fr.SEG_HEAD_SIZE + fr.HEAD_SIZE + 5  # inside the first record's payload
    data[offset] ^= 0x40
    victim.write_bytes(bytes(data))
    assert main(["journal", "verify", "--state-dir", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert f"{victim.name} offset {fr.SEG_HEAD_SIZE}: checksum mismatch" in out
    assert "PROBLEM" in out


def test_dump_readable_and_json_with_kind_filter(tmp_path, capsys):
    build(tmp_path, n=9)
    assert main(["journal", "dump", "--state-dir", str(tmp_path), "--kind", "stock", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["seq"] for r in lines] == [1, 4, 7]
    assert lines[0]["body"] == {"i": 0, "name": "Käse"} and len(lines[0]["chain"]) == 64
    assert main(["journal", "dump", "--state-dir", str(tmp_path), "--from", "8"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and "sale tx_id=t7 number=5" in out[0] and '"Käse"' in out[0]


def test_missing_journal_is_a_clear_error(tmp_path, capsys):
    try:
        main(["journal", "verify", "--state-dir", str(tmp_path)])
    except SystemExit as e:
        assert "no journal in" in str(e)
    else:
        raise AssertionError("expected an error")
