"""`edged verify PATH...`: check exports anywhere, without a daemon; `edged import` checks the same way.

An export (`EDGED/<till>/<YYYYMMDD>/`) is hostile input, checked on its own:
manifest.json read once and strictly (day/manifest.py), its signature by the
key it names, and that key trusted for its till (day/trust.py: keys given with
--key or enrolled in an archive; with neither the output says plainly that
authenticity was not checked). Then one streaming pass over every file
(day/segread.py): sizes by fstat first, SHA-256, frames, chain links,
contiguous seqs, counts, the day.close record and its signature over the
day's summary and chain head. Files are opened relative to the directory with
no link followed and no FIFO or device read (day/exportdir.py). Exports made
before tills signed (edged-export/1 and /2, or a day closed before the
upgrade) are refused unless --allow-unsigned.

Between exports: two exports of one till's day must be the same bytes, else
both are refused for that day; the exports of one till must follow each
other (gaps, overlaps and chain breaks are named).
"""
from __future__ import annotations

import collections
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..journal import kinds
from . import cores, exportdir, manifest, segread, signing
from .trust import Trust

MANIFEST = "manifest.json"
MAX_DEPTH = 16  # directories below a PATH given to verify/import that are looked into
MANIFESTS_HELD = 16 << 20  # bytes of manifests one run holds (parsed) while it orders and checks exports


@dataclass
class Export:
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    ident: tuple[int, int] = (0, 0)  # the directory whose manifest was read: the files come from it too
    records: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    left_out: int = 0  # records export.exclude_kinds left out (their seqs are in the manifest)
    unsigned: bool = False  # accepted under --allow-unsigned
    signer: str = ""  # "sha256:... (epoch n)": the key that signed it
    public: bytes = b""
    root: Path | None = None  # the PATH it was found under: opened from there, no link followed

    @property
    def label(self) -> str:
        m = self.manifest
        return f"{m.get('till_id', '?')} {m.get('business_day', self.path.name)}"

    def line(self) -> str:
        """The one line that refuses it."""
        return f"{self.label} ({self.path}): " + "; ".join(self.problems)


def find(paths: list[Path]) -> list[tuple[Path, Path]]:
    """Export directories under the given paths (an export itself, a stick's root, EDGED, a till's
    folder), never following links; a manifest.json that is a link, FIFO or device is found (and
    then refused), so nothing on a stick is silently passed over."""
    found: list[tuple[Path, Path]] = []  # (the PATH given, an export under it)
    for path in paths:
        if os.path.lexists(path / MANIFEST):
            found.append((path, path))
            continue
        depth0 = len(path.parts)
        for base, dirs, files in os.walk(path, followlinks=False):
            # .partial: never complete. EDGED/<till>/<day> is 3 deep: a stick nested far deeper would
            # only run the walk out of stack (os.walk recurses), so nothing below MAX_DEPTH is looked at.
            deep = len(Path(base).parts) - depth0 >= MAX_DEPTH
            dirs[:] = [] if deep else sorted(d for d in dirs if not d.startswith("."))
            if MANIFEST in files:
                found.append((path, Path(base)))
            if "EDGED" in Path(base).parts or "EDGED" in dirs:  # a link in an export tree: named and refused
                found += [(path, Path(base, d)) for d in dirs if os.path.islink(os.path.join(base, d))]
            if Path(base).parent.name == "EDGED":  # EDGED/<till>/ holds export directories and nothing else
                found += [(path, Path(base, f)) for f in files if not f.startswith(".")]
    return found


def load(path: Path, budget: list[int] | None = None, root: Path | None = None) -> Export:
    """The export with its manifest read and parsed (or its problem named); `budget` holds the
    manifest bytes this run may still hold."""
    ex = Export(path, root=root)
    try:
        fd, ex.ident = exportdir.open_dir(path, root)
        try:
            raw = exportdir.read_small(fd, MANIFEST, manifest.MAX_BYTES)
        finally:
            os.close(fd)
        if budget is not None:
            budget[0] -= len(raw)
            if budget[0] < 0:
                raise exportdir.Refused(f"the manifests on this stick hold more than {MANIFESTS_HELD >> 20} MiB "
                                        "in all: this one was not read; import the rest in another run")
        ex.manifest = manifest.parse(raw)
        name = path.name
        if name.isdigit() and len(name) == 8 and name != ex.manifest["business_day"].replace("-", ""):
            raise exportdir.Refused(f"the directory {name} holds the export of {ex.manifest['business_day']}")
    except (exportdir.Refused, manifest.ManifestError) as e:
        ex.problems.append(str(e))
    except OSError as e:
        ex.problems.append(f"read error: {e.strerror or e}")
    return ex


