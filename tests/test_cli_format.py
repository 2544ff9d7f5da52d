"""How the CLI and the demo show values: clock times, ranges, plurals, events, status; never a repr."""
from __future__ import annotations

import time

from edged.cli import format as f
from edged.cli.status import format_status


def test_times_are_local_clock_times_with_the_date_only_where_it_matters():
    now = time.mktime((2026, 12, 3, 14, 3, 22, 0, 0, -1))
    assert f.clock(now, now) == "14:03:22"
    assert f.clock(now - 3 * 86400, now) == "2026-11-30 14:03:22"
    assert f.when(now) == "2026-12-03 14:03:22"


def test_ranges_plurals_durations():
    assert f.seq_range(1, 0) == "empty" and f.seq_range(1, 12) == "1..12" and f.seq_range(5, 5) == "5..5"
    assert [f.plural(n, "day") for n in (0, 1, 2)] == ["0 days", "1 day", "2 days"]
    assert f.plural(1, "entry", "entries") == "1 entry" and f.plural(3, "entry", "entries") == "3 entries"
    assert [f.seconds(v) for v in (2.0, 1.003, 75.4)] == ["2s", "1.0s", "75s"]


def test_scanned_text_names_its_control_characters():
    assert f.text("0109506000134352\x1d10AB123\r") == "0109506000134352<GS>10AB123<CR>"
    assert f.text("Zoo@Straße-42") == "Zoo@Straße-42"


def test_an_event_reads_like_edged_events_prints_it():
    at = time.time()
    ev = {"event": "printer.status", "printer": "receipt", "state": "error", "reasons": ["offline", "paper_out"],
          "drawer_pin3": False}
    assert f.event(ev) == "printer.status     printer=receipt  state=error  reasons=offline,paper_out  drawer_pin3=no"
    job = {"event": "printer.job", "job_id": "sale-1", "created": at, "updated": at, "reason": None}
    assert f.event(job) == f"printer.job        job_id=sale-1  created={f.clock(at)}  updated={f.clock(at)}"
    scan = {"event": "scanner.scan", "code": "010950600013435217211231\x1d10AB123",
            "gs1": {"01": "09506000134352", "17": "211231", "10": "AB123"}, "valid": True}
    assert f.fields(scan) == ("code=010950600013435217211231<GS>10AB123  gs1=(01)09506000134352 (17)211231 "
                              "(10)AB123  valid=yes")
    overdue = {"event": "journal.overdue", "within": 2.0, "late_by": 1.003, "export_id": "x"}
    assert f.fields(overdue, skip={"export_id"}) == "within=2s  late_by=1.0s"
    for line in (f.event(ev), f.event(job), f.fields(scan)):
        assert "{" not in line and "[" not in line and "'" not in line


def test_tables_and_key_values_are_aligned_without_trailing_spaces():
    assert f.table([("A", "BB", ""), ("CCC", "D", "x")]) == ["A    BB", "CCC  D   x"]
    assert f.key_values([("journal", "empty"), ("till_id", "t-1")]) == ["  journal: empty", "  till_id: t-1"]


def _status(**journal) -> dict:
    return {"till_id": "t-1", "server": "edged 0.1.0", "simulated": True, "uptime": 3.2, "journal": journal,
            "devices": {"receipt": {"kind": "printer", "state": "ok", "reasons": []}}, "connections": []}


def test_status_says_empty_for_a_new_journal_and_its_range_after():
    assert "journal   empty\n" in format_status(_status(first_seq=1, last_seq=0, state="ok", segments=1))
    assert "journal   records 1..12 in 2 segments\n" in format_status(_status(first_seq=1, last_seq=12, state="ok",
                                                                              segments=2))
    shown = format_status(_status(first_seq=1, last_seq=12, state="read_only", segments=1, problem="disk full"))
    assert "journal   records 1..12 in 1 segment; READ-ONLY: disk full\n" in shown
    assert all(line == line.rstrip() for line in shown.splitlines())
