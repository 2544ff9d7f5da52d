"""`edged verify PATH...`: check exports anywhere, without a daemon.

Each export (`EDGED/<till>/<YYYYMMDD>/`) is checked on its own: the manifest,
every file's size and SHA-256, the segment header against the manifest, every
frame's CRC and chain link, sequence numbers contiguous from first to last,
the last record a `day.close` for that day whose summary matches the records,
and the counts. Then the exports of one till are checked against each other
in sequence order: each must start at the seq after the previous one ended,
with the chain continuing; gaps and overlaps are named by date and seq.
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..journal import frame as fr
from ..journal import kinds
from .export import FORMAT, FORMAT_EXCLUDED

FORMATS = (FORMAT, FORMAT_EXCLUDED)


@dataclass
class Export:
    path: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    records: list[fr.Record] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    left_out: int = 0  # records export.exclude_kinds left out (their seqs are in the manifest)

    @property
    def label(self) -> str:
        m = self.manifest
        return f"{m.get('till_id', '?')} {m.get('business_day', self.path.name)}"


def find(paths: list[Path]) -> list[Path]:
    """Export directories under the given paths (an export itself, a stick's root, EDGED, a till's
    folder), never following links."""
    found: list[Path] = []
    for path in paths:
        if (path / "manifest.json").is_file() and not (path / "manifest.json").is_symlink():
            found.append(path)
            continue
        for base, dirs, files in os.walk(path, followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))  # .partial: never complete
            if "manifest.json" in files:
                found.append(Path(base))
    return found


def check(path: Path) -> Export:
    ex = Export(path)
    try:
        ex.manifest = json.loads((path / "manifest.json").read_bytes())
    except (OSError, ValueError) as e:
        ex.problems.append(f"manifest.json unreadable: {e}")
        return ex
    m = ex.manifest
    if m.get("format") not in FORMATS:
        ex.problems.append(f"manifest.json: format is {m.get('format')!r}, not one of {', '.join(FORMATS)}")
        return ex
    if (m["format"] == FORMAT_EXCLUDED) != isinstance(m.get("excluded"), dict):
        ex.problems.append(f"manifest.json: format {m['format']} and 'excluded' do not go together")
        return ex
    present = {p.name for p in path.iterdir()} - {"manifest.json"}
    for name in sorted(present - set(m["files"])):
        ex.problems.append(f"{name}: not in the manifest")
    data = b""
    for name, meta in sorted(m["files"].items()):
        file = path / name
        if file.is_symlink() or not file.exists():
            ex.problems.append(f"{name}: missing" + (" (a symbolic link)" if file.is_symlink() else ""))
            continue
        blob = file.read_bytes()
        if len(blob) != meta["size"] or hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            ex.problems.append(f"{name}: size or SHA-256 differs from the manifest (changed after export)")
        if name == "journal.seg":
            data = blob
    if data:
        _check_records(ex, data)
    return ex


def _check_records(ex: Export, data: bytes) -> None:
    m = ex.manifest
    try:
        first, chain = fr.decode_segment_head(data)
    except fr.FrameError as e:
        ex.problems.append(f"journal.seg: {e}")
        return
    if first != m["first_seq"] or chain.hex() != m["chain_before"]:
        ex.problems.append("journal.seg: header (first seq, chain before) differs from the manifest")
    excluded = m.get("excluded") or {}
    runs = _runs(ex, excluded)
    if runs is None:
        return
    pos, expect, before = fr.SEG_HEAD_SIZE, first, chain
    while pos < len(data):
        try:
            rec = fr.decode(data, pos, None)
        except fr.FrameError as e:
            ex.problems.append(f"journal.seg: record after seq {expect - 1}: {e.reason}")
            return
        if runs and rec.seq > expect and runs[0][0] == expect:  # left out by export.exclude_kinds
            run_first, run_last, link = runs.pop(0)
            expect, chain = run_last + 1, link
        if rec.seq != expect:
            ex.problems.append(f"journal.seg: records {expect}..{rec.seq - 1} missing (seq {rec.seq} follows "
                               f"{expect - 1})" if rec.seq > expect else
                               f"journal.seg: seq {rec.seq} where {expect} was due (repeated or reordered)")
            return
        try:
            fr.check(data, pos, chain)
        except fr.FrameError:
            ex.problems.append(f"journal.seg: record {rec.seq}: chain link mismatch (changed, inserted or "
                               "reordered after it was journaled)" + (" or a left-out run's link is wrong"
                                                                     if excluded else ""))
            return
        ex.records.append(rec)
        before = chain
        chain, pos, expect = rec.chain, pos + rec.size, expect + 1
    if runs:
        ex.problems.append(f"manifest: left-out records {runs[0][0]}..{runs[0][1]} are not where the records say")
        return
    if not ex.records:
        ex.problems.append("journal.seg: no records")
        return
    last = ex.records[-1]
    if last.seq != m["last_seq"] or chain.hex() != m["chain_after"]:
        ex.problems.append(f"journal.seg ends at seq {last.seq}, chain {chain.hex()[:12]}; the manifest says "
                           f"{m['last_seq']}, {m['chain_after'][:12]}")
    counts = collections.Counter(r.kind for r in ex.records)
    if dict(counts) != m["counts"]:
        ex.problems.append(f"counts per kind {dict(counts)} differ from the manifest's {m['counts']}")
    why = kinds.problem(last) if last.kind == "day.close" else None  # its body is read below: check it
    if last.kind != "day.close" or why is not None or last.body["business_day"] != m["business_day"]:
        ex.problems.append(f"the last record (seq {last.seq}) is not the day.close of {m['business_day']}"
                           + (f" ({why})" if why else ""))
        return
    body = last.body
    if body["first_seq"] != first or body["last_seq"] != last.seq - 1 or body["chain"] != before:
        ex.problems.append("the day.close record's range or chain head does not match the records")
    allowed = set(body.get("excluded_kinds") or ())
    if excluded and (set(excluded.get("kinds", ())) != allowed or not set(excluded.get("counts", {})) <= allowed):
        ex.problems.append(f"left out: {sorted(excluded.get('counts', {}))}, but the day.close record allows "
                           f"leaving out only {sorted(allowed) or 'nothing'}")
        return
    day_counts = collections.Counter(r.kind for r in ex.records[:-1])
    left_out = collections.Counter(excluded.get("counts", {}))
    if dict(day_counts + left_out) != body["counts"]:
        ex.problems.append("the day.close record's counts do not match the records"
                           + (" and the left-out ones" if excluded else ""))
    if excluded:
        ex.left_out = sum(left_out.values())


def _runs(ex: Export, excluded: dict[str, Any]) -> list[tuple[int, int, bytes]] | None:
    """The manifest's left-out runs, checked for shape and order; None (a problem named) if bad."""
    try:
        kinds, counts = excluded.get("kinds", []), excluded.get("counts", {})
        if not isinstance(counts, dict) or not all(isinstance(k, str) for k in kinds):
            raise TypeError
        runs = [(int(first), int(last), bytes.fromhex(link)) for first, last, link in excluded.get("runs", [])]
        counted = sum(int(n) for n in counts.values())
    except (TypeError, ValueError):
        ex.problems.append("manifest: 'excluded' is malformed")
        return None
    if any(r[1] < r[0] for r in runs) or any(b[0] <= a[1] + 1 for a, b in zip(runs, runs[1:])):
        ex.problems.append("manifest: left-out runs overlap, touch or are out of order")
        return None
    held = sum(last - first + 1 for first, last, _ in runs)
    if counted != held:
        ex.problems.append(f"manifest: {counted} records counted as left out, but the runs hold {held}")
        return None
    return runs


