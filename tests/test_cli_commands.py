"""`edged COMMAND` imports only COMMAND's group (edged/cli/__init__.py): its map of commands to
groups must say what the groups really register, and a till's everyday commands must not load
the printer stack, MQTT, the archive's drivers or cryptography they never use."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from edged import cli


def _registered(name: str) -> set[str]:
    sub = argparse.ArgumentParser().add_subparsers()
    cli.group(name).register(sub)
    return set(sub.choices)


def test_every_command_is_mapped_to_the_group_that_registers_it():
    registered = {command: name for name in cli.GROUPS for command in _registered(name)}
    assert registered == cli.COMMANDS


def test_the_full_help_still_lists_every_command():
    text = cli.build_parser().format_help()
    missing = [c for c in cli.COMMANDS if f"    {c} " not in text and f"    {c}\n" not in text]
    assert missing == [], text


HEAVY = ("escpos.escpos", "paho.mqtt.client", "psycopg", "cryptography", "edged.day.archive", "asyncio", "biip")


@pytest.mark.parametrize("argv, allowed", [
    (["status"], ()),
    (["day", "close", "2026-11-02"], ()),
    (["doctor"], ("asyncio",)),
    (["scan", "record", "/dev/null", "x.json"], ("asyncio",)),  # python-evdev imports asyncio itself
    (["journal", "verify"], ("asyncio",)),
])
def test_a_command_loads_only_what_it_uses(argv, allowed):
    """Parsed (not run): what building its parser and resolving its handler imported."""
    code = ("import sys; from edged import cli; a = cli.build_parser(sys.argv[1]).parse_args(sys.argv[1:]); "
            "assert callable(a.func); print(' '.join(m for m in " + repr(HEAVY) + " if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert loaded <= set(allowed), f"edged {' '.join(argv)} imported {sorted(loaded - set(allowed))}"
