"""`edged print-test`, `print`, `jobs`, `reprint` and `drawer ...`: the technician's printer tools."""
from __future__ import annotations

import argparse
import io
import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from ..devices.printer.jobs import FINISHED
from ..printable import printable
from .common import call, connected, socket_arg

SPECIALS = "€ ä ö ü ß æ ø å Æ Ø Å"
_WAIT_HELP = "do not wait for the printer; print the job id and return"


def register(sub: argparse._SubParsersAction) -> None:
    pt = sub.add_parser("print-test", help="print a test receipt: every block kind and the till's characters",
                        description="Print a test receipt through the running daemon: text styles, the "
                                    f"characters {SPECIALS}, two-column rows, a rule, EAN-13 and CODE128 "
                                    "barcodes, a QR code, a logo, feed and cut. Waits until the printer "
                                    "confirms it (exit 0) or the job ends otherwise (exit 1).")
    pt.add_argument("printer", nargs="?", help="printer name (default: the only one)")
    pt.add_argument("--no-wait", action="store_true", help=_WAIT_HELP)
    pr = sub.add_parser("print", help="print a receipt document (JSON) or raw ESC/POS bytes",
                        description="Print FILE through the running daemon. FILE is a receipt document "
                                    "as in docs/PROTOCOL.md, in JSON; an image block may name a PNG file "
                                    "(relative to FILE) instead of holding the bytes. With --raw, FILE's "
                                    "bytes go to the printer unchanged.")
    pr.add_argument("file", metavar="FILE")
    pr.add_argument("--raw", action="store_true", help="FILE holds ESC/POS bytes, not a JSON document")
    pr.add_argument("--printer", help="printer name (default: the only one)")
    pr.add_argument("--job-id", help="idempotency key: the same id never prints twice (default: a new one)")
    pr.add_argument("--no-wait", action="store_true", help=_WAIT_HELP)
    jobs = sub.add_parser("jobs", help="list recent print jobs and their states",
                          description="Recent print jobs, oldest first: queued, printing, held (with the "
                                      "printer's reason), done, failed, unknown (sent, never confirmed: check "
                                      "the paper and `edged reprint` if missing) or expired.")
    jobs.add_argument("--printer", help="only this printer's jobs")
    jobs.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    jobs.add_argument("--json", action="store_true", help="print the raw result as JSON")
    rp = sub.add_parser("reprint", help="print a done or unknown job again, marked as a copy",
                        description="Print a finished job again. The copy says *** COPY *** and never "
                                    "opens the drawer.")
    rp.add_argument("job_id", metavar="JOB_ID")
    rp.add_argument("--no-wait", action="store_true", help=_WAIT_HELP)
    dr = sub.add_parser("drawer", help="open the cash drawer, show its state, calibrate its sensor")
    dsub = dr.add_subparsers(dest="drawer_command", metavar="DCOMMAND", required=True)
    do = dsub.add_parser("open", help="kick the drawer open (journaled with the reason and your user)",
                         description="Open the cash drawer. Needs root, edged's user or a privileged "
                                     "user/group (daemon.privileged_users / privileged_groups).")
    do.add_argument("--reason", default="opened by a technician (edged drawer open)")
    dsub.add_parser("status", help="open, closed or unknown, for every drawer")
    cal = dsub.add_parser("calibrate", help="find the sensor setting: close, then open the drawer when told",
                          description="Walks you through closing and opening the drawer, reads the "
                                      "sensor (pin 3) each time and prints the `sensor = ...` line for "
                                      "the drawer's [drawers.NAME] table in edged.toml.")
    for p in (do, cal):
        p.add_argument("--drawer", help="drawer name (default: the only one)")
    for p in (pt, pr, jobs, rp, do, dsub.choices["status"], cal):
        socket_arg(p)
    pt.set_defaults(func=cmd_print)
    pr.set_defaults(func=cmd_print)
    jobs.set_defaults(func=cmd_jobs)
    rp.set_defaults(func=cmd_reprint)
    dr.set_defaults(func=cmd_drawer)


def test_document(till_id: str) -> dict[str, Any]:
    from PIL import Image, ImageDraw

    logo = Image.new("1", (240, 64), 1)
    draw = ImageDraw.Draw(logo)
    draw.rectangle((2, 2, 237, 61), outline=0, width=4)
    draw.text((20, 24), "edged print test", fill=0)
    buf = io.BytesIO()
    logo.save(buf, "PNG")
    return {"blocks": [
        {"image": buf.getvalue()},
        {"text": "PRINT TEST", "align": "center", "size": "double", "bold": True},
        {"text": f"till {till_id}  {time.strftime('%Y-%m-%d %H:%M')}", "align": "center"},
        {"rule": "="},
        {"text": SPECIALS},
        {"text": "bold", "bold": True}, {"text": "underlined", "underline": True},
        {"text": "right aligned", "align": "right"}, {"text": "tall", "size": "double_height"},
        {"row": ["Two-column row", "12,50 €"]},
        {"row": ["A long item name that wraps onto a second line of the receipt", "3,99 €"]},
        {"rule": "-"},
        {"barcode": "4006381333931", "type": "EAN13"},
        {"barcode": "EDGED-TEST", "type": "CODE128"},
        {"qr": f"edged print test {till_id}", "size": 5},
        {"feed": 2},
        {"cut": "partial"},
    ]}


