"""The daemon as systemd runs it: sd_notify over a real datagram socket, signals, logs, CLI."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from edged import config
from edged.daemon import Daemon
from edged.systemd import Notifier, NotifyListener


def start_daemon(tmp: Path, notify: NotifyListener, *extra: str, env_extra: dict | None = None,
                 stderr=subprocess.PIPE) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "1000000"})
    env.update(env_extra or {})
    return subprocess.Popen([sys.executable, "-m", "edged", "run", "--simulate", "--config", os.devnull,
                             "--state-dir", str(tmp / "state"), "--socket", str(tmp / "edged.sock"), *extra],
                            env=env, stderr=stderr, stdout=subprocess.DEVNULL, text=True)


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=60)


def test_ready_watchdog_stopping_and_clean_exit(short_dir):
    notify = NotifyListener(short_dir / "notify")
    proc = start_daemon(short_dir, notify)
    try:
        messages = notify.collect("WATCHDOG=1")
        assert "READY=1" in messages
        assert "WATCHDOG=1" in messages
        assert messages.index("READY=1") < messages.index("WATCHDOG=1")
        status_lines = [m for m in messages if m.startswith("STATUS=")]
        assert status_lines and "printer receipt: ok" in status_lines[0] and "journal ok, seq 0" in status_lines[0]

        sock = str(short_dir / "edged.sock")
        shown = cli("status", "--socket", sock)
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"receipt\s+printer\s+ok", shown.stdout)
        as_json = json.loads(cli("status", "--socket", sock, "--json").stdout)
        assert as_json["devices"]["receipt"]["state"] == "ok" and as_json["simulated"] is True
        changed = cli("sim", "set", "cover_open=on", "--socket", sock)
        assert "edged reads it as error offline, cover_open" in changed.stdout
        notify.collect("STATUS=simulated till; journal ok, seq 0; printer receipt: error (offline, cover_open)", timeout=5)
        assert "STATUS=simulated till; journal ok, seq 0; printer receipt: error (offline, cover_open); drawer drawer: closed; scanner scanner: online; scanner wedge: online; sync: no consumers; 0 clients" \
            in notify.messages

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        notify.collect("STOPPING=1", timeout=2)
        assert "STOPPING=1" in notify.messages
        err = proc.stderr.read()
        assert "SIGTERM received; stopping" in err and "edged stopped" in err
        assert not (short_dir / "edged.sock").exists()
    finally:
        proc.kill()
        proc.wait()


def test_sigint_also_stops_cleanly_and_no_watchdog_unless_asked(short_dir):
    notify = NotifyListener(short_dir / "notify")
    proc = start_daemon(short_dir, notify, env_extra={"WATCHDOG_USEC": ""})
    try:
        assert "READY=1" in notify.collect("READY=1")
        assert "WATCHDOG=1" not in notify.collect("WATCHDOG=1", timeout=2.5)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()


def _log_of_a_run(short_dir, *sim_changes: str, journal_stream: bool = False) -> list[str]:
    """The daemon's log lines from start to SIGTERM, with these `edged sim set` changes between."""
    notify = NotifyListener(short_dir / "notify")
    log_path = short_dir / "log"
    with open(log_path, "w") as log:
        st = os.fstat(log.fileno())
        proc = start_daemon(short_dir, notify, stderr=log,
                            env_extra={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"} if journal_stream else None)
    try:
        assert "READY=1" in notify.collect("READY=1")
        for change in sim_changes:  # each answers after edged re-read the printer
            assert cli("sim", "set", change, "--socket", str(short_dir / "edged.sock")).returncode == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        proc.kill()
        proc.wait()
    return log_path.read_text().splitlines()


def test_journal_stream_gives_priority_prefixed_lines(short_dir):
    lines = _log_of_a_run(short_dir, "paper_out=on", journal_stream=True)
    assert lines and all(re.match(r"^<[0-7]>edged[.\w]*: ", line) for line in lines), lines
    assert any(line.startswith("<4>edged.printer: printer receipt: ok -> error") for line in lines)
    assert any(line.startswith("<6>edged: edged ready") for line in lines)


def test_printer_status_is_logged_only_on_a_real_change_without_trailing_spaces(short_dir):
    """The drawer's sensor is part of the printer's status (for the drawer), not a change of the
    printer: opening and shutting the drawer logs the drawer, never `printer receipt: ok -> ok`."""
    lines = _log_of_a_run(short_dir, "drawer_open=on", "drawer_open=off", "paper_out=on", "paper_out=off",
                          "drawer_open=on", "drawer_open=off")
    assert [line for line in lines if line != line.rstrip()] == []
    printer = [line.split("edged.printer: ", 1)[1] for line in lines if " edged.printer: " in line]
    assert printer == ["printer receipt: unknown -> ok", "printer receipt: ok -> error: offline, paper_out",
                       "printer receipt: error -> ok"], printer
    drawer = [line.split("edged.drawer: ", 1)[1] for line in lines if " edged.drawer: " in line]
    assert drawer == ["drawer drawer: closed"] + ["drawer drawer: open", "drawer drawer: closed"] * 2, drawer


def test_watchdog_is_withheld_while_a_part_is_unhealthy(short_dir):
    notify = NotifyListener(short_dir / "notify")
    cfg = config.from_dict({"daemon": {"state_dir": str(short_dir / "state"),
                                       "socket": str(short_dir / "edged.sock")}})
    notifier = Notifier({"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "200000"})
    daemon = Daemon(cfg, simulate=True, notifier=notifier)

    def count_pings(seconds: float) -> int:
        notify.sock.setblocking(False)
        try:
            while notify.sock.recv(4096):  # pings queued before this window do not count
                pass
        except BlockingIOError:
            pass
        notify.sock.settimeout(0.1)
        notify.messages.clear()
        notify.collect("never", timeout=seconds)
        return notify.messages.count("WATCHDOG=1")

    async def scenario():
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(1.0)
        healthy_pings = await asyncio.to_thread(count_pings, 1.0)
        printer = daemon.till.printers["receipt"]
        printer._task.cancel()  # the status poller dies, as a crashed part would
        await asyncio.sleep(0.3)
        sick_pings = await asyncio.to_thread(count_pings, 1.0)
        daemon._stop.set()
        assert await task == 0
        return healthy_pings, sick_pings

    healthy_pings, sick_pings = asyncio.run(scenario())
    assert healthy_pings >= 5  # every 0.1 s while healthy
    assert sick_pings == 0


def test_no_watchdog_without_watchdog_usec():
    assert Notifier({"NOTIFY_SOCKET": "/x"}).watchdog_interval is None
    assert Notifier({"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000"}).watchdog_interval == 2.0
    assert Notifier({"WATCHDOG_USEC": "4000000", "WATCHDOG_PID": "1"}).watchdog_interval is None


def test_bad_config_stops_startup_with_one_line(short_dir):
    bad = short_dir / "edged.toml"
    bad.write_text("[printers.receipt]\nhost = 'x'\nstatus_intervall = 3\n")
    proc = cli("run", "--config", str(bad), "--state-dir", str(short_dir), "--socket", str(short_dir / "s"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (f"edged: {bad}: printers.receipt.status_intervall: unknown key "
                                   "(did you mean 'status_interval'?)")


def test_demo_runs_end_to_end(tmp_path):
    log = tmp_path / "logs" / "demo.log"
    proc = cli("demo", "--log", str(log))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for step in ("READY=1", "WATCHDOG=1", "till_id", "STOPPING=1; exit code 0"):
        assert step in out
    # It reads like a product: no Python reprs or epoch floats, ranges and plurals in words.
    # (edged's own refusals quote what they refuse: 'day.exported')
    shown = "\n".join(line for line in out.splitlines() if "-> bad_request: " not in line)
    for raw in ("{'", "': ", "['", "None", "True", "False", "records 1..0", "1 days"):
        assert raw not in shown, raw
    # Step 15: what no client may do.
    assert re.search(r"append a day.exported record .* -> bad_request: .*'day.exported'", out)
    assert re.search(r"subscribe head-office from seq \d+, past the end -> bad_request", out)
    assert "-> frame_too_large: " in out and "edged goes on: journal ok" in out
    assert not re.search(r"\b1[7-9]\d{8}\.\d", out)
    assert [line for line in out.splitlines() if line != line.rstrip()] == []
    assert re.search(r"^  journal: +empty$", out, re.M)
    assert re.search(r"receipt\s+printer\s+error\s+offline, paper_out", out)
    assert re.search(r"^  event printer\.status +printer=receipt  state=error  reasons=offline,paper_out ", out, re.M)
    assert re.search(r"^  event printer\.job +job_id=sale-3000001  printer=receipt  state=done  created=\d\d:\d\d:\d\d ",
                     out, re.M)
    assert "| Smørrebrød (æ ø å)                  3,20 €" in out
    assert "the same job_id again (a retry) -> job sale-3000001 on receipt: done, a duplicate: not printed again" in out
    assert re.search(r"^  event drawer\.state +drawer=drawer  open=yes  since=\d\d:\d\d:\d\d$", out, re.M)
    assert "code=4006381333931  symbology=]E0  valid=yes" in out
    assert "code=010950600013435217211231<GS>10AB123" in out and "gs1=(01)09506000134352 (17)211231 (10)AB123" in out
    assert "append -> seq 6, receipt number 3000000\n" in out
    stick_events = re.findall(r"^  event (usb\.[a-z_]+)(?: .*state=(\w+))?", out, re.M)
    assert stick_events[0] == ("usb.export", "waiting") and stick_events[1] == ("usb.inserted", "")
    assert stick_events[-2:] == [("usb.safe_to_remove", ""), ("usb.export", "done")], stick_events
    # The export's progress ends at the figure it reports done with, the size of its files.
    progress = re.findall(r"state=writing  bytes=(\d+)  total=(\d+)", out)
    done = re.search(r"state=done  path=stick/EDGED/demo-till-1/\d{8}  device=sim1  bytes=(\d+)", out)
    sizes = re.findall(r"^    EDGED/demo-till-1/\d{8}/\S+ +(\d+) bytes$", out, re.M)
    assert progress[-1][0] == progress[-1][1] == done[1] == str(sum(map(int, sizes))), (progress, done, sizes)
    # Head office talks back: offline, a web order picked up late, back online, the sync log.
    assert "the sync layer disconnected: event sync.state  consumer=head-office  change=offline" in out
    assert re.search(r"event journal\.overdue +kind=order\.web  seq=10  consumer=pos  within=2s  ", out)
    assert "picked up: event journal.overdue_cleared  kind=order.web  seq=10" in out
    assert re.search(r"sync      head-office: offline, lag 6, oldest unacked \d+ s", out)
    assert "sync      head-office: online, lag 0; last ack" in out
    assert re.search(r"head-office +acked 7\.\.12 \(1 ack\)", out)
    # stock.move is left out of the export (export.exclude_kinds), and known to be.
    assert re.search(r"^ok   demo-till-1 \d{4}-\d\d-\d\d: records 1\.\.13, 11 records and 2 left out on purpose "
                     r"\(stock\.move 2\)$", out, re.M)
    assert "0 records added, 11 already archived, 0 exports refused" in out
    # Step 14: head office enrolls the till's key and takes only what it signed.
    assert "authenticity NOT checked" in out and re.search(r"^enrolled: demo-till-1 key sha256:[0-9a-f]{32}$", out, re.M)
    assert re.search(r"^REFUSED demo-till-1 .*altered-stick.*: manifest.json's signature does not match it", out, re.M)
    assert "0 records added, 0 already archived, 1 export refused" in out
    assert re.search(r"signature good; manifest.json: signature good", out)
    assert re.search(r"demo-till-1: 1 day \(\d{4}-\d\d-\d\d\), 11 records, 2 left out by the till \(stock\.move; "
                     r"not gaps\), seq 1\.\.13, gaps: none", out)
    # Step 16: online to head office: a sale there in milliseconds, sales wait while the broker is gone,
    # then the archive catches up with the journal.
    assert re.search(r"^  a sale \(seq \d+\) reached head office's archive \d+ ms after the POS app appended it$", out,
                     re.M)
    assert re.search(r"^  50 sales later \(last seq \d+\): head-office acked through \d+, 50 records wait", out, re.M)
    caught = re.search(r"caught up in [\d.]+ s; head office holds \d+ records of demo-till-1 through seq (\d+), the "
                       r"till's journal ends at seq (\d+)$", out, re.M)
    assert caught and caught[1] == caught[2], out
    assert re.search(rf"^  online: every record through seq {caught[1]} archived; last batch ", out, re.M)
    # The doctor step: what only the Debian package brings does not apply; the counts match the lists.
    assert re.search(r"^OK +socket +edged\.sock: edged [\d.]+ on till demo-till-1 \(simulated\), up \d+ s; "
                     r"1 printer, 2 scanners$", out, re.M)
    assert len(re.findall(r"^OK +printers ", out, re.M)) == 1 and len(re.findall(r"^OK +scanners ", out, re.M)) == 2
    assert re.search(r"^OK +printers +receipt \(simulated\): ready$", out, re.M)
    for check in ("user", "devices", "udev"):
        assert re.search(rf"^N/A +{check} +not part of a simulated till: ", out, re.M), check
    assert not re.search(r"^FAIL +(?!disk )", out, re.M) and "apt install" not in out
    # The log is kept, not dumped: its path and last warnings only. The temporary directory is gone.
    assert re.search(rf"^the daemon's log: {re.escape(str(log))} \(\d+ lines\)$", out, re.M)
    kept = log.read_text()
    assert "edged ready (till demo-till-1)" in kept and "edged stopped" in kept and "ok -> ok" not in kept
    assert "edged ready" not in out and "client 'edged-demo' connected" not in out
    shown = re.findall(r"^  \d\d:\d\d:\d\d (WARNING|ERROR) +edged[.\w]*: ", out, re.M)
    assert 1 <= len(shown) <= 8 and "printer receipt: ok -> error: offline, paper_out" in kept
    assert re.search(r"^  \d\d:\d\d:\d\d WARNING edged.relay: a client before hello .*frame_too_large", out, re.M)
    tmp = re.search(r"in a temporary directory, removed at the end: (\S+)$", out, re.M)[1]
    assert tmp.startswith(os.path.join(tempfile.gettempdir(), "edged-demo-")) and not os.path.exists(tmp)


def test_a_demo_stopped_by_sigterm_stops_its_daemon_and_leaves_no_directory(tmp_path):
    log = tmp_path / "demo.log"
    demo = subprocess.Popen([sys.executable, "-m", "edged", "demo", "--log", str(log)], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        tmp = None
        for line in demo.stdout:
            if line.startswith("  in a temporary directory, removed at the end: "):
                tmp = line.split(": ", 1)[1].strip()
            if line.startswith("systemd would hear: READY=1"):
                break
        assert tmp and os.path.isdir(tmp)
        demo.send_signal(signal.SIGTERM)
        rest = demo.stdout.read()
        assert demo.wait(30) == 128 + signal.SIGTERM
    finally:
        demo.kill()
        demo.wait()
    assert "systemd would hear: STOPPING=1; exit code 0" in rest
    assert "edged stopped" in log.read_text()
    assert not os.path.exists(tmp)


def test_demo_help_and_where_its_log_goes_by_default():
    from edged.cli.tour import default_log

    in_venv = sys.prefix != sys.base_prefix  # as in a checkout: `make` runs everything from .venv
    assert default_log() == (Path(sys.prefix) / "demo.log" if in_venv else Path("edged-demo.log"))
    shown = cli("demo", "--help").stdout
    assert "--log FILE" in shown and "removed at the end" in shown


def test_edged_events_prints_device_events_as_they_happen(short_dir):
    notify = NotifyListener(short_dir / "notify")
    proc = start_daemon(short_dir, notify, stderr=subprocess.DEVNULL)
    sock = str(short_dir / "edged.sock")
    events = shown = None
    try:
        assert "READY=1" in notify.collect("READY=1")
        bad = cli("events", "coffee", "--socket", sock)
        assert bad.returncode == 2 and "unknown topic 'coffee'" in bad.stderr
        events = subprocess.Popen([sys.executable, "-m", "edged", "events", "printer", "--json", "--socket", sock],
                                  stdout=subprocess.PIPE, text=True)
        shown = subprocess.Popen([sys.executable, "-m", "edged", "events", "printer", "--socket", sock],
                                 stdout=subprocess.PIPE, text=True)
        for _ in range(100):  # until both watches are in place
            conns = json.loads(cli("status", "--json", "--socket", sock).stdout)["connections"]
            if sum(c["topics"] == ["printer"] for c in conns) == 2:
                break
            time.sleep(0.05)
        assert cli("sim", "set", "paper_out=on", "--socket", sock).returncode == 0
        line = events.stdout.readline()
        event = json.loads(line)
        assert event["event"] == "printer.status" and event["state"] == "error" and "paper_out" in event["reasons"]
        # For people: the time it came, its name, its fields; a list as words, no Python repr.
        assert re.fullmatch(r"\d\d:\d\d:\d\d  printer\.status +printer=receipt  state=error  "
                            r"reasons=offline,paper_out  drawer_pin3=no\n", shown.stdout.readline())
    finally:
        for watcher in (events, shown):
            if watcher:
                watcher.terminate()
                watcher.wait(10)
        proc.terminate()
        proc.wait(20)


def test_a_gs1_parser_that_cannot_load_is_said_at_start(short_dir, monkeypatch, caplog):
    """biip is loaded in a thread once scanners are configured (not at import, not at the first
    scan on the loop): a broken one is an error in the log at start, and edged runs on."""
    from edged.devices.scanner import decode

    def broken() -> None:
        raise ImportError("No module named 'biip'")

    monkeypatch.setattr(decode, "_biip", broken)
    cfg = config.from_dict({"daemon": {"state_dir": str(short_dir / "state"),
                                       "socket": str(short_dir / "edged.sock")}})
    daemon = Daemon(cfg, simulate=True, notifier=Notifier({}))

    async def scenario() -> int:
        task = asyncio.create_task(daemon.run())
        await asyncio.sleep(1.0)
        assert not task.done()
        daemon._stop.set()
        return await task

    with caplog.at_level(logging.ERROR, logger="edged"):
        assert asyncio.run(scenario()) == 0
    assert any("GS1 parser (biip) cannot be loaded" in r.getMessage() and "No module named 'biip'" in r.getMessage()
               for r in caplog.records), caplog.text
