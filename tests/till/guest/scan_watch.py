"""A client of the edged running in the guest that watches scanner events, as a till app would.

It speaks edged's socket protocol as docs/PROTOCOL.md states it (wire.py: a POS app need not be
Python; edged.client's asyncio costs seconds to import under emulation), subscribes to
the `scanner` topic, then writes FILE.watching (so the host knows that no scan from now on is
missed) and appends every event to FILE as one JSON object per line.

Usage (in the guest): scan_watch.py FILE [SOCKET]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from wire import Wire


def main() -> None:
    out = Path(sys.argv[1])
    sock = sys.argv[2] if len(sys.argv) > 2 else "/run/edged/edged.sock"
    client = Wire("till-test-watch", sock)
    with open(out, "a", buffering=1) as f:
        client.request("watch", topics=["scanner"])
        out.with_suffix(".watching").write_text("")
        for event in client.events():
            f.write(json.dumps(event, default=repr) + "\n")


if __name__ == "__main__":
    main()
