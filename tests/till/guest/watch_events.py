"""A client of edged in the guest that watches device events, as a POS app would, and writes
each one as a JSON line to FILE (flushed, so the host reads it over 9p as it comes).
FILE.ready appears once edged has answered the `watch`: events from then on are in FILE.

Usage (in the guest): watch_events.py FILE TOPIC...
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, "/usr/lib/edged")
from edged.client import BlockingClient  # noqa: E402


def main() -> None:
    out, topics = Path(sys.argv[1]), sys.argv[2:]
    with BlockingClient.connect(client="till-test-watch", timeout=None) as client, out.open("a") as f:
        client.request("watch", topics=topics)
        Path(f"{out}.ready").write_text("")
        for event in client.iter_events():
            f.write(json.dumps(event, default=repr) + "\n")
            f.flush()


if __name__ == "__main__":
    main()
