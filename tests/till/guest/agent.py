"""The tests' one long-lived helper in the guest: requests to edged, sent by the host into a FIFO
through the guest agent's file calls and answered into the 9p share, over one connection kept
open. A python3 started per request cost ~0.7 s of the guest's emulated CPU each (and the
suite's budget is minutes); a line written into this FIFO costs the guest almost nothing.

Usage (in the guest): agent.py FIFO OUTDIR
  the host writes request N as OUTDIR/N.req, {"op": OP, "params": {...}} (a new name each time:
  9p in the guest may hold on to an old file's entry), then the line "N" into FIFO (a few bytes:
  one atomic pipe write, however big the request);
  its answer: OUTDIR/N.json, {"ok": true, "result": ...} or {"ok": false, "error": "..."},
  written whole (a temporary name, then renamed).
"""
from __future__ import annotations

import json
import os
import sys

from wire import NotSent, Refused, Wire


def answer(out: str, n: int, reply: dict) -> None:
    tmp = os.path.join(out, f"{n}.tmp")
    with open(tmp, "w") as f:
        json.dump(reply, f, default=repr)
    os.rename(tmp, os.path.join(out, f"{n}.json"))


def main() -> None:
    fifo, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    if not os.path.exists(fifo):
        os.mkfifo(fifo, 0o600)
    # Read and write: the FIFO never reads as ended when the host's writer closes it.
    requests = os.fdopen(os.open(fifo, os.O_RDWR), "rb")
    open(os.path.join(out, "ready"), "w").close()
    wire: Wire | None = None
    for line in requests:
        try:
            n = int(line)
            with open(os.path.join(out, f"{n}.req")) as f:
                req = json.load(f)
        except (ValueError, OSError) as e:  # said, and the next request served all the same
            print(f"agent: request line {line!r}: {e}", file=sys.stderr, flush=True)
            continue
        reply: dict
        for attempt in (1, 2):
            try:
                if wire is None:
                    wire = Wire("till-test")
                reply = {"ok": True, "result": wire.request(req["op"], **req.get("params", {}))}
                break
            except Refused as e:
                reply = {"ok": False, "error": str(e)}
                break
            except OSError as e:  # edged restarted since the last request: a new connection, once
                wire = None
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                # Asked again: a request edged never saw, or a read; a write it may have seen is not.
                if attempt == 2 or not (isinstance(e, NotSent) or req["op"] in ("status", "jobs", "days")):
                    break
            except Exception as e:  # anything else: this request's answer, a new connection, the agent lives on
                wire = None
                reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
                break
        answer(out, n, reply)


if __name__ == "__main__":
    main()
