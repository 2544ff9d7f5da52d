"""What the tests do to the till in the guest: configure and restart edged, run its CLI, plug USB
devices in and out (QMP for QEMU's own devices, configfs gadgets on dummy_hcd for printers and
scanners with a chosen vendor/product id), and read what edged logged."""
from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vm import VM, Result

GUEST = "/mnt/host/guest"  # tests/till/guest/, over 9p
OUT = "/mnt/host/out"  # what gadgets record, read by the host as plain files
UDCS = 4  # dummy_hcd ports: one gadget each (printer, two scanners, a spare)


@dataclass
class Gadget:
    """A configfs gadget in the guest, run by its program as a transient systemd unit."""

    till: Till
    name: str
    udc: str
    out: Path  # host side of its OUT directory

    @property
    def config(self) -> str:
        return f"/sys/kernel/config/usb_gadget/{self.name}"

    def unplug(self) -> None:
        """Unbind from the UDC: for the host side of dummy_hcd, the cable is pulled."""
        self.till.vm.sh(f"echo '' > {self.config}/UDC")

    def replug(self) -> None:
        self.till.vm.sh(f"echo {self.udc} > {self.config}/UDC")

    def remove(self) -> None:
        """Stop its program and take the gadget apart (configfs wants the reverse order)."""
        self.till.vm.sh(f"systemctl stop gadget-{self.name} 2>/dev/null; g={self.config}; "
                        "[ -d $g ] || exit 0; echo '' > $g/UDC 2>/dev/null; "
                        "rm -f $g/configs/c.1/*.usb0; rmdir $g/configs/c.1/strings/0x409 $g/configs/c.1 "
                        "$g/functions/* $g/strings/0x409 $g", check=False)
        if self.udc:
            self.till.free_udc(self.udc)


class PrinterGadget(Gadget):
    def set_state(self, **state: bool) -> None:
        (self.out / "state").write_text(json.dumps(state))

    def received(self) -> bytes:
        try:
            return (self.out / "received.bin").read_bytes()
        except FileNotFoundError:
            return b""

    def receipts(self) -> str:
        try:
            return (self.out / "receipts.txt").read_text()
        except FileNotFoundError:
            return ""


class Till:
    def __init__(self, vm: VM, log: Callable[[str], None]) -> None:
        self.vm, self.log = vm, log
        self._udcs = [f"dummy_udc.{i}" for i in range(UDCS)]
        vm.sh(f"modprobe dummy_hcd num={UDCS} && modprobe libcomposite")

    # --- edged -------------------------------------------------------------------------------
    def configure(self, toml: str) -> None:
        """Install TOML as /etc/edged/edged.toml and restart edged with it."""
        self.vm.sh("cat > /etc/edged/edged.toml && edged check-config /etc/edged/edged.toml >/dev/null",
                   stdin=toml.encode())
        self.restart()

    def restart(self) -> None:
        self.vm.sh("systemctl restart edged", timeout=120)
        self.vm.wait_for("edged active after restart", "systemctl is-active edged", timeout=60)

    def edged(self, args: str, check: bool = True, timeout: float = 60, user: str = "root") -> Result:
        cmd = f"edged {args}" if user == "root" else f"setpriv --reuid={user} --regid={user} --init-groups edged {args}"
        return self.vm.sh(cmd, check=check, timeout=timeout)

    def request(self, op: str, **params) -> dict:
        """One request on edged's socket (guest/edged_request.py: no CLI start-up cost)."""
        return json.loads(self.vm.sh(f"python3 {GUEST}/edged_request.py {op} {shlex.quote(json.dumps(params))}").out)

    def status(self) -> dict:
        return self.request("status")

    def cursor(self) -> str:
        """The journal's position now, to read only what edged logs after it."""
        return self.vm.sh("journalctl -n 0 --show-cursor -q | sed -n 's/^-- cursor: //p'").out.strip()

    def log_since(self, cursor: str, unit: str = "edged") -> str:
        return self.vm.sh(f"journalctl -u {unit} -o cat --no-pager --after-cursor={shlex.quote(cursor)}").out

    def wait_log(self, cursor: str, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            got = self.log_since(cursor)
            if text in got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"edged did not log {text!r} in {timeout} s; it logged:\n{got[-3000:]}")
            time.sleep(0.5)

    # --- gadgets -----------------------------------------------------------------------------
    def take_udc(self) -> str:
        if not self._udcs:
            raise RuntimeError("every dummy_hcd port is in use: remove() a gadget first")
        return self._udcs.pop(0)

    def free_udc(self, udc: str) -> None:
        if udc not in self._udcs:
            self._udcs.append(udc)
            self._udcs.sort()

    def clear_gadget(self, name: str) -> None:
        """Whatever an earlier (failed) run left of gadget NAME: its program and configfs tree."""
        Gadget(self, name, "", Path()).remove()

    def printer(self, name: str, vid: str, pid: str, serial: str,
                manufacturer: str = "EPSON", product: str = "TM-T20II") -> PrinterGadget:
        self.clear_gadget(name)
        udc = self.take_udc()
        # A new directory each time: 9p in the guest may still hold an old one's entries.
        run = f"{name}-{time.monotonic_ns()}"
        out = f"{OUT}/{run}"
        self.vm.sh(f"systemd-run --unit=gadget-{name} --collect -p StandardOutput=file:{out}.log "
                   f"-p StandardError=file:{out}.log python3 {GUEST}/printer_gadget.py "
                   f"{name} {vid} {pid} {serial} {udc} {out} {shlex.quote(manufacturer)} {shlex.quote(product)}")
        try:
            self.vm.wait_for(f"printer gadget {name}", f"test -f {out}/ready", timeout=120)
        except Exception:
            self.free_udc(udc)
            raise
        return PrinterGadget(self, name, udc, self.vm.share / "out" / run)
