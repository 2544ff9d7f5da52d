"""The ops the daemon registers, read from a real (simulated) daemon started in-process."""
from __future__ import annotations

import asyncio
import shutil
import tempfile

from edged import config
from edged.daemon import Daemon
from edged.relay.registry import Spec


def registered_ops() -> dict[str, Spec]:
    """Every op the simulated till serves (the most there are: `sim` too), with its declaration."""
    tmp = tempfile.mkdtemp(prefix="edged-ops-", dir="/tmp")
    cfg = config.from_dict({"daemon": {"socket": f"{tmp}/s.sock", "state_dir": f"{tmp}/state"}})

    async def main() -> dict[str, Spec]:
        async with Daemon(cfg, simulate=True).parts() as daemon:
            assert daemon.server is not None
            return {name: entry.spec for name, entry in daemon.server.ops.entries.items()}
    try:
        return asyncio.run(main())
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