def _load_document(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as e:
        raise SystemExit(f"edged: {path}: cannot read: {e}") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"edged: {path}: not valid JSON: {e}") from None
    for i, block in enumerate(doc.get("blocks", []) if isinstance(doc, dict) else []):
        if isinstance(block, dict) and isinstance(block.get("image"), str):
            image = path.parent / block["image"]
            try:
                block["image"] = image.read_bytes()
            except OSError as e:
                raise SystemExit(f"edged: {path}: blocks[{i}].image: {e}") from None
    return doc


def _follow_job(client: Any, job: dict[str, Any]) -> int:
    """Print the job's states until it ends; 0 when it printed."""
    shown = None
    while True:
        line = f"job {job['job_id']}: {job['state']}"
        if job.get("reason") or job.get("error"):
            line += f" ({job.get('reason') or job.get('error')})"
        if line != shown:
            print(line, flush=True)
            shown = line
        if job["state"] in FINISHED:
            return 0 if job["state"] == "done" else 1
        time.sleep(0.1)
        job = client.request("job", job_id=job["job_id"])


def cmd_print(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"job_id": getattr(args, "job_id", None) or f"cli-{uuid.uuid4().hex[:12]}"}
    if args.printer:
        params["printer"] = args.printer
    with connected(args, timeout=None) as client:
        if args.command == "print-test":
            params["document"] = test_document(client.server_info.get("till_id", "?"))
        elif args.raw:
            try:
                params["raw"] = Path(args.file).read_bytes()
            except OSError as e:
                raise SystemExit(f"edged: {args.file}: cannot read: {e}") from None
        else:
            params["document"] = _load_document(Path(args.file))
        job = client.request("print", **params)
        if job.get("duplicate"):
            print(f"job {job['job_id']} exists already ({job['state']}); not printed again")
            return 0
        return 0 if args.no_wait else _follow_job(client, job)


def cmd_reprint(args: argparse.Namespace) -> int:
    with connected(args, timeout=None) as client:
        job = client.request("reprint", job_id=args.job_id)
        return 0 if args.no_wait else _follow_job(client, job)


def cmd_jobs(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"limit": args.limit}
    if args.printer:
        params["printer"] = args.printer
    result = call(args, "jobs", **params)
    if args.json:
        print(json.dumps(result, indent=2, default=repr))
        return 0
    rows = [("JOB", "PRINTER", "STATE", "AGE", "DETAIL")]
    now = time.time()
    for j in result["jobs"]:
        detail = j.get("reason") or j.get("error") or (f"copy of {j['copy_of']}" if j.get("copy_of") else "")
        rows.append((printable(j["job_id"]), j["printer"], j["state"], f"{now - j['created']:.0f} s",
                     printable(detail)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
    if len(rows) == 1:
        print("(no print jobs yet)")
    return 0


def cmd_drawer(args: argparse.Namespace) -> int:
    if args.drawer_command == "open":
        params = {"reason": args.reason, **({"drawer": args.drawer} if args.drawer else {})}
        answer = call(args, "drawer_open", **params)
        print(f"drawer {answer['drawer']} opened")
        return 0
    drawers = {n: d for n, d in call(args, "status", refresh=True)["devices"].items() if d["kind"] == "drawer"}
    if not drawers:
        print("edged: no drawers configured (add a [drawers.NAME] table)", file=sys.stderr)
        return 1
    if args.drawer_command == "status":
        for name, d in sorted(drawers.items()):
            why = f" ({', '.join(d['reasons'])})" if d["reasons"] else ""
            print(f"{name}: {d['state']}{why}, on printer {d['printer']}, sensor {d['sensor']}")
        return 0
    return _calibrate(args, drawers)


def _calibrate(args: argparse.Namespace, drawers: dict[str, Any]) -> int:
    name = args.drawer or (next(iter(drawers)) if len(drawers) == 1 else None)
    if name not in drawers:
        print(f"edged: name the drawer with --drawer ({', '.join(drawers)})", file=sys.stderr)
        return 2

    def pin3() -> bool | None:
        return call(args, "status", refresh=True)["devices"][name]["drawer_pin3"]

    input(f"1/2  Push drawer {name} shut, then press Enter. ")
    closed = pin3()
    input("2/2  Press Enter: edged opens the drawer (stand clear). ")
    call(args, "drawer_open", drawer=name, reason="sensor calibration (edged drawer calibrate)")
    time.sleep(1.0)
    opened = pin3()
    level = {True: "high", False: "low", None: "no answer"}
    print(f"pin 3 shut: {level[closed]}, open: {level[opened]}")
    if closed is None or opened is None:
        print("edged: the printer did not answer its status; check it and run this again", file=sys.stderr)
        return 1
    setting = "none" if closed == opened else ("open_high" if opened else "open_low")
    if setting == "none":
        print("The sensor did not change: this drawer has no sensor, or it is not wired to pin 3.")
    print(f"\nPut this in /etc/edged/edged.toml and restart edged:\n\n[drawers.{name}]\nsensor = \"{setting}\"")
    return 0
