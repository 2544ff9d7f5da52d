"""`edged headoffice send | status | alerts`: head office's records down to the tills, and the
chain at a glance (docs/FLEET.md, "Head office talks back")."""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from typing import Any

from .. import config
from ..day import archive, backend
from ..fleet import alerts, chain, outbox, settings
from .common import EXIT_USAGE
from .day import ARCHIVE_HELP


def _archive_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", metavar="ARCHIVE", help=ARCHIVE_HELP + " (default: ingest.archive in --config)")
    p.add_argument("--config", metavar="FILE", help=f"head office's settings (default {settings.DEFAULT_PATH} "
                                                    "if it exists)")


def register(hsub: argparse._SubParsersAction) -> None:
    send = hsub.add_parser(
        "send", help="put a record for one till or for every till into the outbox",
        description="Queues a record (a web order, a voucher, a price list) in head office's outbox. The "
                    "ingest sends it to the till when its relay is online, or when it next connects, "
                    "however long it was away; the till's journal holds it once, and the POS app reads it "
                    "as a consumer of its kind. Nothing is kept in the broker.",
        epilog="Example: edged headoffice send --till shop1-till1 order.web order.json --expires-in 30d")
    who = send.add_mutually_exclusive_group(required=True)
    who.add_argument("--till", metavar="ID", help="the till it is for (its till_id)")
    who.add_argument("--all", action="store_true", help="every till (the broadcast channel)")
    send.add_argument("kind", help="the record's kind, e.g. order.web, voucher.sold, prices.list (not edged's own "
                                   "day./journal./print./... kinds)")
    send.add_argument("file", help="the record's body: a JSON file, or - for standard input")
    send.add_argument("--expires-in", metavar="TIME", help="not delivered after this long: seconds, or 30m, 12h, 30d")
    send.add_argument("--collapse", metavar="KEY", help="a later record with the same key supersedes this one: a "
                                                        "till that has not got this one yet gets only the later one")
    _archive_args(send)
    send.set_defaults(func=cmd_send)

    st = hsub.add_parser(
        "status", help="per till: online, records not yet archived, head office's records not yet applied, alerts",
        description="One line per till from the archive: its relay online or offline, how many of its "
                    "records are not archived yet (lag), how far it applied head office's records and how "
                    "many wait, open overdue alerts, its last closed day and last stick import.",
        epilog="Exit 0 when every till is within the limits, 1 when one is behind (for monitoring), 2 when "
               "the archive cannot be read.")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    st.add_argument("--max-lag", type=int, default=chain.Limits.max_lag, metavar="N",
                    help="behind when more records than this are not archived (default %(default)s)")
    st.add_argument("--max-silence", type=float, default=chain.Limits.max_silence, metavar="SECONDS",
                    help="behind when its relay was not heard for this long (default %(default)s)")
    st.add_argument("--max-pending", type=int, default=chain.Limits.max_pending, metavar="N",
                    help="behind when more of head office's records wait for it (default %(default)s)")
    _archive_args(st)
    st.set_defaults(func=cmd_status)

    al = hsub.add_parser(
        "alerts", help="records a till's POS app did not take over in time (web orders not picked up)",
        description="A till raises journal.overdue when a consumer (the POS app) did not acknowledge a "
                    "record of a kind with a deadline in time ([deadlines.\"order.web\"] in edged.toml), "
                    "and journal.overdue_cleared when it does later. Both reach head office with the "
                    "till's journal; this lists the open ones.",
        epilog="Exit 0 when none is open, 1 when some are.")
    al.add_argument("--all", action="store_true", help="cleared ones too")
    al.add_argument("--till", metavar="ID", help="this till only")
    al.add_argument("--json", action="store_true", help="machine-readable output")
    _archive_args(al)
    al.set_defaults(func=cmd_alerts)


def _where(args: argparse.Namespace) -> str | None:
    if args.archive:
        return args.archive
    try:
        return settings.load(args.config).ingest.archive or None
    except config.ConfigError as e:
        print(f"edged: {e}", file=sys.stderr)
        return None


def _open(args: argparse.Namespace) -> backend.Db | None:
    where = _where(args)
    if where is None:
        print("edged: give the archive with --archive DIR|postgresql://... (or ingest.archive in --config)",
              file=sys.stderr)
        return None
    try:
        if not backend.exists(where):
            print(f"edged: {backend.shown(where)}: no archive there", file=sys.stderr)
            return None
        return archive.open_archive(where)
    except backend.ArchiveError as e:
        print(f"edged: {e}", file=sys.stderr)
        return None


