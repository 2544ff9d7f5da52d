"""Run a client under another uid, as the access tests do: fork, drop to the uid, report through a pipe."""
from __future__ import annotations

import asyncio
import json
import os
import traceback
from typing import Any, Callable

from edged.client import BlockingClient, ClientError

NOBODY = 65534  # nobody:nogroup on Debian


def answer(c: BlockingClient, op: str, **params: Any) -> dict[str, Any]:
    """The result, or {"error": code, "message": ...}: a refusal is an answer to report, not a failure."""
    try:
        return c.request(op, **params)
    except ClientError as e:
        return {"error": e.code, "message": e.message}


async def as_user(path: str, body: Callable[[BlockingClient], Any], uid: int = NOBODY,
                  gid: int = NOBODY, groups: tuple[int, ...] = ()) -> Any:
    """body(client connected as uid) in a forked child; its JSON-able result. The parent's event loop
    keeps serving meanwhile (the daemon under test runs in it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups(list(groups))
            os.setgid(gid)
            os.setuid(uid)
            with BlockingClient.connect(path, f"uid-{uid}", timeout=20) as c:
                out = {"ok": body(c)}
        except BaseException:  # reported to the parent, which fails the test with it
            out = {"crash": traceback.format_exc()}
        with os.fdopen(w, "w") as f:
            json.dump(out, f)
        os._exit(0)
    os.close(w)
    loop = asyncio.get_running_loop()
    data = await loop.run_in_executor(None, _read_all, r)
    await loop.run_in_executor(None, os.waitpid, pid, 0)
    out = json.loads(data)
    assert "crash" not in out, out["crash"]
    return out["ok"]


def _read_all(fd: int) -> str:
    with os.fdopen(fd) as f:
        return f.read()
