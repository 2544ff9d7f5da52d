"""The Debian package in a booted Debian 12 (systemd as PID 1, systemd-nspawn, no network).

`make test-package` runs these in file order: each step builds on the till the previous left
(installed, configured, appended to, upgraded, purged). Every check logs what it saw.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

from container import ENV, UPGRADE_VERSION, log

# A sim printer inside the container: the emulator on loopback, as `edged sim printer` runs it.
PRINTER_CONFIG = """
# Added by the package test: the ESC/POS emulator on loopback.
till_id = "shop1-till1"

[printers.receipt]
backend = "network"
host = "127.0.0.1"
port = 9100
"""

APPENDER = r"""
import sys, time
sys.path.insert(0, "/usr/lib/edged")
from edged.client import BlockingClient, ClientError, ConnectionClosed

out, total = open(sys.argv[1], "a", buffering=1), int(sys.argv[2])
i, client, gave_up = 0, None, time.monotonic() + 120
while i < total and time.monotonic() < gave_up:
    try:
        if client is None:
            client = BlockingClient.connect("/run/edged/edged.sock", "appender", timeout=10)
        rec = {"kind": "sale", "body": {"i": i}, "tx_id": f"sale-{i}"}
        seq = client.request("append", records=[rec])["records"][0]["seq"]
        out.write(f"{i} {seq}\n")  # acked: edged says it is on disk
        i += 1
    except (OSError, ConnectionClosed, ClientError):
        client = None  # edged went away: the same tx_id again once it is back
        time.sleep(0.02)