def duration(text: str) -> float:
    """Seconds from 90, 90s, 30m, 12h or 30d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    scale = units.get(text[-1:], None)
    try:
        value = float(text[:-1] if scale else text) * (scale or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: write seconds, or 30m, 12h, 30d") from None
    if not 0 < value < 10 * 365 * 86400:
        raise ValueError(f"{text!r}: more than nothing and less than ten years")
    return value


def cmd_send(args: argparse.Namespace) -> int:
    try:
        raw = sys.stdin.read() if args.file == "-" else open(args.file, encoding="utf-8").read()
        body = json.loads(raw)
        expires = time.time() + duration(args.expires_in) if args.expires_in else None
    except (OSError, UnicodeDecodeError) as e:
        print(f"edged: {args.file}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except (json.JSONDecodeError, RecursionError) as e:
        print(f"edged: {args.file}: not JSON: {e}", file=sys.stderr)
        return EXIT_USAGE
    except ValueError as e:
        print(f"edged: --expires-in: {e}", file=sys.stderr)
        return EXIT_USAGE
    db = _open(args)
    if db is None:
        return EXIT_USAGE
    try:
        if args.till and not db.execute("SELECT 1 FROM keys WHERE till=?", (args.till,)).fetchone():
            raise outbox.OutboxError(f"no till {args.till!r} is enrolled in this archive (edged archive keys lists "
                                     "them): its records would wait for a till that never comes")
        entry = outbox.put(db, None if args.all else args.till, args.kind, body, expires_at=expires,
                           collapse=args.collapse or "")
    except (outbox.OutboxError, backend.ArchiveError) as e:
        print(f"edged: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # the database refusing (sqlite3's or psycopg's)
        print(f"edged: the archive refused the record: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    print(f"queued {entry.channel} {entry.pos}: {entry.kind}"
          + (f", not delivered after {_when(entry.expires_at)}" if entry.expires_at else "")
          + (f", collapse key {entry.collapse!r} (a later record with it supersedes this one)" if entry.collapse
             else ""))
    return 0


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _ago(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    s = int(now - at)
    return f"{s} s ago" if s < 120 else f"{s // 60} min ago" if s < 7200 else f"{s // 3600} h ago"


def cmd_status(args: argparse.Namespace) -> int:
    db = _open(args)
    if db is None:
        return EXIT_USAGE
    now = time.time()
    try:
        rows = chain.tills(db, chain.Limits(args.max_lag, args.max_silence, args.max_pending), now)
    except Exception as e:  # the database refusing (sqlite3's or psycopg's): not "a till is behind"
        print(f"edged: the archive could not be read: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        db.close()
    if args.json:
        print(json.dumps([t.as_json() for t in rows], indent=1))
    else:
        if not rows:
            print("no tills in this archive yet (enroll one: edged archive enroll)")
        for t in rows:
            down = ", ".join(f"{c} {d['applied']}/{d['last']}" + (f" ({d['pending']} waiting)" if d["pending"] else "")
                             for c, d in sorted(t.down.items())) or "-"
            lag = "?" if t.lag is None else str(t.lag)
            print(f"{'BEHIND' if t.behind else 'ok':6} {t.till}: {t.link} (heard {_ago(t.last_seen, now)}); "
                  f"archived through {t.archived_through}, lag {lag}; down {down}; overdue {t.overdue}; "
                  f"last day {t.last_day or '-'}; last stick {_ago(t.last_stick, now) if t.last_stick else '-'}")
            for why in t.behind:
                print(f"       {why}")
    return 1 if any(t.behind for t in rows) else 0


def cmd_alerts(args: argparse.Namespace) -> int:
    db = _open(args)
    if db is None:
        return EXIT_USAGE
    try:
        found = alerts.listed(db, args.all, args.till)
    finally:
        db.close()
    if args.json:
        print(json.dumps([a.as_json() for a in found], indent=1))
    else:
        now = time.time()
        for a in found:
            if a.cleared_seq is None:
                line: Any = (f"OVERDUE  {a.till}: {a.kind} record {a.record_seq} not taken over by {a.consumer} "
                             f"(due {_when(a.due_at)}, {_ago(a.due_at, now)})")
            else:
                line = (f"cleared  {a.till}: {a.kind} record {a.record_seq} taken over by {a.consumer} "
                        f"{max(0, int((a.cleared_at or 0) - a.due_at))} s late (due {_when(a.due_at)}, taken over "
                        f"{_when(a.cleared_at)})")
            print(line)
        if not found:
            print("no open alerts" if not args.all else "no alerts")
    return 1 if any(a.cleared_seq is None for a in found) else 0
