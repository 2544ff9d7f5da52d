"""A client of edged in the guest that watches device events, as a POS app would, and writes
each one as a JSON line to FILE (flushed, so the host reads it over 9p as it comes).
FILE.ready appears once edged has answered the `watch`: events from then on are in FILE.

Usage (in the guest): watch_events.py FILE TOPIC...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from wire import Wire


def main() -> None:
    out, topics = Path(sys.argv[1]), sys.argv[2:]
    client = Wire("till-test-watch")
    with out.open("a") as f:
        client.request("watch", topics=topics)
        Path(f"{out}.ready").write_text("")
        for event in client.events():
            f.write(json.dumps(event, default=repr) + "\n")
            f.flush()


if __name__ == "__main__":
    main()