def authenticate(ex: Export, trust: Trust | None, allow_unsigned: bool) -> bool:
    """Whether the manifest may be read on: signed by its key, and that key trusted for its till."""
    m = ex.manifest
    if m["format"] in manifest.UNSIGNED:
        if not allow_unsigned:
            ex.problems.append(f"unsigned export ({m['format']}, written before tills signed their days): "
                               "refused; --allow-unsigned accepts exports made before the upgrade")
            return False
        ex.unsigned = True
        return True
    public = manifest.public_key(m)
    why = trust.problem(m["till_id"], public) if trust is not None else None
    why = why or signing.manifest_problem(m, public)
    if why:
        ex.problems.append(why)
        return False
    ex.public, ex.signer = public, f"{m['key']['fingerprint']} (epoch {m['key']['epoch']})"
    return True


def check(path: Path | Export, trust: Trust | None = None, allow_unsigned: bool = False,
          sink: segread.Sink | None = None) -> Export:
    """Every check of one export; `sink` (import) gets its frames as they are verified."""
    ex = load(path) if isinstance(path, Path) else path
    if ex.problems or not authenticate(ex, trust, allow_unsigned):
        return ex
    try:
        _read_files(ex, trust, allow_unsigned, sink)
    except (exportdir.Refused, segread.SegmentError) as e:
        ex.problems.append(str(e))
    except OSError as e:  # a stick failing or pulled while being read
        ex.problems.append(f"read error: {e.strerror or e}")
    return ex


def _read_files(ex: Export, trust: Trust | None, allow_unsigned: bool, sink: segread.Sink | None) -> None:
    m = ex.manifest
    fd, ident = exportdir.open_dir(ex.path, ex.root)
    try:
        if ident != ex.ident:
            raise exportdir.Refused("the export directory was replaced while being read: refused")
        extra = sorted(set(os.listdir(fd)) - set(m["files"]) - {MANIFEST})
        if extra:
            raise exportdir.Refused(f"{', '.join(extra[:3])}: not in the manifest")
        for name, meta in sorted(m["files"].items()):
            file, size = exportdir.open_file(fd, name, size=meta["size"])
            try:
                got = _segment(ex, file, size, trust, allow_unsigned, sink) if name == "journal.seg" else \
                    _sha256(file)
            finally:
                os.close(file)
            if got != meta["sha256"]:
                ex.problems.append(f"{name}: SHA-256 differs from the manifest (changed after export)")
    finally:
        os.close(fd)


def _sha256(fd: int) -> str:
    import hashlib

    h = hashlib.sha256()
    while chunk := os.read(fd, segread.CHUNK):
        h.update(chunk)
    return h.hexdigest()


def _segment(ex: Export, fd: int, size: int, trust: Trust | None, allow_unsigned: bool,
             sink: segread.Sink | None) -> str:
    m = ex.manifest
    excluded = m.get("excluded") or {}
    runs = [(a, b, bytes.fromhex(link)) for a, b, link in excluded.get("runs", [])]
    if any(r[1] < r[0] for r in runs) or any(b[0] <= a[1] + 1 for a, b in zip(runs, runs[1:])):
        raise segread.SegmentError("manifest: left-out runs overlap, touch or are out of order")
    held, counted = sum(b - a + 1 for a, b, _ in runs), sum(excluded.get("counts", {}).values())
    if counted != held:
        raise segread.SegmentError(f"manifest: {counted} records counted as left out, but the runs hold {held}")
    # An import archives in this process what a worker checks in another (day/cores.py)
    seg = segread.read(fd, size, runs) if sink is None else cores.read_beside(fd, size, runs, sink)
    ex.records, ex.counts = seg.records, seg.counts
    problems = ex.problems
    if seg.first_seq != m["first_seq"] or seg.chain_before.hex() != m["chain_before"]:
        problems.append("journal.seg: header (first seq, chain before) differs from the manifest")
    if runs:
        problems.append(f"manifest: left-out records {runs[0][0]}..{runs[0][1]} are not where the records say")
    if not seg.records:
        problems.append("journal.seg: no records")
        return seg.sha256
    if seg.last_seq != m["last_seq"] or seg.chain.hex() != m["chain_after"]:
        problems.append(f"journal.seg ends at seq {seg.last_seq}, chain {seg.chain.hex()[:12]}; the manifest says "
                        f"{m['last_seq']}, {m['chain_after'][:12]}")
    if seg.counts != m["counts"]:
        problems.append(f"counts per kind {seg.counts} differ from the manifest's {m['counts']}")
    last = seg.close
    why = kinds.problem(last) if last is not None else None
    if last is None or why is not None or last.body["business_day"] != m["business_day"]:
        problems.append(f"the last record (seq {seg.last_seq}) is not the day.close of {m['business_day']}"
                        + (f" ({why})" if why else ""))
        return seg.sha256
    body = last.body
    if body["till_id"] != m["till_id"]:
        problems.append(f"the day.close record is till {body['till_id']!r}'s, the manifest says {m['till_id']!r} "
                        "(relabelled)")
    if body["first_seq"] != m["first_seq"] or body["last_seq"] != last.seq - 1 or body["chain"] != seg.close_chain:
        problems.append("the day.close record's range or chain head does not match the records")
    allowed = set(body.get("excluded_kinds") or ())
    if excluded and (set(excluded.get("kinds", ())) != allowed or not set(excluded.get("counts", {})) <= allowed):
        problems.append(f"left out: {sorted(excluded.get('counts', {}))}, but the day.close record allows "
                        f"leaving out only {sorted(allowed) or 'nothing'}")
        return seg.sha256
    day_counts = collections.Counter(seg.counts)
    day_counts["day.close"] -= 1
    left_out = collections.Counter(excluded.get("counts", {}))
    if {k: v for k, v in (day_counts + left_out).items() if v} != body["counts"]:
        problems.append("the day.close record's counts do not match the records"
                        + (" and the left-out ones" if excluded else ""))
    ex.left_out = sum(left_out.values())
    _day_signature(ex, body, trust, allow_unsigned)
    return seg.sha256