"""


def test_lintian_clean(debs):
    ho = next(debs[0].parent.parent.glob("first/edged-headoffice_*.deb"))
    out = subprocess.run(["lintian", "--fail-on", "error,warning", "-L", ">=info", str(debs[0]), str(ho)],
                         capture_output=True, text=True)
    tags = sorted({re.sub(r"\s*\[.*", "", line) for line in out.stdout.splitlines() if line[:2] in ("E:", "W:", "I:")})
    log("lintian: " + ("; ".join(tags) or "no tags"))
    assert out.returncode == 0, out.stdout + out.stderr
    assert not [t for t in tags if t.startswith(("E:", "W:"))]


def test_installs_with_no_network_and_the_service_sends_ready(till, debs):
    assert till.sh("ls /sys/class/net").stdout.split() == ["lo"], "the till must be offline"
    assert till.sh("command -v python3 || true").stdout == "", "the bare till must not have python3 yet"
    installed = till.sh("DEBIAN_FRONTEND=noninteractive apt-get install -y /mnt/packages/bundle/*.deb",
                        timeout=600).stdout
    newly = re.search(r"\d+ newly installed", installed)
    log(f"install: {newly.group(0) if newly else installed[-300:]} from the offline bundle")
    till.wait_for("edged active", lambda: till.sh("systemctl is-active edged", check=False).stdout.strip() == "active")
    props = till.show("edged", "Type", "ActiveState", "SubState", "StatusText", "User", "MainPID", "WatchdogUSec")
    log(f"service: {props}")
    # Type=notify: systemd calls it active only after READY=1; STATUS= is edged's own line.
    assert props["Type"] == "notify" and props["ActiveState"] == "active" and props["SubState"] == "running"
    assert "journal ok" in props["StatusText"]
    assert props["User"] == "_edged" and props["WatchdogUSec"] == "20s"
    logged = till.sh("journalctl -u edged -o cat").stdout
    assert "edged ready" in logged and "listening on /run/edged/edged.sock (from systemd's edged.socket" in logged
    sock = till.sh("stat -c '%U:%G %a %F' /run/edged/edged.sock").stdout.strip()
    assert sock == "root:edged 660 socket", sock
    assert till.sh("stat -c '%U:%G %a' /var/lib/edged").stdout.strip() == "_edged:_edged 750"
    assert till.sh("ps -o user= -p $(systemctl show -p MainPID --value edged)").stdout.strip() == "_edged"
    # The unit's seccomp filter lets edged pin its threads to one CPU (daemon.cpu = "auto").
    cpus = set(till.sh("cat /proc/$(systemctl show -p MainPID --value edged)/task/*/status "
                       "| sed -n 's/^Cpus_allowed_list:\\s*//p'").stdout.split())
    if len(os.sched_getaffinity(0)) == 1:
        assert "threads on any of CPUs" in logged and len(cpus) == 1
        return
    pinned = re.search(r"threads on CPU (\d+) \(of", logged)
    assert pinned and cpus == {pinned.group(1)}, (cpus, [l for l in logged.splitlines() if "threads on" in l])


def test_security_exposure_at_most_3(till):
    out = till.sh("systemd-analyze security edged.service --no-pager").stdout
    level = float(re.search(r"Overall exposure level for edged.service: ([\d.]+)", out).group(1))
    offline = till.sh("systemd-analyze security --offline=yes /lib/systemd/system/edged.service --no-pager").stdout
    level_offline = float(re.search(r"Overall exposure level for edged.service: ([\d.]+)", offline).group(1))
    log(f"systemd-analyze security: exposure {level} (running unit), {level_offline} (--offline=yes)")
    assert level <= 3.0 and level_offline <= 3.0


def test_relay_unit_is_installed_off_and_runs_as_a_socket_client_when_configured(till):
    """edged-relay.service: disabled until [relay] is set; unset, it exits 2 and stays stopped; set,
    it runs as _edged-relay (group edged: a socket client), hardened, and `--check` says in one
    line why the broker cannot be reached."""
    enabled = till.sh("systemctl is-enabled edged-relay", check=False).stdout.strip()
    groups = till.sh("id -nG _edged-relay").stdout.split()
    assert enabled == "disabled" and "edged" in groups, (enabled, groups)
    till.sh("systemctl start edged-relay", check=False)
    time.sleep(2)
    state = till.show("edged-relay", "ActiveState", "ExecMainStatus")
    said = till.sh("journalctl -u edged-relay -o cat --no-pager").stdout
    assert state["ActiveState"] in ("failed", "inactive") and state["ExecMainStatus"] == "2", (state, said)
    assert "relay.broker is not set" in said, said
    till.sh("cp /etc/edged/edged.toml /etc/edged/edged.toml.before-relay")
    till.sh("printf '\\n[relay]\\nbroker = \"mqtt://127.0.0.1:1\"\\n' >> /etc/edged/edged.toml")
    check = till.sh("edged relay --check", user="_edged-relay", check=False)
    till.sh("systemctl restart edged-relay")
    time.sleep(3)
    active = till.sh("systemctl is-active edged-relay", check=False).stdout.strip()
    user = till.sh("ps -o user= -p $(systemctl show -p MainPID --value edged-relay)", check=False).stdout.strip()
    relay_log = till.sh("journalctl -u edged-relay -o cat --no-pager").stdout
    out = till.sh("systemd-analyze security --offline=yes /lib/systemd/system/edged-relay.service --no-pager").stdout
    level = float(re.search(r"Overall exposure level for edged-relay.service: ([\d.]+)", out).group(1))
    till.sh("systemctl stop edged-relay; mv /etc/edged/edged.toml.before-relay /etc/edged/edged.toml")
    log(f"relay: {enabled}, groups {groups}; unset: {state}; --check: {check.stdout.strip()} (exit "
        f"{check.returncode}); set: {active} as {user}; exposure {level}")
    assert check.returncode == 1 and "cannot reach 127.0.0.1:1" in check.stdout
    assert active == "active" and user == "_edged-relay", relay_log
    assert "edged's socket" not in relay_log, relay_log  # it could connect: hello answered
    assert level <= 3.0


def test_headoffice_package_archives_the_tills_journal_through_mosquitto(till, headoffice_bundle):
    """edged-headoffice beside edged, offline, with Debian's Mosquitto: edged-ingest.service is
    installed disabled and exits 2 until a broker is set; set, it runs as _edged-ho (hardened) and
    archives what this till's relay sends through the broker, the till's cursor following. Removed
    again at the end (the tests after this one are the till's)."""
    till.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y /mnt/packages/{headoffice_bundle.name}/*.deb",
            timeout=300)
    enabled = till.sh("systemctl is-enabled edged-ingest", check=False).stdout.strip()
    till.sh("systemctl start edged-ingest", check=False)
    time.sleep(2)
    unset = till.show("edged-ingest", "ActiveState", "ExecMainStatus")
    said = till.sh("journalctl -u edged-ingest -o cat --no-pager").stdout
    assert enabled == "disabled" and unset["ExecMainStatus"] == "2" and "give the broker" in said, (enabled, unset, said)

    archive = "/var/lib/edged-headoffice/archive"
    ident = json.loads(till.sh("edged identity --json").stdout)
    till.sh(f"edged archive enroll {archive} {ident['till_id']} {ident['public_key']}", user="_edged-ho")
    till.sh("sed -i 's|^broker = \"\"|broker = \"mqtt://127.0.0.1:1883\"|' /etc/edged/headoffice.toml")
    till.sh("cp /etc/edged/edged.toml /etc/edged/edged.toml.before-relay")
    till.sh("printf '\\n[relay]\\nbroker = \"mqtt://127.0.0.1:1883\"\\n' >> /etc/edged/edged.toml")
    till.sh("systemctl start edged-ingest && systemctl restart edged-relay")
    till.sh("cat > /tmp/ho-appender.py", input=APPENDER)
    till.sh("python3 /tmp/ho-appender.py /tmp/ho-appended 200", timeout=180)
    last = int(till.sh("tail -1 /tmp/ho-appended").stdout.split()[1])

    def status() -> str:
        return till.sh(f"edged archive status {archive}", user="_edged-ho", check=False).stdout
    till.wait_for("the till's records archived at head office",
                  lambda: f"online: every record through seq {last} archived" in status(), timeout=60)
    till.wait_for("edged's cursor at head office's ack", lambda: json.loads(
        till.sh("edged status --json").stdout)["consumers"].get("head-office") == last, timeout=30)
    # Head office talks back: a web order queued by head office's user reaches the till's journal
    # through the installed relay (its positions kept in its StateDirectory).
    till.sh("printf '{\"order\": \"W-1\"}' > /tmp/order.json && chmod 644 /tmp/order.json")
    till.sh(f"edged headoffice send --till {ident['till_id']} order.web /tmp/order.json --archive {archive}",
            user="_edged-ho")

    def down() -> dict:
        rows = json.loads(till.sh(f"edged headoffice status --json --archive {archive}", user="_edged-ho",
                                  check=False).stdout or "[]")
        return next((r["down"] for r in rows if r["till"] == ident["till_id"]), {})
    till.wait_for("head office's order applied by the till", lambda: down().get("till", {}).get("applied") == 1,
                  timeout=60)
    positions = till.sh("stat -c '%U %a' /var/lib/edged-relay/down.json && cat /var/lib/edged-relay/down.json").stdout
    assert positions.startswith("_edged-relay 6"), positions
    user = till.sh("ps -o user= -p $(systemctl show -p MainPID --value edged-ingest)", check=False).stdout.strip()
    out = till.sh("systemd-analyze security --offline=yes /lib/systemd/system/edged-ingest.service --no-pager").stdout
    level = float(re.search(r"Overall exposure level for edged-ingest.service: ([\d.]+)", out).group(1))
    text = status()
    till.sh("systemctl stop edged-relay edged-ingest; mv /etc/edged/edged.toml.before-relay /etc/edged/edged.toml")
    till.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y edged-headoffice mosquitto", timeout=300)
    gone = till.sh("ls /lib/systemd/system/edged-ingest.service /etc/edged/headoffice.toml 2>/dev/null || true").stdout
    log(f"headoffice: ingest {enabled}, unset exit {unset['ExecMainStatus']}; set: runs as {user}, exposure {level}; "
        f"archived through {last}: {text.splitlines()[0] if text else '?'}; order down: {positions.split()}; "
        f"purged: {gone.split() or 'nothing left'}")
    assert user == "_edged-ho" and level <= 3.0
    assert "gaps: none" in text and "lag 0 records" in text, text
    assert gone.split() == []


def test_udev_rules_pass_udevadm(till):
    def problems() -> list[str]:
        out = till.sh("udevadm test --action=add /sys/class/tty/tty0 2>&1", check=False).stdout
        return [line for line in out.splitlines() if "edged" in line and
                re.search(r"invalid|error|unknown|ignor|failed|cannot", line, re.I)]

    # The check itself must catch a broken rule: a misspelt key in a file of ours.
    till.sh("printf 'SUBSYSTEM==\"tty\", GROUPP=\"_edged\"\\n' > /etc/udev/rules.d/71-edged-broken.rules")
    caught = problems()
    till.sh("rm /etc/udev/rules.d/71-edged-broken.rules")
    assert caught, "udevadm test did not report a misspelt key: the check below would prove nothing"
    assert till.sh("test -f /lib/udev/rules.d/70-edged.rules && echo yes").stdout.strip() == "yes"
    found = problems()
    log(f"udevadm test: {len(found)} problems in edged's rules (a broken rule gave: {caught[0].strip()})")
    assert found == []


def test_polkit_lets_edged_mount_removable_drives_only(till):
    """The installed polkit rule, asked by polkitd itself about edged's running process."""
    def allowed(action: str, removable: str) -> bool:
        return till.sh(f"pkcheck --action-id org.freedesktop.udisks2.{action} --process "
                       f"$(systemctl show -p MainPID --value edged) --detail drive.removable {removable}",
                       check=False).returncode == 0
    answers = {(a, r): allowed(a, r) for a in ("filesystem-mount-other-seat", "power-off-drive-other-seat",
                                               "filesystem-mount-system", "filesystem-unmount-others")
               for r in ("true", "false")}
    log(f"polkit: {answers}")
    assert answers == {("filesystem-mount-other-seat", "true"): True, ("filesystem-mount-other-seat", "false"): False,
                       ("power-off-drive-other-seat", "true"): True, ("power-off-drive-other-seat", "false"): False,
                       ("filesystem-mount-system", "true"): False, ("filesystem-mount-system", "false"): False,
                       ("filesystem-unmount-others", "true"): False, ("filesystem-unmount-others", "false"): False}


def test_socket_group_member_may_connect_and_others_may_not(till):
    till.sh("id pos >/dev/null 2>&1 || useradd -m -G edged pos; id stranger >/dev/null 2>&1 || useradd -m stranger")
    member = till.sh("edged status", user="pos", check=False)
    other = till.sh("edged status", user="stranger", check=False)
    log(f"socket: pos (group edged) exit {member.returncode}; stranger exit {other.returncode}: {other.stderr.strip()}")
    assert member.returncode == 0 and "journal" in member.stdout
    assert other.returncode != 0 and "not allowed to connect to /run/edged/edged.sock" in other.stderr
    assert "usermod -aG edged" in other.stderr  # says what to do


def test_status_and_print_test_with_a_simulated_printer(till):
    till.sh("systemd-run --unit=simprinter --property=Type=exec /usr/bin/edged sim printer --port 9100")
    till.wait_for("emulator listening", lambda: "9100" in till.sh("journalctl -u simprinter -o cat").stdout)
    till.sh("cat >> /etc/edged/edged.toml", input=PRINTER_CONFIG)
    till.sh("edged check-config >/dev/null && systemctl restart edged")
    till.wait_for("printer ok", lambda: re.search(r"receipt\s+printer\s+ok",
                                                   till.sh("edged status", user="pos", check=False).stdout))
    printed = till.sh("edged print-test", user="pos", timeout=60)
    log(f"print-test: {printed.stdout.strip().splitlines()[-1]}")
    paper = till.wait_for("receipt at the emulator", lambda: "ß" in (s := till.sh("journalctl -u simprinter -o cat").stdout) and s)
    assert "€" in paper and "æ ø å" in paper


def test_doctor_on_the_installed_till(till):
    out = till.sh("edged doctor", check=False)
    log("edged doctor:\n" + out.stdout)
    lines = {line.split()[1]: line.split()[0] for line in out.stdout.splitlines() if line[:4] in ("OK  ", "WARN", "FAIL")}
    assert out.returncode == 0, out.stdout
    for check in ("config", "user", "devices", "udev", "socket", "journal", "printers", "disk"):
        assert lines.get(check) == "OK", f"{check}: {lines.get(check)}"


UNPLUGGED = """
# Added by the package test: a USB printer and a scanner that are not plugged in.
[printers.usb]
backend = "usb"
vendor_id = 0x04b8
product_id = 0x0202

[scanners.front]
vendor = "05e0"
product = "1200"
layout = "de"
"""


def test_devices_not_plugged_in_under_the_hardened_unit(till):
    """pyusb/libusb, pyudev and libxkbcommon (the scanner's German layout) load inside the sandbox
    (syscall filter, MemoryDenyWriteExecute, DevicePolicy); absent devices are reported, not fatal."""
    till.sh("cat >> /etc/edged/edged.toml", input=UNPLUGGED)
    restarts = till.show("edged", "NRestarts")["NRestarts"]
    till.sh("edged check-config >/dev/null && systemctl restart edged")
    status = json.loads(till.wait_for("status with both devices", lambda: (
        out := till.sh("edged status --json", check=False).stdout) and '"front"' in out and out))
    usb, front = status["devices"]["usb"], status["devices"]["front"]
    log(f"not plugged in: printer usb {usb['state']} {usb.get('reasons')}; scanner front {front['state']} "
        f"({front.get('detail') or front.get('reason')})")
    assert usb["state"] != "ok" and front["state"] != "ok"
    assert "vendor 05e0 product 1200" in json.dumps(front)  # the scanner says what it looked for
    assert status["devices"]["receipt"]["state"] == "ok"
    props = till.show("edged", "NRestarts", "ActiveState")
    assert props == {"NRestarts": restarts, "ActiveState": "active"}
    logged = till.sh("journalctl -u edged -o cat --since -1min").stdout
    assert not re.search(r"Bad system call|SIGSYS|Operation not permitted|Traceback", logged), logged
    doctor = till.sh("edged doctor", check=False)
    assert doctor.returncode == 1
    assert re.search(r"^FAIL +devices +scanner front: ", doctor.stdout, re.M), doctor.stdout
    assert re.search(r"^WARN +scanners +front: offline: .*05e0", doctor.stdout, re.M), doctor.stdout
    assert "ls /dev/edged/" in doctor.stdout


def test_watchdog_keeps_it_alive_and_restarts_a_hung_daemon(till):
    before = till.show("edged", "MainPID", "NRestarts")
    time.sleep(20)  # one whole WatchdogSec: pings must keep it alive
    during = till.show("edged", "MainPID", "NRestarts", "ActiveState")
    assert during["MainPID"] == before["MainPID"] and during["NRestarts"] == before["NRestarts"]
    assert during["ActiveState"] == "active"
    t0 = time.monotonic()
    till.sh(f"kill -STOP {before['MainPID']}")
    after = till.wait_for("restart after the watchdog", lambda: (
        s := till.show("edged", "MainPID", "NRestarts", "ActiveState"))["NRestarts"] != before["NRestarts"]
        and s["ActiveState"] == "active" and s, timeout=60)
    log(f"watchdog: alive 20 s on pid {before['MainPID']}; SIGSTOP -> restarted as pid {after['MainPID']} "
        f"after {time.monotonic() - t0:.1f} s")
    assert after["MainPID"] != before["MainPID"]
    assert "Watchdog timeout" in till.sh("journalctl -u edged -o cat").stdout


def test_sigkill_under_appends_keeps_every_acked_record(till):
    till.sh("cat > /home/pos/appender.py", input=APPENDER)
    appender = subprocess.Popen(["nsenter", "-t", str(till.pid), "-a", "--", "/usr/bin/env", "-i", *ENV,
                                 "runuser", "-u", "pos", "--", "python3", "/home/pos/appender.py",
                                 "/home/pos/acked", "600"])
    try:
        count = lambda: int(till.sh("cat /home/pos/acked 2>/dev/null | wc -l").stdout)  # noqa: E731
        till.wait_for("200 acked appends", lambda: count() >= 200 or appender.poll() is not None, every=0.05)
        assert appender.poll() is None, "the appender stopped early"
        before = till.show("edged", "MainPID", "NRestarts")
        till.sh("systemctl kill -s KILL --kill-whom=main edged")
        at_kill = count()
        assert appender.wait(150) == 0
        assert at_kill < 600, "the kill must land while appends are still going"
    finally:
        appender.kill()
    after = till.show("edged", "MainPID", "NRestarts", "ActiveState")
    assert after["NRestarts"] != before["NRestarts"] and after["ActiveState"] == "active"
    acked = dict(line.split() for line in till.sh("cat /home/pos/acked").stdout.splitlines())
    dump = till.sh("edged journal dump --json", timeout=60).stdout
    stored = {str(r["body"]["i"]): str(r["seq"]) for r in map(json.loads, dump.splitlines()) if r["kind"] == "sale"}
    missing = [i for i, seq in acked.items() if stored.get(i) != seq]
    log(f"SIGKILL under appends: killed after ~{at_kill} acks; {len(acked)} acked in all, "
        f"{len(stored)} sales in the journal, {len(missing)} acked records missing")
    assert len(acked) == 600 and missing == []
    assert len(stored) == 600  # retried appends carried their tx_id: no sale twice


def test_upgrade_keeps_config_and_journal(till, debs):
    config_before = till.sh("sha256sum /etc/edged/edged.toml").stdout
    last_before = till.sh("edged journal dump --json | tail -1").stdout
    pid_before = till.show("edged", "MainPID")["MainPID"]
    socket_before = till.sh("stat -c %i /run/edged/edged.sock").stdout
    till.sh(f"DEBIAN_FRONTEND=noninteractive apt-get install -y /mnt/packages/{debs[1].name}", timeout=300)
    version = till.sh("dpkg-query -W -f '${Version}' edged").stdout
    till.wait_for("edged active", lambda: till.sh("systemctl is-active edged", check=False).stdout.strip() == "active")
    after = till.show("edged", "MainPID")["MainPID"]
    log(f"upgrade: to {version}; main pid {pid_before} -> {after}; config and last record unchanged")
    assert version == UPGRADE_VERSION and after != pid_before
    assert till.sh("stat -c %i /run/edged/edged.sock").stdout == socket_before  # the socket stayed open
    assert till.sh("sha256sum /etc/edged/edged.toml").stdout == config_before
    assert "till_id = \"shop1-till1\"" in till.sh("cat /etc/edged/edged.toml").stdout
    assert till.sh("edged journal dump --json | tail -1").stdout == last_before
    assert "ok" in till.sh("edged journal verify").stdout.lower()


def test_purge_removes_state(till):
    # The daemon and the other users' commands (print-test, status above) read python-escpos's
    # printer database from the pickle the package ships: none of them made its own, nor left a
    # /tmp directory behind.
    shipped = till.sh("ls /usr/lib/edged/escpos-cache/*/").stdout.split()
    cached = till.sh("ls /var/cache/edged; ls -d /home/*/.cache/edged /root/.cache/edged 2>/dev/null || true").stdout.split()
    strays = till.sh("find /tmp /var/tmp -maxdepth 4 -name 'tmp*' -user _edged").stdout.split()
    log(f"cache: the package's {shipped}; made on the till: {cached or 'none'}; _edged's /tmp entries: "
        f"{strays or 'none'}")
    assert [c for c in shipped if c.endswith(".capabilities.pickle")] and cached == [] and strays == []
    till.sh("DEBIAN_FRONTEND=noninteractive apt-get purge -y edged", timeout=300)
    left = till.sh("ls -d /var/lib/edged /var/cache/edged /etc/edged /run/edged/edged.sock /lib/systemd/system/edged.service "
                   "/lib/udev/rules.d/70-edged.rules 2>/dev/null || true").stdout.split()
    unit = till.sh("systemctl show -p LoadState --value edged").stdout.strip()
    log(f"purge: left behind {left or 'nothing'}; unit {unit}; user _edged kept: "
        f"{bool(till.sh('getent passwd _edged', check=False).stdout)}")
    assert left == [] and unit == "not-found"
