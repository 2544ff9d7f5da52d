"""edged's `status` for the tests, lighter than `edged status --json` (the CLI imports the
printer stack; under TCG that takes seconds). With NAME=STATE arguments it asks again until
each named device is in that state (ok, warn, error, unknown), then prints the status.

Usage (in the guest): edged_status.py [--timeout S] [NAME=STATE ...]; exit 1 on timeout.
"""
from __future__ import annotations

import json
import sys
import time

from wire import Wire


def main() -> int:
    args = sys.argv[1:]
    timeout = 0.0
    if args[:1] == ["--timeout"]:
        timeout, args = float(args[1]), args[2:]
    want = dict(a.split("=", 1) for a in args)
    deadline = time.monotonic() + timeout
    client = Wire("till-test-status")
    while True:
        status = client.request("status")
        devices = status["devices"]
        if all(devices.get(n, {}).get("state") == s for n, s in want.items()):
            print(json.dumps(status, default=repr))
            return 0
        if time.monotonic() > deadline:
            print(json.dumps(status, default=repr))
            return 1
        time.sleep(0.3)


if __name__ == "__main__":
    sys.exit(main())