def _day_signature(ex: Export, body: dict[str, Any], trust: Trust | None, allow_unsigned: bool) -> None:
    sig = body.get("signature")
    if ex.unsigned:
        if sig is not None:  # edged never wrote that: a signed day travels only in a signed export
            ex.problems.append("the day.close record is signed but the manifest is not (a signed day comes only "
                               "in an edged-export/3): refused")
        return
    if sig is None:
        if allow_unsigned:
            ex.unsigned = True
        else:
            ex.problems.append("the day.close record is not signed (the day was closed before the till signed its "
                               "days): refused; --allow-unsigned accepts it")
        return
    till, fp = ex.manifest["till_id"], sig["fingerprint"]
    public = ex.public if fp == ex.manifest["key"]["fingerprint"] else \
        trust.by_fingerprint(till, fp) if trust is not None else None
    if public is None:
        ex.problems.append(f"the day.close record is signed by key {fp[:40]}, not the manifest's; "
                           + (f"that key is not a trusted key of {till}" if trust is not None else
                              "give that key with --key to check it"))
        return
    why = signing.day_problem(body, public)
    if why:
        ex.problems.append(why)


def same_day(exports: list[Export]) -> None:
    """Two exports of one till's day must be the same records: otherwise both are refused for it."""
    by_day: dict[tuple[str, str], list[Export]] = collections.defaultdict(list)
    for ex in exports:
        if not ex.problems:
            by_day[(ex.manifest["till_id"], ex.manifest["business_day"])].append(ex)
    for (till, day), group in by_day.items():
        shape = {(e.manifest["first_seq"], e.manifest["last_seq"], e.manifest["files"]["journal.seg"]["sha256"])
                 for e in group}
        if len(shape) > 1:
            paths = " and ".join(str(e.path) for e in group)
            for e in group:
                e.problems.append(f"two different exports of {till} {day} ({paths}): both refused for that day")


def across(exports: list[Export]) -> list[str]:
    """Gaps, overlaps and chain breaks between the exports of each till."""
    problems = []
    by_till: dict[str, list[Export]] = collections.defaultdict(list)
    for ex in exports:
        by_till[ex.manifest["till_id"]].append(ex)
    for till, group in sorted(by_till.items()):
        group.sort(key=lambda e: e.manifest["first_seq"])
        for prev, nxt in zip(group, group[1:]):
            a, b = prev.manifest, nxt.manifest
            if b["first_seq"] > a["last_seq"] + 1:
                problems.append(f"{till}: gap: records {a['last_seq'] + 1}..{b['first_seq'] - 1} missing between "
                                f"{a['business_day']} (ends at {a['last_seq']}) and {b['business_day']} "
                                f"(starts at {b['first_seq']})")
            elif b["first_seq"] <= a["last_seq"]:
                if (a["first_seq"], a["last_seq"]) == (b["first_seq"], b["last_seq"]):
                    continue  # the same day written twice: same_day() saw they are the same bytes
                problems.append(f"{till}: overlap: {b['business_day']} starts at {b['first_seq']}, inside "
                                f"{a['business_day']} ({a['first_seq']}..{a['last_seq']})")
            elif b["chain_before"] != a["chain_after"]:
                problems.append(f"{till}: chain broken between {a['business_day']} and {b['business_day']}")
    return problems


def loaded(paths: list[Path]) -> list[Export]:
    """Every export under the paths with its manifest, in till and seq order, same-day pairs checked."""
    budget = [MANIFESTS_HELD]
    exports = [load(path, budget, root) for root, path in find(paths)]
    same_day(exports)
    return sorted(exports, key=lambda e: (str(e.manifest.get("till_id", "")), e.manifest.get("first_seq", 0),
                                          str(e.path)))