def across(exports: list[Export]) -> list[str]:
    """Gaps, overlaps and chain breaks between the exports of each till."""
    problems = []
    by_till: dict[str, list[Export]] = collections.defaultdict(list)
    for ex in exports:
        if ex.manifest.get("format") in FORMATS:
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
                    continue  # the same day written twice: fine if both check out
                problems.append(f"{till}: overlap: {b['business_day']} starts at {b['first_seq']}, inside "
                                f"{a['business_day']} ({a['first_seq']}..{a['last_seq']})")
            elif b["chain_before"] != a["chain_after"]:
                problems.append(f"{till}: chain broken between {a['business_day']} and {b['business_day']}")
    return problems


def run(paths: list[str]) -> int:
    missing = [p for p in paths if not os.path.exists(p)]
    for p in missing:
        print(f"{p}: no such file or directory")
    roots = [Path(p) for p in paths if p not in missing]
    exports = [check(p) for p in find(roots)]
    if not exports and not missing:
        print("no exports found (a directory with manifest.json, or EDGED/<till>/<YYYYMMDD>/ under it)")
        return 1
    bad = 0
    for ex in sorted(exports, key=lambda e: (e.manifest.get("till_id", ""), e.manifest.get("first_seq", 0))):
        if ex.problems:
            bad += 1
            print(f"FAIL {ex.label} ({ex.path}):")
            for problem in ex.problems:
                print(f"  {problem}")
        else:
            m = ex.manifest
            kinds = ", ".join(f"{k} {n}" for k, n in sorted(m["excluded"]["counts"].items())) if ex.left_out else ""
            print(f"ok   {ex.label}: records {m['first_seq']}..{m['last_seq']}, {len(ex.records)} records"
                  + (f" and {ex.left_out} left out on purpose ({kinds})" if ex.left_out else ""))
    between = across([e for e in exports if not e.problems])
    for problem in between:
        print(f"FAIL {problem}")
    return 1 if bad or between or missing else 0
