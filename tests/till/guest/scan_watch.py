"""A client of the edged running in the guest that watches scanner events, as a till app would.

It speaks edged's socket protocol through the installed package's BlockingClient, subscribes to
the `scanner` topic, then writes FILE.watching (so the host knows that no scan from now on is
missed) and appends every event to FILE as one JSON object per line.

Usage (in the guest): scan_watch.py FILE [SOCKET]
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, "/usr/lib/edged")
from edged.client import BlockingClient  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    sock = sys.argv[2] if len(sys.argv) > 2 else "/run/edged/edged.sock"
    with BlockingClient.connect(sock, client="till-test-watch", timeout=None) as client, \
            open(out, "a", buffering=1) as f:
        client.request("watch", topics=["scanner"])
        out.with_suffix(".watching").write_text("")
        for event in client.iter_events():
            f.write(json.dumps(event) + "\n")


if __name__ == "__main__":
    main()
