"""`edged journal ...` and `edged tail`: the technician's view of the journal."""
from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
from pathlib import Path
from typing import Any

from .. import config
from ..journal.disk import RealDisk
from ..journal.verify import Report, read_all, verify
from ..printable import printable
from .common import call, socket_arg, socket_path


def register(sub: argparse._SubParsersAction) -> None:
    j = sub.add_parser("journal", help="check, read and manage the journal",
                       description="Check and read the journal files (works while edged runs), "
                                   "list or remove the consumers that read it.")
    jsub = j.add_subparsers(dest="journal_command", metavar="JCOMMAND", required=True)
    ver = jsub.add_parser("verify", help="check every record (checksum, sequence, hash chain); exit 1 on any problem",
                          description="Check checksums, sequence numbers and the SHA-256 chain of every "
                                      "record. Prints each problem with its segment file and byte offset; "
                                      "exits 1 if there is any.")
    ver.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ", help="start at this seq")
    dump = jsub.add_parser("dump", help="print records, readable or as JSON lines")
    dump.add_argument("--from", dest="from_seq", type=int, default=0, metavar="SEQ")
    dump.add_argument("--kind", action="append", help="only this kind (repeatable)")
    dump.add_argument("--json", action="store_true", help="one JSON object per line")
    for p in (ver, dump):
        p.add_argument("--state-dir", metavar="DIR", help="edged's state directory (default: from --config)")
        p.add_argument("--config", metavar="FILE", help=f"config file (default {config.DEFAULT_PATH})")
    cons = jsub.add_parser("consumers", help="list the consumers (sync layers) with their lag, or remove one",
                           description="List registered consumers: the last seq each acked and how far "
                                       "behind it is. Segments are only deleted once every consumer has "
                                       "acked them, so remove a consumer that will never come back.")
    cons.add_argument("--remove", metavar="NAME", help="forget this consumer (retention stops waiting for it)")
    socket_arg(cons)
    tail = sub.add_parser("tail", help="follow the journal as a consumer: print records and ack them",
                          description="Subscribe as CONSUMER from its last ack, print each record and ack "
                                      "it. Reconnects by itself if edged restarts. Ctrl+C stops; run again "
                                      "to continue where it left off.")
    tail.add_argument("consumer")
    tail.add_argument("--from", dest="from_seq", default="acked", metavar="SEQ",
                      help='a seq or "acked" (default)')
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    socket_arg(tail)
    j.set_defaults(func=cmd_journal)
    tail.set_defaults(func=cmd_tail)


def journal_disk(state_dir: str | Path) -> RealDisk:
    """The journal in state_dir, read-only use; FileNotFoundError when there is none
    (RealDisk would create it), PermissionError when this user may not read it."""
    path = Path(state_dir) / "journal"
    os.listdir(path / "segments")  # raises rather than is_dir(), which hides a permission error
    return RealDisk(str(path))


def describe(report: Report) -> str:
    """What a verify run covered, e.g. "30 records in 2 segments (seq 1..30)"."""
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "no records"
    lost = "".join(f"; seqs {a}..{b} journaled as lost" for a, b in report.lost)
    return (f"{report.records} record{'s' if report.records != 1 else ''} in {report.segments} "
            f"segment{'s' if report.segments != 1 else ''} ({span}{lost})")


def _disk(args: argparse.Namespace) -> RealDisk:
    state = args.state_dir or config.load(args.config).daemon.state_dir
    try:
        return journal_disk(state)
    except (FileNotFoundError, NotADirectoryError):
        raise SystemExit(f"edged: no journal in {Path(state) / 'journal'}") from None
    except PermissionError as e:
        raise SystemExit(f"edged: {e.filename}: permission denied (run it as root, with sudo)") from None


def _json_safe(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


def format_record(rec: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(_json_safe({k: v for k, v in rec.items() if k != "event"}), ensure_ascii=False)
    when = datetime.datetime.fromtimestamp(rec["ts"] / 1e6).isoformat(sep=" ", timespec="milliseconds")
    extra = "".join(f" {k}={rec[k]}" for k in ("tx_id", "number") if rec.get(k) is not None)
    body = json.dumps(_json_safe(rec["body"]), ensure_ascii=False)
    return printable(f"{rec['seq']:>8}  {when}  {rec['kind']}{extra}  {body}")


def cmd_journal(args: argparse.Namespace) -> int:
    if args.journal_command == "verify":
        report = verify(_disk(args), args.from_seq)
        for problem in report.problems:
            print(problem)
        print(f"{describe(report)}, chain head "
              f"{report.chain_head.hex()[:16]}: {'OK' if report.ok else f'{len(report.problems)} PROBLEM(S)'}")
        return 0 if report.ok else 1
    if args.journal_command == "dump":
        for rec in read_all(_disk(args), args.from_seq, set(args.kind) if args.kind else None):
            print(format_record(rec.event(), args.json))
        return 0
    if args.remove:
        call(args, "consumer_remove", consumer=args.remove)
        print(f"consumer {args.remove!r} removed")
        return 0
    result = call(args, "consumers")
    if not result["consumers"]:
        print("no consumers registered")
    for name, c in result["consumers"].items():
        print(f"{printable(name):20} acked {c['acked']:>10}   lag {c['lag']} record(s)")
    return 0


def cmd_tail(args: argparse.Namespace) -> int:
    from ..client import follow

    path = socket_path(args)
    start: Any = args.from_seq if args.from_seq == "acked" else int(args.from_seq)

    async def go() -> None:
        async for record in follow(path, args.consumer, start=start, client=f"edged-tail:{args.consumer}",
                                   window=100):
            print(format_record(record, args.json), flush=True)

    try:
        asyncio.run(go())
    except KeyboardInterrupt:
        pass
    return 0
