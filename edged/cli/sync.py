"""`edged sync log`: what was acked by whom and when ("did Tuesday reach head office?")."""
from __future__ import annotations

import argparse
import datetime
import json
import re
import sys
import time
from typing import Any

from ..printable import printable
from .common import call, socket_arg
from .format import when

_AGO = re.compile(r"^(\d+)\s*([mhd])$")
_UNIT = {"m": 60, "h": 3600, "d": 86400}


def register(sub: argparse._SubParsersAction) -> None:
    sync = sub.add_parser("sync", help="has head office got this till's data? sync log and consumer state",
                          description="The sync layer reads the journal as a consumer and acks what head "
                                      "office has. These commands show what was acked, by whom and when.")
    ssub = sync.add_subparsers(dest="sync_command", metavar="SCOMMAND", required=True)
    log = ssub.add_parser(
        "log", help="acks, consumers registered, online/offline, and which closed days each consumer has",
        description="Print the sync log: each line says when a consumer acked which records (acks are "
                    "gathered per minute), registered, was removed, went online or offline. Then, per "
                    "closed business day, whether each consumer has all of it and since when: e.g. "
                    "`edged sync log --consumer head-office --since 2026-11-17`.",
        epilog="TIME is a date (2026-11-17), a date and time (\"2026-11-17 14:00\"), or how long ago "
               "(30m, 2h, 3d).")
    log.add_argument("--consumer", metavar="NAME", help="only this consumer (see `edged status`)")
    log.add_argument("--since", metavar="TIME", help="only from this time on (default: everything kept)")
    log.add_argument("--json", action="store_true", help="the log entries, consumers and closed days as JSON "
                                                         "(times as unix times)")
    socket_arg(log)
    sync.set_defaults(func=cmd_sync)


def parse_time(text: str, now: float | None = None) -> float:
    """Unix time from a date, a local date and time, or an age such as 2h."""
    now = time.time() if now is None else now
    match = _AGO.match(text.strip())
    if match:
        return now - int(match[1]) * _UNIT[match[2]]
    try:
        return datetime.datetime.fromisoformat(text.strip()).timestamp()
    except ValueError:
        raise ValueError(f"--since {text!r}: write a date (2026-11-17), a date and time "
                         "(\"2026-11-17 14:00\") or an age (30m, 2h, 3d)") from None


def cmd_sync(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": 5000}
    if args.consumer:
        params["consumer"] = args.consumer
    if args.since:
        try:
            params["since"] = parse_time(args.since)
        except ValueError as e:
            print(f"edged: {e}", file=sys.stderr)
            return 2
    result = call(args, "sync_log", **params)
    consumers = result["consumers"]
    if args.consumer and args.consumer not in consumers and not result["entries"]:
        print(f"edged: no consumer {args.consumer!r} (consumers: {', '.join(consumers) or 'none'})", file=sys.stderr)
        return 1
    days = call(args, "days")["days"]
    if args.json:
        print(json.dumps({**result, "days": days}, indent=2))
        return 0
    print(format_log(result["entries"], days, consumers, args.consumer), end="")
    if result["more"]:
        print("(older entries left out: use --since)")
    return 0


def format_log(entries: list[dict[str, Any]], days: list[dict[str, Any]], consumers: dict[str, Any],
               only: str | None = None) -> str:
    closes = {d["seq"]: d["business_day"] for d in days}
    lines = []
    for e in entries:
        what = e["event"]
        if what == "ack":
            what = f"acked {e['from']}..{e['to']} ({e['acks']} ack{'s' if e['acks'] != 1 else ''}"
            what += f" since {when(e['first_at'])[11:]})" if e["acks"] > 1 else ")"
            done = [day for seq, day in closes.items() if e["from"] <= seq <= e["to"]]
            if done and not (consumers.get(e["consumer"]) or {}).get("kinds"):
                what += f": has business day{'s' if len(done) > 1 else ''} {', '.join(sorted(done))} complete"
        elif what == "registered":
            what = f"registered, reading from seq {e.get('from_seq')}"
        elif what == "removed":
            what = f"removed (had acked up to {e.get('acked')})"
        elif what in ("online", "offline"):
            what = f"{what} (lag {e.get('lag')})"
        lines.append(f"{when(e['at'])}  {printable(e['consumer']):<14} {what}")
    if not lines:
        lines.append("(no sync log entries" + (f" for {only}" if only else "") + ")")
    table = _days(entries, days, consumers, only)
    lines += ["", *table] if table else []
    return "\n".join(lines) + "\n"


def _days(entries: list[dict[str, Any]], days: list[dict[str, Any]], consumers: dict[str, Any],
          only: str | None) -> list[str]:
    """Per closed day: has each consumer (that reads every kind) acked its day.close record, and when."""
    names = [n for n, c in consumers.items() if not c.get("kinds") and (only is None or n == only)]
    if not days or not names:
        return []
    out = ["CLOSED DAY   RECORDS      " + "  ".join(f"{printable(n):<28}" for n in names).rstrip()]
    for day in days[-14:]:
        cells = []
        for name in names:
            acked = consumers[name].get("acked") or 0
            if acked < day["seq"]:
                cells.append(f"not yet (acked to {acked})")
                continue
            at = next((e["at"] for e in entries if e["consumer"] == name and e["event"] == "ack"
                       and e["from"] <= day["seq"] <= e["to"]), None)
            cells.append(f"complete {when(at)}" if at else "complete (acked before these entries)")
        out.append(f"{day['business_day']}   {day['first_seq']}..{day['seq']:<8}".ljust(26)
                   + " " + "  ".join(f"{c:<28}" for c in cells).rstrip())
    return out
