"""`edged status` as people read it (--json gives the daemon's answer as it is), and `edged events`."""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from ..printable import printable
from . import format as cli_format
from .common import EXIT_USAGE, call, connected, socket_arg


def register(sub: argparse._SubParsersAction) -> None:
    status = sub.add_parser("status", help="show what the running daemon sees (devices, journal, clients)")
    socket_arg(status)
    status.add_argument("--json", action="store_true", help="print the raw status result as JSON")

    events = sub.add_parser("events", help="print live events (printer, drawer, scanner, usb, day, journal, sync)",
                            description="Watch the running daemon's device events as they happen, one per "
                                        "line, e.g. `edged events printer drawer`. Ctrl+C stops.")
    events.add_argument("topics", nargs="*", metavar="TOPIC",
                        help="scanner, printer, drawer, usb, day, journal or sync (default: all)")
    events.add_argument("--json", action="store_true", help="one JSON object per line")
    socket_arg(events)
    status.set_defaults(func=cmd_status)
    events.set_defaults(func=cmd_events)


def cmd_status(args: argparse.Namespace) -> int:
    result = call(args, "status")
    if args.json:
        print(json.dumps(result, indent=2, default=repr))
    else:
        print(format_status(result), end="")
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from ..relay.watch import TOPICS

    unknown = [t for t in args.topics if t not in TOPICS]
    if unknown:
        print(f"edged: unknown topic {unknown[0]!r}; topics: {', '.join(TOPICS)}", file=sys.stderr)
        return EXIT_USAGE
    with connected(args, timeout=None) as client:  # events may be hours apart
        client.request("watch", topics=args.topics or list(TOPICS))
        try:
            for event in client.iter_events():
                if args.json:
                    print(json.dumps(event, default=repr), flush=True)
                else:
                    print(f"{time.strftime('%H:%M:%S')}  {cli_format.event(event)}", flush=True)
        except KeyboardInterrupt:
            pass
    return 0


def format_status(s: dict[str, Any]) -> str:
    lines = [f"till      {s['till_id']}  ({s['server']}{', simulated' if s.get('simulated') else ''}, "
             f"up {s['uptime']:.0f} s)",
             f"journal   {_journal(s['journal'])}"]
    if s.get("identity"):  # the key that signs closed days and exports (`edged identity` for the rest)
        lines.append(f"identity  key {printable(str(s['identity']['fingerprint']))}, epoch {s['identity']['epoch']}")
    lines.append("")
    lines += device_lines(s)
    for name, c in (s.get("sync") or {}).items():
        age = f", oldest unacked {c['lag_age']:.0f} s" if c.get("lag_age") else ""
        last = f" last ack {cli_format.clock(c['last_ack'])}" if c.get("last_ack") else " never acked"
        kinds = f" (kinds {printable(', '.join(c['kinds']))})" if c.get("kinds") else ""
        behind = ", BEHIND" if c["behind"] else ""
        lines.append(f"sync      {printable(name)}{kinds}: {c['state']}{behind}, lag {c['lag']}{age};{last}")
    for kind, d in (s.get("deadlines") or {}).items():
        overdue = f", OVERDUE: seq {', '.join(map(str, d['overdue']))}" if d["overdue"] else ""
        lines.append(f"deadline  {kind} within {d['within']:g} s by {d['consumer']}: {d['waiting']} waiting{overdue}")
    skipped = (s.get("degraded") or {}).get("skipped_records")
    if skipped:  # edged's own records that did not fit, skipped by their reader: never hidden
        seqs = ", ".join(str(seq) for seq in sorted(r["seq"] for r in s["degraded"]["records"])[:10])
        lines.append(f"DEGRADED  {skipped} of edged's own records skipped (malformed; see the log): seq {seqs}"
                     + (", ..." if skipped > 10 else ""))
    if s.get("usb"):
        sticks = ", ".join(f"{k['device']} ({k['fs_type']}{', mounted' if k['mounted'] else ''})"
                           for k in s["usb"]["sticks"]) or "none plugged in"
        lines.append(f"usb       sticks: {sticks}; mounter {s['usb']['mounter']}")
    conns = s.get("connections", [])
    lines.append("")
    lines.append(f"clients   {len(conns)} of at most {s.get('max_connections', '?')}; refused busy "
                 f"{s.get('refused_busy', 0)}, dropped for not reading {s.get('dropped_watchers', 0)}")
    rows = []
    for c in conns:
        subs = "; ".join(f"consumer {printable(n)} lag {v['lag']} in flight {v['in_flight']}/{v['window']}"
                         for n, v in c.get("subscriptions", {}).items())
        doing = "  ".join(x for x in (f"watching {','.join(c['topics'])}" if c.get("topics") else "", subs) if x)
        rows.append((printable(c["client"]), f"pid {c['pid']}", f"uid {c['uid']}", f"queue {c.get('queue', 0)}", doing))
    lines += cli_format.table(rows, indent="  ") if rows else []
    return "\n".join(lines) + "\n"


def device_lines(s: dict[str, Any]) -> list[str]:
    """The status's device table: one row per printer, drawer and scanner."""
    rows = [("DEVICE", "KIND", "STATE", "DETAIL")]
    for name, dev in sorted(s["devices"].items()):
        detail = ", ".join(dev.get("reasons") or []) or "-"
        if dev.get("detail"):
            detail += f" ({dev['detail']})"
        rows.append((printable(name), dev["kind"], dev["state"], printable(detail)))
    return cli_format.table(rows) if len(rows) > 1 else ["(no devices configured)"]


def _journal(j: dict[str, Any]) -> str:
    """The status's journal line: its range, and its state when not ok."""
    span = cli_format.seq_range(j["first_seq"], j["last_seq"])
    out = "empty" if span == "empty" else f"records {span}"
    if j.get("segments") and span != "empty":
        out += f" in {cli_format.plural(j['segments'], 'segment')}"
    # Records a cursor or an ack proved existed, lost from storage (journal.lost): never hidden.
    out += "".join(f"; LOST {r['first_seq']}..{r['last_seq']}" for r in j.get("lost", []))
    if j.get("state", "ok") != "ok":  # degraded or read-only: the technician must see it
        out += f"; {j['state'].replace('_', '-').upper()}" + (f": {j['problem']}" if j.get("problem") else "")
    return out
