"""What head office's commands print: `edged verify`, `edged import`, `edged archive enroll/keys/retire/status`.

Every export gets one line: `ok ...`, or `FAIL`/`REFUSED` with the export's
path and what is wrong; one bad export never stops the others. Exit 0 only
when every export checked out, 1 when any was refused or a problem was found
between exports, 2 for a command that cannot run at all (a bad --key, no
archive).
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from ..day import archive, backend, cores, trust, verify
from .format import plural, seq_range

NOT_CHECKED = ("authenticity NOT checked: each signature matches the key its export names, but nothing here says "
               "that key is the till's; give --key TILL_ID=ed25519:<hex> (as `edged identity` prints it on the "
               "till) or --archive DIR (the keys enrolled there)")


def _one_line(fn: Callable[..., int]) -> Callable[..., int]:
    """A damaged keys table, or an archive that cannot be opened, stops the command with one line
    (exit 2), never a traceback."""
    @functools.wraps(fn)
    def wrapped(*args: Any, **kw: Any) -> int:
        try:
            return fn(*args, **kw)
        except (trust.EnrollError, backend.ArchiveError) as e:
            print(f"edged: {e}", file=sys.stderr)
            return 2
    return wrapped


def run_verify(paths: list[str], keys: list[str], archive_dir: str | None, allow_unsigned: bool) -> int:
    try:
        chosen = _trust(keys, archive_dir)
    except (trust.EnrollError, backend.ArchiveError) as e:
        print(f"edged: {e}", file=sys.stderr)
        return 2
    missing = [p for p in paths if not os.path.lexists(p)]
    for p in missing:
        print(f"{p}: no such file or directory")
    exports = verify.loaded([Path(p) for p in paths if p not in missing])
    if not exports and not missing:
        print("no exports found (a directory with manifest.json, or EDGED/<till>/<YYYYMMDD>/ under it)")
        return 1
    bad, good, signers = 0, [], set()
    for ex in _checked(exports, chosen, allow_unsigned):
        if ex.problems:
            bad += 1
            print(f"FAIL {ex.line()}")
            continue
        good.append(ex)
        m = ex.manifest
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(m["excluded"]["counts"].items())) if ex.left_out else ""
        how = "UNSIGNED (--allow-unsigned)" if ex.unsigned else f"signed by {ex.signer}"
        if not ex.unsigned:
            signers.add(f"{m['till_id']} {ex.signer}")
        print(f"ok   {ex.label}: records {m['first_seq']}..{m['last_seq']}, {ex.records} records"
              + (f" and {ex.left_out} left out on purpose ({kinds})" if ex.left_out else ""))
        print(f"     {how}")
    between = verify.across(good)
    for problem in between:
        print(f"FAIL {problem}")
    if chosen is None and signers:
        print(NOT_CHECKED)
        for who in sorted(signers):
            print(f"  signed by: {who}")
    return 1 if bad or between or missing else 0


def _checked(exports: list[verify.Export], chosen: trust.Trust | None, allow_unsigned: bool,
             ) -> Iterator[verify.Export]:
    """Every export in order, checked side by side on the machine's cores (day/cores.py)."""
    todo = [ex for ex in exports if not ex.problems]
    done = cores.in_order(todo, lambda ex: verify.check(ex, chosen, allow_unsigned))
    broken = ""
    for ex in exports:
        if not ex.problems and not broken:
            try:
                cores.copy_into(ex, next(done))
            except BrokenProcessPool as e:  # a worker killed (the OOM killer): the rest are named, not lost
                broken = f"not checked: a worker process died ({e})"
        if broken and not ex.problems and not ex.records:
            ex.problems.append(broken)
        yield ex


def _trust(keys: list[str], archive_dir: str | None) -> trust.Trust | None:
    found = []
    if archive_dir is not None:
        if not backend.exists(archive_dir):
            raise trust.EnrollError(f"{backend.shown(archive_dir)}: no archive there")
        db = archive.open_archive(archive_dir)
        try:  # closed before verify forks its workers: none of them inherits an open archive
            found = trust.listed(db)
        finally:
            db.close()
    if keys:
        found += trust.from_arguments(keys).keys.values()
    if archive_dir is None and not keys:
        return None
    return trust.Trust(found, "neither given with --key nor enrolled in the archive")


