"""A till's own client in the guest, for the USB stick tests (tests/till/test_sticks.py): it talks
to the packaged edged over its socket as a POS app would, in the protocol docs/PROTOCOL.md states
(wire.py; edged.client's asyncio costs seconds to import under emulation).

    stick_client.py sales DAY N            append N sales for DAY (the day's records to export)
    stick_client.py watch OUT FIFO         write every usb/day event to OUT (JSON lines); pins
                                           are asked for by lines in FIFO

One watcher runs for the whole stick module (a python3 started per stick cost ~1.8 s of the
guest's emulated CPU each). The host writes "pin AT DAYDIR" (or "pin -" for none) into FIFO
before each stick; the watcher answers {"armed": AT, "n": N} in OUT, N counting the asks.
A pin stops edged (SIGSTOP: all its threads at once) the moment the export reaches AT, once, and
says so in OUT; the host then pulls the stick over QMP and lets edged go on (SIGCONT). Without
it, a pull aimed from the host at an event would land wherever the export had got to by then.
AT is an event (`inserted`, `started`, `writing`: the first progress short of the total,
`written`: every byte written, the fsyncs and the rename to come, `safe_to_remove`), `renamed`:
the export's final directory exists on the mounted stick (the rename done, its fsyncs and the
unmount to come), seen by polling the mount from here, or `unmount`: edged has started
`udisksctl unmount` (everything written and synced; stopped too, before it asks udisksd). Both
are looked for only once the ask's export wrote its last byte.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import threading
import time

from wire import Wire

SOCKET = "/run/edged/edged.sock"


def sales(day: str, n: int) -> None:
    c = Wire("stick-test", SOCKET)
    for i in range(0, n, 250):
        c.request("append", records=[
            {"kind": "sale", "body": {"day": day, "i": j, "lines": "espresso 2.40 " * 10},
             "tx_id": f"{day}-{j}"} for j in range(i, min(n, i + 250))])
    c.close()


def _edged_pid() -> int:
    out = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", "edged"], capture_output=True,
                         text=True, check=True).stdout.strip()
    return int(out)


def _matches(at: str, ev: dict) -> bool:
    if at in ("inserted", "safe_to_remove"):
        return ev.get("event") == f"usb.{at}"
    if ev.get("event") != "usb.export":
        return False
    if at == "started":
        return ev.get("state") == "started"
    if at == "writing":
        return ev.get("state") == "writing" and ev["bytes"] < ev["total"]
    if at == "written":
        return ev.get("state") == "writing" and ev["bytes"] == ev["total"]
    return False


class Watch:
    def __init__(self, out: str, fifo: str) -> None:
        self.f = open(out, "a", buffering=1)
        self.fifo = fifo
        self.at: str | None = None
        self.day_dir = ""
        self.pid = _edged_pid()
        self.lock = threading.Lock()  # the output file and the pin, shared with the pin threads
        self.pinned = threading.Event()

    def line(self, obj: dict) -> None:
        with self.lock:
            self.f.write(json.dumps(obj, default=repr) + "\n")
            self.f.flush()

    def pin(self, why: dict) -> None:
        with self.lock:
            if self.at is None or self.pinned.is_set():
                return
            os.kill(self.pid, signal.SIGSTOP)
            self.pinned.set()
            at, self.at = self.at, None  # once: the host sends SIGCONT and arms the next
        self.line({"pinned": at, "pid": self.pid, "at": why})

    def poll_unmount(self, pinned: threading.Event) -> None:
        """edged's `udisksctl unmount` child, stopped as soon as it exists, before it asks udisksd."""
        while not pinned.is_set():
            for pid in os.listdir("/proc"):
                try:
                    with open(f"/proc/{pid}/cmdline", "rb") as f:
                        argv = f.read().split(b"\0")
                except OSError:
                    continue
                if argv[:2] == [b"udisksctl", b"unmount"] and not pinned.is_set():
                    os.kill(int(pid), signal.SIGSTOP)
                    self.line({"child": int(pid)})
                    self.pin({"unmount": int(pid)})
                    return
            time.sleep(0.002)

    def poll_renamed(self, pinned: threading.Event) -> None:
        """The final directory appearing under any mounted stick (udisks2 mounts in /media)."""
        while not pinned.is_set():
            found = glob.glob(f"/media/*/*/EDGED/*/{self.day_dir}")
            if found:
                self.pin({"renamed": found[0]})
                return
            time.sleep(0.002)

    def control(self) -> None:
        """The host's pins, one line each: "pin AT DAYDIR" or "pin -"."""
        with open(os.open(self.fifo, os.O_RDWR), "rb") as asks:  # never EOF when the host closes
            for n, raw in enumerate(asks, 1):
                words = raw.decode(errors="replace").split()
                with self.lock:
                    self.pinned.set()  # ends the last ask's polling thread
                    self.pinned = threading.Event()
                    self.at = words[1] if len(words) > 1 and words[1] != "-" else None
                    self.day_dir = words[2] if len(words) > 2 else ""
                    at = self.at
                self.line({"armed": at, "n": n})

    def on_written(self) -> None:
        """This ask's export wrote its last byte: `renamed` and `unmount` are looked for from now on
        (the clean-up of a stick pulled before, which edged may run after a new one is in, must
        not count)."""
        with self.lock:
            at, pinned = self.at, self.pinned
        if at in ("renamed", "unmount"):
            poll = self.poll_renamed if at == "renamed" else self.poll_unmount
            threading.Thread(target=poll, args=(pinned,), daemon=True).start()

    def run(self) -> None:
        c = Wire("stick-watch", SOCKET)
        c.request("watch", topics=["usb", "day"])
        if not os.path.exists(self.fifo):
            os.mkfifo(self.fifo, 0o600)
        threading.Thread(target=self.control, daemon=True).start()
        self.line({"ready": True, "pid": self.pid})
        for ev in c.events():
            if self.at and _matches(self.at, ev):
                self.pin(ev)
            self.line(ev)
            if _matches("written", ev):
                self.on_written()
        self.line({"closed": True})  # edged closed the connection (restarted)


def main() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sales")
    s.add_argument("day")
    s.add_argument("n", type=int)
    w = sub.add_parser("watch")
    w.add_argument("out")
    w.add_argument("fifo")
    a = p.parse_args()
    if a.cmd == "sales":
        sales(a.day, a.n)
    else:
        Watch(a.out, a.fifo).run()


if __name__ == "__main__":
    main()
