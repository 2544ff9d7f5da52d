"""The only skips CI accepts. Under CI=true any other skip fails its test, naming what is missing:
CI runs as root on a machine where `make test` installs every tool the tests use, so a skip there
means a missing install step, not a missing capability.

Each entry: the start of the skip's reason -> why CI may skip it. Printed in the run's summary.
"""
from __future__ import annotations

CI_MAY_SKIP: dict[str, str] = {
    "long mode only (pytest --long)":
        "the long variants (ten times the fuzz cases and power-loss workloads, 500 SIGKILLs) take "
        "longer than CI's time budget; they run on demand with `pytest --long`",
}


def allowed(reason: str) -> str | None:
    """Why CI may skip a test with this reason, or None when it may not."""
    for start, why in CI_MAY_SKIP.items():
        if reason.startswith(start):
            return why
    return None
