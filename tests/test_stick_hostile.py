"""A hostile-stick corpus: every way the review found (and more) to get a forged, altered, relabelled or
malformed export past head office, each made from genuine signed exports by tests/sticks.py.

Each hostile export goes onto a stick beside a genuine one and is imported into a copy of one archive
(till-a's days 1 and 3 archived: day 2 is a gap to be filled). Every one must be refused on one line
that says why, the archive must be unchanged but for the genuine export, which is imported."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sticks
from edged.day import archive, trust, verify
from edged.day.backend import Db
from edged.journal import frame as fr

D2 = "2026-03-02"
FORGER, RETIRED, B_FORGER = sticks.new_key(), sticks.new_key(), sticks.new_key()


@pytest.fixture(scope="module")
def base():
    """Genuine exports, and an archive holding till-a's days 1 and 3 with the tills' keys enrolled (and a
    key enrolled for till-a then retired, and the forger's key enrolled for a till-x of its own)."""
    tmp, short = Path(tempfile.mkdtemp(prefix="edged-stick-")), Path(tempfile.mkdtemp(prefix="e-", dir="/tmp"))
    g = sticks.genuine(tmp / "genuine", short)
    arc = tmp / "archive"
    _fill(g, arc)
    yield g, arc
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(short, ignore_errors=True)


def _fill(g: sticks.Genuine, where: str | Path) -> None:
    db = archive.open_archive(where)
    trust.enroll(db, "till-a", g.keys["till-a"])
    trust.enroll(db, "till-b", g.keys["till-b"])
    trust.enroll(db, "till-a", RETIRED.public_text)
    trust.retire(db, RETIRED.fingerprint)
    trust.enroll(db, "till-x", FORGER.public_text)
    trust.enroll(db, "till-b", B_FORGER.public_text)
    out = archive.import_exports(db, [g.stick("till-a", sticks.DAYS[0]), g.stick("till-a", sticks.DAYS[2])])
    assert not out.refused and out.added == 4 + 7, out
    db.close()


@pytest.fixture(scope="module")
def base_pg(base, postgres):
    """The same archive in PostgreSQL: the template each test's database is copied from."""
    g, _ = base
    url = postgres.create_database("hostile_base")
    _fill(g, url)
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def copied(request, base, tmp_path):
    """A copy of the base archive for one test, in SQLite and in PostgreSQL (one code path, both refuse)."""
    _, arc = base
    if request.param == "sqlite":
        shutil.copytree(arc, tmp_path / "archive")
        return str(tmp_path / "archive")
    return request.getfixturevalue("postgres").create_database(f"hostile{next(_copies)}",
                                                                template=request.getfixturevalue("base_pg"))


_copies = iter(range(1, 1_000_000))


def dump(db: Db) -> list:
    return [db.execute("SELECT * FROM records ORDER BY till, seq").fetchall(),
            db.execute("SELECT till, business_day, first_seq, last_seq, fingerprint, chain_before FROM days "
                       "ORDER BY 1, 2").fetchall(),
            db.execute("SELECT * FROM excluded ORDER BY 1, 2").fetchall(),
            db.execute("SELECT fingerprint, till, public_key, retired_at IS NULL FROM keys ORDER BY 1").fetchall()]


def _json(e: Path, text: str) -> None:
    (e / "manifest.json").write_text(text)


def _set(e: Path, **fields) -> None:
    m = sticks.manifest(e)
    m.update(fields)
    sticks.write_manifest(e, m)


def _files(e: Path, files: dict) -> None:
    _set(e, files=files)


def _alter_sales(recs):
    return [fr.Record(**{**{s: getattr(r, s) for s in fr.Record.__slots__},
                         "body": {**r.body, "total": "0,01 EUR"} if r.kind == "sale" else r.body}) for r in recs]


def _drop_sale(recs):
    out = [r for r in recs if not (r.kind == "sale" and r.body["i"] == 0)]
    for n, r in enumerate(out):
        r.seq = recs[0].seq + n
    return out


def _unsigned_v1(e: Path) -> None:
    m = sticks.manifest(e)
    del m["key"], m["signature"]
    m["format"] = "edged-export/1"
    sticks.write_manifest(e, m)


def _flip(e: Path, name: str, at: int) -> None:
    data = bytearray((e / name).read_bytes())
    data[at] ^= 0x20
    (e / name).write_bytes(bytes(data))


def _symlink(e: Path, name: str, to: str) -> None:
    os.unlink(e / name)
    os.symlink(to, e / name)


def _fifo(e: Path, name: str) -> None:
    os.unlink(e / name)
    os.mkfifo(e / name)


def _device(e: Path, name: str) -> None:
    os.unlink(e / name)
    os.mknod(e / name, 0o600 | __import__("stat").S_IFCHR, os.makedev(1, 5))  # /dev/zero's numbers


def _relabel_moved(e: Path) -> None:
    _set(e, till_id="till-b")
    dst = e.parent.parent / "till-b" / e.name
    dst.parent.mkdir()
    os.rename(e, dst)


def _key_swapped(e: Path, g) -> None:
    m = sticks.manifest(e)
    raw = bytes.fromhex(g.keys["till-b"][8:])
    m.update(till_id="till-b", key={"epoch": 1, "public_key": g.keys["till-b"], "fingerprint":
                                    __import__("edged.identity", fromlist=["x"]).fingerprint(raw)})
    sticks.write_manifest(e, m)


def _two_versions(e: Path) -> None:
    other = e.parent / "copy-20260302"
    shutil.copytree(e, other)
    sticks.rechain(other, _alter_sales, FORGER)


def _extra_run(e: Path) -> None:
    m = sticks.manifest(e)
    m["excluded"] = {"kinds": ["sale"], "counts": {"sale": 1}, "runs": [[1, "x", "zz"]]}
    sticks.write_manifest(e, m)


def _unsigned_close(e: Path) -> None:  # a till-x of the forger's own, /3 but the day never signed
    sticks.rechain(e, lambda r: r, FORGER, sign_day=False, till="till-x")
    os.rename(e, e.parent.parent / "till-x" / e.name) if (e.parent.parent / "till-x").is_dir() else None


def _truncate(e: Path, n: int) -> None:
    data = (e / "journal.seg").read_bytes()
    (e / "journal.seg").write_bytes(data[:n] if n >= 0 else data[:len(data) + n])


def _seg_with_manifest_fixed(e: Path, data: bytes) -> None:
    (e / "journal.seg").write_bytes(data)
    m = sticks.manifest(e)
    sticks.refresh_files(e, m)
    sticks.write_manifest(e, m)


def _reorder(e: Path) -> None:
    head, _, raw = sticks.frames(e)
    (e / "journal.seg").write_bytes(head + raw[1] + raw[0] + b"".join(raw[2:]))


def _duplicate(e: Path) -> None:
    head, _, raw = sticks.frames(e)
    (e / "journal.seg").write_bytes(head + raw[0] + b"".join(raw))


def _header_seq(e: Path) -> None:
    head, _, raw = sticks.frames(e)
    first, chain = fr.decode_segment_head(head)
    (e / "journal.seg").write_bytes(fr.encode_segment_head(first + 1, chain) + b"".join(raw))


def _crc_only(e: Path) -> None:
    head, recs, raw = sticks.frames(e)
    first = bytearray(raw[0])
    first[68] ^= 0xff
    (e / "journal.seg").write_bytes(head + bytes(first) + b"".join(raw[1:]))


HOSTILE = {  # name: (how, fragment of the refusal)
    "re-chained altered sales": (lambda e, g: sticks.rechain(e, _alter_sales), "signature does not match"),
    "re-chained, re-signed by a forger": (lambda e, g: sticks.rechain(e, _alter_sales, sticks.new_key()),
                                          "which is not enrolled for till-a"),
    "a sale removed, re-signed by a forger": (lambda e, g: sticks.rechain(e, _drop_sale, sticks.new_key()),
                                              "not enrolled"),
    "signed by another till's key": (lambda e, g: sticks.rechain(e, _alter_sales, B_FORGER),
                                     "belongs to till till-b, not till-a"),
    "signed by a retired key": (lambda e, g: sticks.rechain(e, _alter_sales, RETIRED), "retired on"),
    "relabelled till-b": (lambda e, g: _set(e, till_id="till-b"), "belongs to till till-a, not till-b"),
    "relabelled and moved to till-b": (lambda e, g: _relabel_moved(e), "belongs to till till-a, not till-b"),
    "relabelled, manifest re-signed by a till-b key": (
        lambda e, g: sticks.write_manifest(e, {**sticks.manifest(e), "till_id": "till-b"}, B_FORGER),
        "the day.close record is signed by key"),
    "key swapped for till-b's": (_key_swapped, "signature does not match"),
    "day.close unsigned": (lambda e, g: _unsigned_close(e), "is not signed"),
    "unsigned edged-export/1": (lambda e, g: _unsigned_v1(e), "--allow-unsigned"),
    "two versions of one day": (lambda e, g: _two_versions(e), "two different exports of till-a 2026-03-02"),
    "absolute file name": (lambda e, g: _files(e, {"/dev/zero": {"size": 1 << 40, "sha256": "0" * 64}}),
                           "not a plain file name"),
    "../ file name": (lambda e, g: _files(e, {"../../../../etc/passwd": {"size": 1, "sha256": "0" * 64}}),
                      "not a plain file name"),
    "'.' as a file name": (lambda e, g: _files(e, {".": {"size": 1, "sha256": "0" * 64}}), "not a plain file name"),
    "'..' as a file name": (lambda e, g: _files(e, {"..": {"size": 1, "sha256": "0" * 64}}), "not a plain file name"),
    "hidden file name": (lambda e, g: _files(e, {".journal.seg": {"size": 1, "sha256": "0" * 64}}),
                         "not a plain file name"),
    "file name with a slash": (lambda e, g: _files(e, {"a/journal.seg": {"size": 1, "sha256": "0" * 64}}),
                               "not a plain file name"),
    "manifest.json a symlink": (lambda e, g: _symlink(e, "manifest.json", str(g.export("till-a", D2) /
                                                                               "manifest.json")),
                                "manifest.json: a symbolic link"),
    "journal.seg a symlink": (lambda e, g: _symlink(e, "journal.seg", str(g.export("till-a", D2) / "journal.seg")),
                              "journal.seg: a symbolic link"),
    "journal.seg a FIFO": (lambda e, g: _fifo(e, "journal.seg"), "journal.seg: a FIFO"),
    "journal.seg a device": (lambda e, g: _device(e, "journal.seg"), "journal.seg: a device node"),
    "manifest.json a FIFO": (lambda e, g: _fifo(e, "manifest.json"), "manifest.json: a FIFO"),
    "manifest.json a device": (lambda e, g: _device(e, "manifest.json"), "manifest.json: a device node"),
    "export directory a symlink": (lambda e, g: (shutil.rmtree(e), os.symlink(g.export("till-a", D2), e)),
                                   "20260302 on the way to the export directory: a symbolic link"),
    "journal.seg a directory": (lambda e, g: (os.unlink(e / "journal.seg"), os.mkdir(e / "journal.seg")),
                                "journal.seg: a directory"),
    "journal.seg missing": (lambda e, g: os.unlink(e / "journal.seg"), "journal.seg: missing"),
    "not JSON": (lambda e, g: _json(e, "{not json"), "manifest.json: Expecting"),
    "a JSON list": (lambda e, g: _json(e, "[1, 2]"), "a list, not a JSON object"),
    "empty manifest": (lambda e, g: _json(e, ""), "manifest.json: Expecting value"),
    "not UTF-8": (lambda e, g: (e / "manifest.json").write_bytes(b'{"format": "\xff"}'), "not UTF-8"),
    "duplicate key": (lambda e, g: _json(e, (e / "manifest.json").read_text().replace(
        '"till_id"', '"till_id": "till-b", "till_id"')), "appears twice"),
    "NaN": (lambda e, g: _json(e, (e / "manifest.json").read_text().replace('"first_seq": ', '"first_seq": NaN, "x": ')),
            "NaN is not a number"),
    "Infinity": (lambda e, g: _json(e, (e / "manifest.json").read_text().replace('"last_seq": ', '"x": -Infinity, "last_seq": ')),
                 "-Infinity is not a number"),
    "float where an int is due": (lambda e, g: _set(e, first_seq=5.0), "manifest.first_seq is float"),
    "string where an int is due": (lambda e, g: _set(e, last_seq="9"), "manifest.last_seq is str"),
    "bool where an int is due": (lambda e, g: _set(e, counts={"sale": True}), "not an integer"),
    "huge number": (lambda e, g: _set(e, first_seq=10 ** 30), "more than 18 digits"),
    "deep nesting": (lambda e, g: _json(e, "[" * 100000 + "]" * 100000), "nested too deeply"),
    "missing files": (lambda e, g: _set(e, files=None), "manifest.files is nil"),
    "missing till_id": (lambda e, g: (lambda m: (m.pop("till_id"), sticks.write_manifest(e, m)))(sticks.manifest(e)),
                        "manifest.till_id is missing"),
    "till_id with a newline": (lambda e, g: _set(e, till_id="till-a\nREFUSED nothing"), "not a printable name"),
    "impossible date": (lambda e, g: _set(e, business_day="2026-02-30"), "not a date"),
    "unknown format": (lambda e, g: _set(e, format="edged-export/9"), "not one of edged-export/1"),
    "negative size": (lambda e, g: _files(e, {"journal.seg": {"size": -1, "sha256": "0" * 64}}), "below 0"),
    "sha256 not hex": (lambda e, g: _files(e, {"journal.seg": {"size": 1, "sha256": "z" * 64}}), "lowercase hex"),
    "malformed left-out runs": (lambda e, g: _extra_run(e), "manifest.excluded.runs[0][1] is str"),
    "key fingerprint not its key's": (lambda e, g: _set(e, key={**sticks.manifest(e)["key"], "fingerprint":
                                                                "sha256:" + "0" * 32}), "fingerprint is not"),
    "manifest over 1 MiB": (lambda e, g: _json(e, (e / "manifest.json").read_text() + " " * (1 << 20)),
                            "more than the 1048576 allowed"),
    "17 files": (lambda e, g: _files(e, {f"f{i}": {"size": 1, "sha256": "0" * 64} for i in range(16)}
                                     | {"journal.seg": sticks.manifest(e)["files"]["journal.seg"]}),
                 "at most 16 files"),
    "journal.seg truncated": (lambda e, g: _truncate(e, -10), "the manifest says"),
    "journal.seg extended": (lambda e, g: (e / "journal.seg").open("ab").write(b"\0" * 100), "the manifest says"),
    "truncated, size fixed": (lambda e, g: _seg_with_manifest_fixed(e, (e / "journal.seg").read_bytes()[:-10]),
                              "signature does not match"),
    "only the header": (lambda e, g: _truncate(e, fr.SEG_HEAD_SIZE), "the manifest says"),
    "byte flipped in a sale": (lambda e, g: _flip(e, "journal.seg", fr.SEG_HEAD_SIZE + 80), "chain link mismatch"),
    "CRC flipped": (lambda e, g: _crc_only(e), "journal.seg: SHA-256 differs"),
    "records reordered": (lambda e, g: _reorder(e), "records 5..5 missing"),
    "a record twice": (lambda e, g: _duplicate(e), "the manifest says"),
    "header seq changed": (lambda e, g: _header_seq(e), "repeated or reordered"),
    "an extra file": (lambda e, g: (e / "evil.sh").write_text("rm -rf /"), "evil.sh: not in the manifest"),
    "an extra symlink": (lambda e, g: os.symlink("/etc/shadow", e / "x"), "x: not in the manifest"),
    "chain_after changed": (lambda e, g: _set(e, chain_after="0" * 64), "signature does not match"),
}


def test_the_corpus_is_big_enough():
    assert len(HOSTILE) >= 40


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_export_refused_beside_a_genuine_one(base, copied, name, tmp_path):
    g, arc = base
    how, fragment = HOSTILE[name]
    stick = tmp_path / "stick"
    sticks.copy_export(g.export("till-a", sticks.DAYS[3]), stick)  # the genuine one beside it
    how(sticks.copy_export(g.export("till-a", D2), stick), g)
    db = archive.open_archive(copied)
    before = dump(db)
    out = archive.import_exports(db, [stick])
    assert out.imported == ["till-a 2026-03-04: 8 records added, 0 already archived, signed by "
                            f"{sticks.manifest(g.export('till-a', sticks.DAYS[3]))['key']['fingerprint']} (epoch 1)"]
    assert len(out.refused) == (2 if name == "two versions of one day" else 1), out.refused
    assert all("\n" not in line and "Traceback" not in line for line in out.refused)
    assert fragment in out.refused[0], out.refused
    assert "20260302" in out.refused[0] or "till-x" in out.refused[0]  # names the export
    after = dump(db)
    d4 = [r for r in after[0] if r[5] == sticks.DAYS[3]]
    assert [r for r in after[0] if r not in d4] == before[0] and len(d4) == 8
    assert [d for d in after[1] if d[1] != sticks.DAYS[3]] == before[1] and after[2:] == before[2:]


def test_forged_day_in_a_gap_must_link_both_ways(base, copied, tmp_path):
    """A re-chained day 2 starts where day 1 ends but cannot end where day 3 begins: the archive's link
    after the gap refuses it (checked directly: as an import, --allow-unsigned refuses it sooner,
    since day 1 before it was signed); the genuine day 2 then goes in."""
    g, arc = base
    stick = tmp_path / "stick"
    e = sticks.copy_export(g.export("till-a", D2), stick)
    forged = sticks.rechain(e, _alter_sales, sign_day=False)
    _unsigned_v1(e)
    db = archive.open_archive(copied)
    before = dump(db)
    with pytest.raises(archive._Conflict, match="does not follow on from its last record"):
        archive._next_links(db, "till-a", forged)
    out = archive.import_exports(db, [stick], allow_unsigned=True)
    assert len(out.refused) == 1 and "once a till signs its days, every later day must be signed" in out.refused[0]
    assert dump(db) == before
    out = archive.import_exports(db, [g.stick("till-a", D2)])
    assert not out.refused and out.added == 6
    assert archive.status(db)["till-a"]["gaps"] == []


def _pre_upgrade(e: Path) -> None:
    """The export as edged wrote it before tills signed: day.close without a signature, manifest /1."""
    sticks.rechain(e, lambda recs: recs, sign_day=False)
    _unsigned_v1(e)


def test_unsigned_exports_with_allow_unsigned_are_reported_so(base, tmp_path):
    g, _ = base
    stick = tmp_path / "stick"
    _pre_upgrade(sticks.copy_export(g.export("till-a", sticks.DAYS[0]), stick))
    db = archive.open_archive(tmp_path / "archive")  # a till none of whose days were signed yet
    assert archive.import_exports(db, [stick]).refused  # not without the flag
    out = archive.import_exports(db, [stick], allow_unsigned=True)
    assert out.imported == ["till-a 2026-03-01: 4 records added, 0 already archived (unsigned, --allow-unsigned)"]
    assert db.execute("SELECT fingerprint FROM days WHERE business_day=?", (sticks.DAYS[0],)).fetchone() == ("unsigned",)


def test_unsigned_day_after_signed_days_is_refused_even_when_allowed(base, copied, tmp_path):
    """The review's attack: an unsigned forgery of day 4 after signed days would take its seqs for good."""
    g, arc = base
    stick = tmp_path / "stick"
    e = sticks.copy_export(g.export("till-a", sticks.DAYS[3]), stick)
    sticks.rechain(e, _alter_sales, sign_day=False)
    _unsigned_v1(e)
    db = archive.open_archive(copied)
    before = dump(db)
    out = archive.import_exports(db, [stick], allow_unsigned=True)
    assert len(out.refused) == 1 and "which the till signed" in out.refused[0], out.refused
    assert dump(db) == before
    assert not archive.import_exports(db, [g.stick("till-a", sticks.DAYS[3])]).refused


def test_a_signed_day_in_an_unsigned_export_is_refused(base, tmp_path):
    g, _ = base
    stick = tmp_path / "stick"
    _unsigned_v1(sticks.copy_export(g.export("till-a", sticks.DAYS[0]), stick))
    db = archive.open_archive(tmp_path / "archive")
    out = archive.import_exports(db, [stick], allow_unsigned=True)
    assert len(out.refused) == 1 and "signed but the manifest is not" in out.refused[0]


def test_a_day_archived_once_keeps_its_range(base, tmp_path):
    """Another export under an archived day's name (the review: it replaced the day's row)."""
    g, arc = base
    stick = tmp_path / "stick"
    e = sticks.copy_export(g.export("till-a", D2), stick)
    m = sticks.manifest(e)
    shutil.copytree(arc, tmp_path / "archive")
    db = archive.open_archive(tmp_path / "archive")
    with pytest.raises(archive._Conflict, match="is archived as records 1..4"):
        archive._same_day(db, "till-a", sticks.DAYS[0], m)


def test_seqs_outside_the_manifest_never_reach_the_database(base, tmp_path):
    """The review's crash: a segment of seq 2**63 (SQLite's integers end below) beside a genuine day."""
    g, arc = base
    stick = tmp_path / "stick"
    e = sticks.copy_export(g.export("till-a", D2), stick)
    head, recs, _ = sticks.frames(e)
    big = 2 ** 63
    seg = fr.encode_segment_head(big, bytes(32))
    raw, _chain = fr.encode(big, recs[0].ts, fr.payload_of("sale", {}, None, None, None), big, big, bytes(32))
    (e / "journal.seg").write_bytes(seg + raw)
    sticks.copy_export(g.export("till-a", sticks.DAYS[3]), stick)
    shutil.copytree(arc, tmp_path / "archive")
    db = archive.open_archive(tmp_path / "archive")
    out = archive.import_exports(db, [stick])
    assert len(out.refused) == 1 and "Traceback" not in out.refused[0] and "20260302" in out.refused[0]
    assert len(out.imported) == 1 and sticks.DAYS[3] in out.imported[0]


def test_what_a_stick_cannot_make_head_office_hold(base, tmp_path):
    """Unknown manifest members and oversized lists are refused; directories nested past any export
    are not walked into (os.walk recurses: 1100 levels ran it out of stack)."""
    g, _ = base
    stick = tmp_path / "stick"
    e = sticks.copy_export(g.export("till-a", D2), stick)
    m = sticks.manifest(e)
    m["junk"] = [[] for _ in range(1000)]
    sticks.write_manifest(e, m)
    deep = stick / "EDGED" / "deep"
    deep.mkdir(parents=True)
    fds = [os.open(deep, os.O_RDONLY | os.O_DIRECTORY)]
    for _ in range(1100):  # by fd: os.makedirs and rmtree recurse too
        os.mkdir("a", dir_fd=fds[-1])
        fds.append(os.open("a", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fds[-1]))
    try:
        sticks.copy_export(g.export("till-a", sticks.DAYS[3]), stick)
        db = archive.open_archive(tmp_path / "archive")
        trust.enroll(db, "till-a", g.keys["till-a"])
        out = archive.import_exports(db, [stick])
        assert any("unknown member 'junk'" in line for line in out.refused), out.refused
        assert len(out.imported) == 1
    finally:
        os.close(fds.pop())
        while fds:
            parent = fds.pop()
            os.rmdir("a", dir_fd=parent)
            os.close(parent)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["manifest.json", "journal.seg"]), data=st.data())
