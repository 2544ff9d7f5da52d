"""Which CPU edged's threads run on: by default all on one.

edged is one event loop plus helper threads (the journal thread that writes and
fdatasyncs, printer workers, small file writers), and every append crosses
from the loop to the journal thread and back. Waking a thread that sleeps on
another, idle CPU takes an inter-processor interrupt and that CPU's way out of
its idle state: ~35 us a wake-up on this project's build machines (a VM), more
from a deep C-state. Waking one on the same CPU takes ~3 us. Only one of
these threads runs Python at a time anyway (the GIL), so sharing one CPU costs
edged nothing and takes ~0.1 ms off every append's round trip
(docs/ARCHITECTURE.md, "One CPU").

Setting `daemon.cpu`: "auto" (the highest-numbered CPU edged may use; CPU 0
usually takes most interrupts), "any" (leave it to the scheduler), or a
CPU number.
"""
from __future__ import annotations

import os


def problem(setting: str) -> str | None:
    """What is wrong with a `daemon.cpu` value on this machine (None: nothing)."""
    if setting in ("auto", "any"):
        return None
    if not setting.isdigit():
        return f'must be "auto", "any" or a CPU number, got {setting!r}'
    allowed = os.sched_getaffinity(0)
    if int(setting) not in allowed:
        return f"CPU {setting} is not one edged may run on here (allowed: {_span(allowed)})"
    return None


def place(setting: str) -> str:
    """Pin the calling thread, and so every thread it starts later, as `setting` says.
    Call before the event loop starts any thread. Returns what was done, for the log."""
    allowed = os.sched_getaffinity(0)
    if setting == "any" or len(allowed) == 1:
        return f"threads on any of CPUs {_span(allowed)}"
    cpu = max(allowed) if setting == "auto" else int(setting)
    try:
        os.sched_setaffinity(0, {cpu})
    except PermissionError as e:  # a seccomp filter (a unit's SystemCallFilter=~@resources): run unpinned
        return f"threads on any of CPUs {_span(allowed)}: pinning to CPU {cpu} was refused ({e.strerror})"
    return f"threads on CPU {cpu} (of {_span(allowed)}; daemon.cpu = {setting!r})"


def _span(cpus: set[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))
