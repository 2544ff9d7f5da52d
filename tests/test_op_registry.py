"""One op registry: each op declared once with its parameters and access level; PROTOCOL.md's
op table agrees with it; a name declared twice stops the start; each level is enforced for
clients under other uids (the real daemon)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from edged import config
from edged.client import BlockingClient, ClientError
from edged.journal.ops import JournalOps
from edged.relay.registry import DuplicateOp, Level, Registry, needs, op
from edged.relay.server import Server
from edged.till import Till
from other_user import POS_UID, PRIVILEGED_UID, Edged, as_user, needs_root
from registered import registered_ops

PROTOCOL = Path(__file__).resolve().parent.parent / "docs" / "PROTOCOL.md"


@pytest.fixture(scope="module")
def ops():
    return registered_ops()


def _op_table() -> dict[str, dict[str, str]]:
    """PROTOCOL.md, section "Operations": op -> its row's cells by column name."""
    text = PROTOCOL.read_text(encoding="utf-8")
    section = text[text.index("\n## Operations\n"):]
    section = section[:section.index("\n## ", 1)]
    rows = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    table = {}
    for line in rows[2:]:
        cells = dict(zip(header, (c.strip() for c in line.strip("|").split(" | "))))
        name = re.fullmatch(r"`(\w+)`", cells["op"])
        assert name, f"an op cell that is not one `name`: {cells['op']!r}"
        table[name.group(1)] = cells
    return table


def test_protocol_op_table_lists_every_registered_op_with_its_access_level(ops):
    table = _op_table()
    assert set(table) == set(ops), (f"documented only: {sorted(set(table) - set(ops))}; "
                                    f"registered only: {sorted(set(ops) - set(table))}")
    for name, spec in ops.items():
        assert table[name]["access"] == spec.level.value, name
        for param in spec.params:
            assert f"`{param}`" in table[name]["params"], f"{name}: parameter {param!r} is not documented"
    assert {s.level for s in ops.values()} == set(Level)  # all three levels are in use
    levels = "\n".join(line for line in PROTOCOL.read_text().splitlines() if line.startswith("| `"))
    for level in Level:
        assert f"| `{level.value}` |" in levels, f"level {level.value} is not explained"


class _Status:
    @op("status", Level.ANY)
    async def op_status(self, session, params) -> dict[str, Any]:
        return {}


class _Watch:
    @op("watch", Level.PRIVILEGED, topics=needs(list))
    async def op_watch(self, session, params) -> dict[str, Any]:
        return {}


def test_a_name_declared_twice_fails_at_startup(short_dir):
    with pytest.raises(DuplicateOp) as e:
        Registry.of(JournalOps(None), JournalOps(None))  # type: ignore[arg-type]
    assert "declared twice" in str(e.value) and "JournalOps" in str(e.value)
    till = Till(config.from_dict({"till_id": "t1"}), {}, False)
    with pytest.raises(DuplicateOp, match="'status' is declared twice: by Till and by _Status"):
        Registry.of(till, _Status())
    # The server's own ops (hello, watch) count too: the socket is never opened.
    with pytest.raises(DuplicateOp, match="'watch'"):
        Server(str(short_dir / "s.sock"), Registry.of(till, _Watch()), till.hello_info)
    assert not (short_dir / "s.sock").exists()


def _every_op(sock: str, names: list[str]) -> dict[str, str]:
    """Each op with no parameters: what edged answers (ok, or the error code)."""
    out = {}
    with BlockingClient.connect(sock, "prober", timeout=30) as c:
        for name in names:
            try:
                c.request(name)
                out[name] = "ok"
            except ClientError as e:
                out[name] = e.code
    return out


@needs_root
def test_each_op_is_refused_exactly_to_the_users_its_level_excludes(short_dir, ops):
    names = sorted(set(ops) - {"hello"})
    allowed = {"ordinary": {Level.ANY}, "privileged": {Level.ANY, Level.PRIVILEGED}, "root": set(Level)}
    with Edged(short_dir) as edged:
        answers = {"ordinary": as_user(POS_UID, lambda: _every_op(edged.sock, names)),
                   "privileged": as_user(PRIVILEGED_UID, lambda: _every_op(edged.sock, names)),
                   "root": _every_op(edged.sock, names)}
    for who, got in answers.items():
        refused = {n for n, code in got.items() if code == "not_permitted"}
        assert refused == {n for n in names if ops[n].level not in allowed[who]}, who


@needs_root
def test_parameters_are_checked_as_declared_before_the_handler_runs(short_dir):
    with Edged(short_dir) as edged, BlockingClient.connect(edged.sock, "t") as c:
        for op_name, params, message in [
            ("subscribe", {"consumer": "x"}, "missing parameter 'from'"),
            ("subscribe", {"consumer": "x", "from": 1, "window": "9"}, "parameter 'window' must be int, got str"),
            ("status", {"refresh": 1}, "parameter 'refresh' must be bool, got int"),
            ("ack", {"consumer": "x", "seq": True}, "parameter 'seq' must be int, got bool"),
            ("print", {"job_id": "j", "raw": "text"}, "parameter 'raw' must be bytes, got str"),
            ("sync_log", {"since": "yesterday"}, "parameter 'since' must be int or float, got str"),
        ]:
            with pytest.raises(ClientError) as e:
                c.request(op_name, **params)
            assert (e.value.code, e.value.message) == ("bad_request", message)
        # The same client is refused a privileged op before its parameters are looked at.
        assert as_user(POS_UID, lambda: _every_op(edged.sock, ["day_close"])) == {"day_close": "not_permitted"}
