"""One request to edged on its socket, its result printed as JSON: lighter than edged's CLI,
which imports the printer stack, and than edged.client (asyncio): seconds under emulation.

Usage (in the guest): edged_request.py OP [JSON_PARAMS | -]   (-: the parameters on stdin)
"""
from __future__ import annotations

import json
import sys

from wire import Wire

client = Wire("till-test")
arg = sys.argv[2] if len(sys.argv) > 2 else "{}"
params = json.loads(sys.stdin.read() if arg == "-" else arg)
print(json.dumps(client.request(sys.argv[1], **params), default=repr))
client.close()
