"""`edged day ...`, `edged export`, `edged verify`: closing business days and carrying them away."""
from __future__ import annotations

import argparse
import datetime
import sys

from .common import call, connected, socket_arg
from .format import seq_range

ARCHIVE_HELP = ("head office's archive: a directory (one SQLite file in it, for one head-office machine) or "
                "a PostgreSQL database, postgresql://USER@HOST/DBNAME (its database must exist; docs/FLEET.md)")


def register(sub: argparse._SubParsersAction) -> None:
    """The day tools (`day`, `export`), then head office's (`verify`, `import`, `archive`)."""
    _add_day_parsers(sub)
    _add_head_office_parsers(sub)


def _add_day_parsers(sub: argparse._SubParsersAction) -> None:
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
    ver = sub.add_parser("verify", help="check exports: signatures, checksums, records, chain, gaps (no daemon needed)",
                         description="Checks every export under the PATHs (an export directory, a stick's root, an "
                                     "EDGED folder) as hostile input: the manifest, its signature and the day-close "
                                     "record's signature by the till's key, file checksums, each record's chain "
                                     "link, contiguous sequence numbers, the counts; between the exports of one "
                                     "till: gaps, overlaps, chain breaks, two different exports of one day. "
                                     "Authenticity (that the signing key is the till's) is checked against "
                                     "--key or --archive; without them the output says it was not checked. "
                                     "Links, FIFOs and devices on the stick are refused, never followed or read. "
                                     "Exit 0 when everything checks out, 1 on any problem, 2 on a bad --key.")
    ver.add_argument("paths", nargs="+", metavar="PATH")
    ver.add_argument("--key", action="append", default=[], metavar="TILL_ID=ed25519:HEX",
                     help="a till's public key, as `edged identity` prints it on the till (repeat for more tills)")
    ver.add_argument("--archive", metavar="ARCHIVE", help="check against the keys enrolled in this archive "
                                                         "(" + ARCHIVE_HELP + ")")
    ver.add_argument("--allow-unsigned", action="store_true",
                     help="accept exports made before tills signed their days (reported as unsigned)")
    day.set_defaults(func=cmd_day)
    exp.set_defaults(func=cmd_export)
    ver.set_defaults(func=cmd_verify)


def cmd_day(args: argparse.Namespace) -> int:
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


def cmd_export(args: argparse.Namespace) -> int:
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
    from .headoffice import run_verify

    return run_verify(args.paths, args.key, args.archive, args.allow_unsigned)


def _add_head_office_parsers(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="head office: merge exports into an archive, exactly once",
                         description="Checks every export under the PATHs like `edged verify --archive DIR` and "
                                     "adds its records to the archive in DIR (one SQLite file) in the same pass: "
                                     "each file is read once and exactly the bytes verified are stored. Only "
                                     "exports signed by a key enrolled for their till (`edged archive enroll`) "
                                     "are accepted. Records already there are skipped, so importing a stick "
                                     "twice adds nothing; the same sequence number with different contents, or "
                                     "a day that does not link into the archived days before and after it, is "
                                     "a conflict and that export is refused. A bad export is refused on one "
                                     "line and the others are imported. Gaps between imported days are listed. "
                                     "Exit 1 when an export was refused.")
    imp.add_argument("paths", nargs="+", metavar="PATH")
    imp.add_argument("--archive", required=True, metavar="ARCHIVE", help=ARCHIVE_HELP + "; created if new")
    imp.add_argument("--allow-unsigned", action="store_true",
                     help="also accept exports made before tills signed their days (archived as unsigned)")
    arc = sub.add_parser("archive", help="head office: the archive's till keys and what it holds")
    asub = arc.add_subparsers(dest="archive_command", metavar="ACOMMAND", required=True)
    st = asub.add_parser("status", help="per till: days, records, last sequence number, gaps, keys")
    st.add_argument("archive", metavar="ARCHIVE", help=ARCHIVE_HELP)
    st.add_argument("--json", action="store_true", help="per till, as JSON: days, records, seq range, gaps, keys")
    en = asub.add_parser("enroll", help="trust a till's public key: its exports are then accepted",
                         description="Enrolls the public key a till prints with `edged identity` (compare it "
                                     "there, not from a stick: a stick can carry any key). Enrolling the same "
                                     "key again changes nothing; a key enrolled for another till is refused. A "
                                     "till whose key was lost and replaced has a key of a new epoch: enroll it "
                                     "too. Creates the archive if new.")
    en.add_argument("archive", metavar="ARCHIVE", help=ARCHIVE_HELP)
    en.add_argument("till_id", metavar="TILL_ID")
    en.add_argument("public_key", metavar="PUBKEY", help="ed25519:<64 hex digits>")
    en.add_argument("--epoch", type=int, help="the key's epoch as `edged identity` shows it (else learnt from "
                                              "the first export it signed)")
    ks = asub.add_parser("keys", help="list enrolled keys: till, epoch, fingerprint, enrolled and retired times")
    ks.add_argument("archive", metavar="ARCHIVE", help=ARCHIVE_HELP)
    ks.add_argument("--json", action="store_true", help="as JSON")
    rt = asub.add_parser("retire", help="stop accepting exports signed by a key (a till replaced or compromised)",
                         description="Retires an enrolled key by its fingerprint (`edged archive keys` lists "
                                     "them): exports it signed are refused from then on. What it signed before "
                                     "stays archived.")
    rt.add_argument("archive", metavar="ARCHIVE", help=ARCHIVE_HELP)
    rt.add_argument("fingerprint", metavar="FINGERPRINT", help="sha256:<32 hex digits>")
    imp.set_defaults(func=cmd_import)
    arc.set_defaults(func=cmd_archive)


def cmd_import(args: argparse.Namespace) -> int:
    from .headoffice import run_import

    return run_import(args.paths, args.archive, args.allow_unsigned)


def cmd_archive(args: argparse.Namespace) -> int:
    from . import headoffice as h

    if args.archive_command == "enroll":
        return h.run_enroll(args.archive, args.till_id, args.public_key, args.epoch)
    if args.archive_command == "keys":
        return h.run_keys(args.archive, args.json)
    if args.archive_command == "retire":
        return h.run_retire(args.archive, args.fingerprint)
    return h.run_status(args.archive, args.json)