def test_random_mutations_never_archive_other_bytes(base, name, data):
    """Bytes of a genuine export changed at random: it is refused, or what is archived is byte for byte
    the genuine day."""
    g, arc = base
    genuine = g.export("till-a", D2)
    _, recs, raw = sticks.frames(genuine)
    with tempfile.TemporaryDirectory() as tmp:
        stick = Path(tmp) / "stick"
        e = sticks.copy_export(genuine, stick)
        blob = bytearray((e / name).read_bytes())
        for _ in range(data.draw(st.integers(1, 3))):
            at = data.draw(st.integers(0, max(len(blob) - 1, 0)))
            how = data.draw(st.sampled_from(["flip", "set", "cut", "insert", "truncate"]))
            if how == "flip" and blob:
                blob[at] ^= 1 << data.draw(st.integers(0, 7))
            elif how == "set" and blob:
                blob[at] = data.draw(st.integers(0, 255))
            elif how == "cut":
                del blob[at:at + data.draw(st.integers(1, 80))]
            elif how == "insert":
                blob[at:at] = data.draw(st.binary(min_size=1, max_size=80))
            else:
                del blob[at:]
        (e / name).write_bytes(bytes(blob))
        shutil.copytree(arc, Path(tmp) / "archive")
        db = archive.open_archive(Path(tmp) / "archive")
        before = dump(db)
        out = archive.import_exports(db, [stick])
        after = dump(db)
        if out.refused:
            assert after == before and not out.imported
            assert all("\n" not in line for line in out.refused)
        else:
            archived = [(seq, bytes(frame)) for _, seq, _, _, _, day, frame in after[0] if day == D2]
            assert archived == [(r.seq, f) for r, f in zip(recs, raw)]
        db.close()


def test_a_directory_swapped_for_a_link_after_the_walk_is_not_followed(base, tmp_path):
    """The review's race: EDGED/<till> replaced by a link off the stick between the walk and the read."""
    g, _ = base
    stick = tmp_path / "stick"
    sticks.copy_export(g.export("till-a", D2), stick)
    outside = tmp_path / "outside"
    shutil.copytree(stick / "EDGED" / "till-a", outside / "till-a")
    (found,) = verify.find([stick])
    shutil.rmtree(stick / "EDGED" / "till-a")
    os.symlink(outside / "till-a", stick / "EDGED" / "till-a")
    ex = verify.load(found[1], None, found[0])
    assert ex.problems == ["till-a on the way to the export directory: a symbolic link or not a directory: refused"]
