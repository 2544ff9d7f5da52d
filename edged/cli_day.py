"""`edged day ...`, `edged export`, `edged verify`: closing business days and carrying them away."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from typing import Callable

from .cli_format import plural, seq_range


def add_parsers(sub: argparse._SubParsersAction, socket_arg: Callable) -> None:
    day = sub.add_parser("day", help="business days: close one, list closed days and their exports")
    dsub = day.add_subparsers(dest="day_command", metavar="DCOMMAND", required=True)
    close = dsub.add_parser("close", help="close a business day (privileged)",
                            description="Writes the day-close record (sequence range, counts per kind, "
                                        "number ranges used, chain head) after the day's last record and "
                                        "starts a new journal segment. Closing a day again shows the same "
                                        "record. Days close in date order.")
    close.add_argument("date", nargs="?", metavar="DATE", help="YYYY-MM-DD (default: today)")
    socket_arg(close)
    lst = dsub.add_parser("list", help="closed days: records, counts, where each was exported")
    socket_arg(lst)
    exp = sub.add_parser("export", help="write a closed day to a USB stick or a directory (privileged)",
                         description="Writes EDGED/<till_id>/<YYYYMMDD>/ (the day's journal records and "
                                     "a manifest) onto the USB stick plugged into the till, or the next one "
                                     "plugged in, with a progress bar; it ends when the stick is unmounted "
                                     "and safe to remove. With --to, under a directory instead. Files are "
                                     "written under a temporary name, synced, then renamed, so a failure "
                                     "(stick pulled, full, read-only) never leaves an export that looks "
                                     "complete, and the day goes onto the next stick. A day can be written "
                                     "again any time by its date.")
    exp.add_argument("date", metavar="DATE", help="a closed business day, YYYY-MM-DD")
    exp.add_argument("--to", metavar="DIR", help="absolute directory instead of a USB stick")
    socket_arg(exp)
    ver = sub.add_parser("verify", help="check exports: checksums, records, chain, gaps (no daemon needed)",
                         description="Checks every export under the PATHs (an export directory, a stick's "
                                     "root, an EDGED folder): manifest, file checksums, each record's "
                                     "checksum and chain link, contiguous sequence numbers, the day-close "
                                     "record, and between the exports of one till: gaps, overlaps, chain "
                                     "breaks. Exit 1 on any problem.")
    ver.add_argument("paths", nargs="+", metavar="PATH")


def cmd_day(args: argparse.Namespace, call: Callable) -> int:
    if args.day_command == "close":
        day = args.date or datetime.date.today().isoformat()
        c = call(args, "day_close", business_day=day)
        counts = ", ".join(f"{k} {n}" for k, n in sorted(c["counts"].items()))
        print(f"{day} {'was already closed' if c['duplicate'] else 'closed'}: "
              f"{_records(c['first_seq'], c['last_seq'])}{f' ({counts})' if counts else ''}; "
              f"day-close record {c['seq']}")
        return 0
    days = call(args, "days")["days"]
    if not days:
        print("no closed days")
    for d in days:
        where = d["exported"]["path"] if d["exported"] else "not exported"
        if d.get("pending"):
            where += ", waiting for a USB stick" if not d["exported"] else "; again on the next USB stick"
        print(f"{d['business_day']}  {_records(d['first_seq'], d['last_seq'])}  close {d['seq']}  {where}")
    return 0


def _records(first: int, last: int) -> str:
    """ "records 1..12", or "no records" for a day closed with nothing in it."""
    span = seq_range(first, last)
    return "no records" if span == "empty" else f"records {span}"


def cmd_export(args: argparse.Namespace, connected: Callable) -> int:
    with connected(args, timeout=None) as client:  # a stick may be minutes away
        if args.to:
            r = client.request("export", business_day=args.date, target=args.to)
            print(f"{r['business_day']} exported to {r['path']} (records {r['first_seq']}..{r['last_seq']})")
            return 0
        client.request("watch", topics=["usb"])
        client.request("export", business_day=args.date)
        for ev in client.iter_events():
            if ev["event"] == "usb.inserted":
                print(f"USB stick {ev['device']} ({ev['fs_type']}{', ' + ev['label'] if ev['label'] else ''})")
            elif ev["event"] == "usb.safe_to_remove":
                print("the stick is unmounted: safe to remove")
            elif ev["event"] == "usb.export" and ev["business_day"] == args.date:
                if ev["state"] == "waiting":
                    print("plug a USB stick into the till (Ctrl+C stops waiting; the day still goes onto the "
                          "next stick)", flush=True)
                elif ev["state"] == "writing":
                    _bar(ev["bytes"], ev["total"])
                elif ev["state"] == "failed":
                    print(f"\nexport of {args.date} failed: {ev['reason']}\n"
                          "it stays asked for: plug in another stick", file=sys.stderr)
                    return 1
                elif ev["state"] == "done":
                    print(f"{args.date} exported to {ev['path']} on {ev['device']}")
                    return 0
    return 1


def _bar(done: int, total: int, width: int = 30) -> None:
    filled = width * done // max(total, 1)
    size = f"{done / 1e6:.1f}/{total / 1e6:.1f} MB" if total >= 1e6 else f"{done // 1000}/{total // 1000} kB"
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * done // max(total, 1):3d}% {size}"
                     + ("\n" if done >= total else ""))
    sys.stderr.flush()


def cmd_verify(args: argparse.Namespace) -> int:
    from .day.verify import run

    return run(args.paths)


def add_archive_parsers(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="head office: merge exports into an archive, exactly once",
                         description="Checks every export under the PATHs like `edged verify`, then adds its "
                                     "records to the archive in DIR (one SQLite file). Records already there "
                                     "are skipped, so importing a stick twice adds nothing; the same sequence "
                                     "number with different contents is a conflict and that export is "
                                     "refused. Gaps between imported days are listed. Exit 1 when an export "
                                     "was refused.")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--archive", required=True, metavar="DIR", help="the archive directory (created if new)")
    arc = sub.add_parser("archive", help="head office: what an archive holds")
    asub = arc.add_subparsers(dest="archive_command", metavar="ACOMMAND", required=True)
    st = asub.add_parser("status", help="per till: days, records, last sequence number, gaps")
    st.add_argument("archive", metavar="DIR")
    st.add_argument("--json", action="store_true", help="per till, as JSON: days, records, seq range, gaps")


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .day.archive import gap_lines, import_exports, open_archive

    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"edged: {missing[0]}: no such file or directory", file=sys.stderr)
        return 1
    db = open_archive(Path(args.archive))
    out = import_exports(db, [Path(p) for p in args.paths])
    for line in out.imported:
        print(f"imported {line}")
    for line in out.refused:
        print(f"REFUSED {line}")
    for line in gap_lines(db):
        print(line)
    print(f"{plural(out.added, 'record')} added, {out.skipped} already archived, "
          f"{plural(len(out.refused), 'export')} refused")
    return 1 if out.refused else 0


def cmd_archive(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .day.archive import open_archive, status

    if not (Path(args.archive) / "archive.sqlite").exists():
        print(f"edged: {args.archive}: no archive there (edged import creates one)", file=sys.stderr)
        return 1
    tills = status(open_archive(Path(args.archive)))
    if args.json:
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
    return 0