@_one_line
def run_import(paths: list[str], archive_dir: str, allow_unsigned: bool) -> int:
    missing = [p for p in paths if not os.path.lexists(p)]
    if missing:
        print(f"edged: {missing[0]}: no such file or directory", file=sys.stderr)
        return 1
    db = archive.open_archive(archive_dir)
    if not trust.listed(db) and not allow_unsigned:
        print(f"note: no till keys are enrolled in {backend.shown(archive_dir)}: every signed export is refused until "
              "`edged archive enroll` is run for its till")
    out = archive.import_exports(db, [Path(p) for p in paths], allow_unsigned)
    for line in out.imported:
        print(f"imported {line}")
    for line in out.refused:
        print(f"REFUSED {line}")
    for line in archive.gap_lines(db):
        print(line)
    print(f"{plural(out.added, 'record')} added, {out.skipped} already archived, "
          f"{plural(len(out.refused), 'export')} refused")
    return 1 if out.refused else 0


def _existing(archive_dir: str) -> backend.Db | None:
    if not backend.exists(archive_dir):
        print(f"edged: {backend.shown(archive_dir)}: no archive there (edged import or edged archive enroll "
              "creates one)", file=sys.stderr)
        return None
    return archive.open_archive(archive_dir)


@_one_line
def run_enroll(archive_dir: str, till: str, public: str, epoch: int | None) -> int:
    db = archive.open_archive(archive_dir)
    try:
        key, new = trust.enroll(db, till, public, epoch)
    except trust.EnrollError as e:
        print(f"edged: {e}", file=sys.stderr)
        return 1
    print(f"{'enrolled' if new else 'already enrolled'}: {till} key {key.fingerprint}")
    return 0


@_one_line
def run_keys(archive_dir: str, as_json: bool) -> int:
    db = _existing(archive_dir)
    if db is None:
        return 1
    listed = trust.listed(db)
    if as_json:
        print(json.dumps([{"till": k.till, "epoch": k.epoch, "fingerprint": k.fingerprint,
                           "public_key": "ed25519:" + k.public.hex(), "enrolled_at": k.enrolled_at,
                           "retired_at": k.retired_at} for k in listed], indent=2))
        return 0
    if not listed:
        print("no keys enrolled (edged archive enroll DIR TILL_ID ed25519:<hex>)")
    for k in listed:
        retired = f"retired {_when(k.retired_at)}" if k.retired_at is not None else "in use"
        print(f"{k.till}  epoch {k.epoch if k.epoch is not None else '?'}  {k.fingerprint}  "
              f"enrolled {_when(k.enrolled_at)}  {retired}")
    return 0


@_one_line
def run_retire(archive_dir: str, fingerprint: str) -> int:
    db = _existing(archive_dir)
    if db is None:
        return 1
    try:
        key = trust.retire(db, fingerprint)
    except trust.EnrollError as e:
        print(f"edged: {e}", file=sys.stderr)
        return 1
    print(f"retired: {key.till} key {key.fingerprint}: exports it signed are refused from now on")
    return 0


def _when(t: float | None) -> str:
    return "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


@_one_line
def run_status(archive_dir: str, as_json: bool) -> int:
    db = _existing(archive_dir)
    if db is None:
        return 1
    tills = archive.status(db)
    if as_json:
        print(json.dumps(tills, indent=2))
        return 0
    for till, st in sorted(tills.items()):
        days = st["days"]
        span = "" if not days else f" ({days[0]})" if len(days) == 1 else f" ({days[0]} .. {days[-1]})"
        gaps = ", ".join(f"{lo}..{hi}" for lo, hi in st["gaps"]) or "none"
        left_out = (f", {st['left_out']} left out by the till ({', '.join(st['left_out_kinds'])}; not gaps)"
                    if st["left_out"] else "")
        print(f"{till}: {plural(len(days), 'day')}{span}, {plural(st['records'], 'record')}{left_out}, "
              f"seq {seq_range(st['first_seq'], st['last_seq'])}, gaps: {gaps}")
        online = st.get("online")
        if online:
            ago = time.time() - online["last_seen"]
            lag = ("" if online["lag"] is None else
                   f"; lag {plural(online['lag'], 'record')} (the till's journal was at seq {online['journal_last']})")
            print(f"  online: every record through seq {online['archived_through']} archived; last batch "
                  f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(online['last_seen']))} ({ago:.0f} s ago), "
                  f"{plural(online['batches'], 'batch', 'batches')} in all{lag}")
        for k in st["keys"]:
            print(f"  key {k['fingerprint']} (epoch {k['epoch'] if k['epoch'] is not None else '?'})"
                  f"{' retired' if k['retired'] else ''}: signed {plural(k['days'], 'day')}")
        for fp, n in sorted(st["other_signers"].items()):
            print(f"  {plural(n, 'day')} {'unsigned' if fp in ('unsigned', 'None') else 'signed by ' + fp}")
    return 0
