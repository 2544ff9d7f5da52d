"""What the tests do to the till in the guest: configure and restart edged, run its CLI, plug USB
devices in and out (QMP for QEMU's own devices, configfs gadgets on dummy_hcd for printers and
scanners with a chosen vendor/product id), and read what edged logged."""
from __future__ import annotations

import json
import shlex
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vm import VM, GuestError, Result

GUEST = "/mnt/host/guest"  # tests/till/guest/, over 9p
OUT = "/mnt/host/out"  # what gadgets record, read by the host as plain files
AGENT_FIFO = "/run/till-agent.fifo"  # requests for guest/agent.py
UDCS = 6  # dummy_hcd ports: one gadget each (counter.py: two printers, three scanners; one more)


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

    def wait_ready(self, timeout: float = 120) -> None:
        """Until its program has made the gadget and bound it (it writes `ready`)."""
        try:
            self.till.vm.wait_for(f"gadget {self.name}", f"test -f {OUT}/{self.out.name}/ready", timeout=timeout)
        except Exception:
            self.till.free_udc(self.udc)
            raise

    def unplug(self) -> None:
        """Unbind from the UDC: for the host side of dummy_hcd, the cable is pulled."""
        self.till.vm.sh(f"echo '' > {self.config}/UDC")

    def replug(self) -> None:
        self.till.vm.sh(f"echo {self.udc} > {self.config}/UDC")

    def remove(self) -> None:
        """Stop its program and take the gadget apart (configfs wants the reverse order)."""
        self.till.vm.sh(f"systemctl stop gadget-{self.name} 2>/dev/null; rm -f /run/till-{self.name}.fifo; g={self.config}; "
                        "[ -d $g ] || exit 0; echo '' > $g/UDC 2>/dev/null; "
                        "rm -f $g/configs/c.1/*.usb0; rmdir $g/configs/c.1/strings/0x409 $g/configs/c.1 "
                        "$g/functions/* $g/strings/0x409 $g", check=False)
        if self.udc:
            self.till.free_udc(self.udc)


class PrinterGadget(Gadget):
    def unplug(self) -> None:
        super().unplug()
        # Its program closes the gadget's node before it may be bound again (printer_gadget.py).
        self.till.vm.wait_for("the printer gadget's node closed", f"grep -qx 0 {self.guest_out}/open", timeout=60)

    @property
    def guest_out(self) -> str:
        return f"{OUT}/{self.out.name}"

    def set_state(self, **state: bool) -> None:
        (self.out / "state").write_text(json.dumps(state))
        self.till.vm.write(self.fifo, b"state\n")  # its program reads the file when told

    @property
    def fifo(self) -> str:
        return f"/run/till-{self.name}.fifo"

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
        # The configuration the .deb installed, read before any test changes it.
        self.packaged = vm.sh("cat /etc/edged/edged.toml").out
        self._requests = 0
        self._before = ""  # edged's MainPID before the last restart() asked for one
        self._answers = vm.share / "out" / "agent"
        vm.sh(f"systemctl stop till-agent 2>/dev/null; rm -rf {OUT}/agent {AGENT_FIFO}; "
              f"systemd-run --unit=till-agent --collect -p StandardOutput=file:{OUT}/agent.log "
              f"-p StandardError=file:{OUT}/agent.log python3 {GUEST}/agent.py {AGENT_FIFO} {OUT}/agent")
        vm.wait_for("the tests' request agent", f"test -f {OUT}/agent/ready", timeout=60)

    # --- edged -------------------------------------------------------------------------------
    def configure(self, toml: str, wait: bool = True) -> None:
        """Install TOML as /etc/edged/edged.toml and restart edged with it. Each test module sets
        the whole configuration it needs (from `packaged` or from nothing) and leaves it: one
        restart per module, not two (a restart costs seconds under emulation). wait=False: the
        restart is asked for and the caller plugs its devices meanwhile (edged finds them as they
        come, as on a till), then calls restarted()."""
        self.vm.sh("cat > /etc/edged/edged.toml", stdin=toml.encode())
        self.restart(wait)

    def restart(self, wait: bool = True) -> None:
        self._before = self.vm.sh("systemctl show -p MainPID --value edged").out.strip()
        self.vm.sh("systemctl restart --no-block edged")
        if wait:
            self.restarted()

    def restarted(self) -> None:
        """edged active again, a new process (not the one before restart() asked)."""
        try:
            self.vm.wait_for("edged active after restart",
                             f'test "$(systemctl is-active edged)" = active && '
                             f'test "$(systemctl show -p MainPID --value edged)" != "{self._before}"', timeout=120)
        except Exception as e:  # edged refused it: the checker's one line says why
            why = self.vm.sh("edged check-config /etc/edged/edged.toml", check=False, timeout=180)
            raise RuntimeError(f"edged did not start with the test's config: {why.out}{why.err}") from e

    def edged(self, args: str, check: bool = True, timeout: float = 60, user: str = "root") -> Result:
        cmd = f"edged {args}" if user == "root" else f"setpriv --reuid={user} --regid={user} --init-groups edged {args}"
        return self.vm.sh(cmd, check=check, timeout=timeout)

    def request(self, op: str, timeout: float = 60, **params) -> dict:
        """One request on edged's socket, through the request agent in the guest (guest/agent.py:
        no process started per request); its result."""
        self._requests += 1
        n = self._requests
        (self._answers / f"{n}.req").write_text(json.dumps({"op": op, "params": params}))
        try:
            self.vm.write(AGENT_FIFO, f"{n}\n".encode())
        except GuestError as e:  # ENXIO: nobody reads the FIFO
            raise GuestError(f"request {op}: the request agent is not running ({e}); its log: "
                             f"{self._agent_log()}") from e
        answer = self._answers / f"{n}.json"
        deadline = time.monotonic() + timeout
        while not answer.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"request {op}: no answer from the request agent in {timeout} s; its log: "
                                   f"{self._agent_log()}")
            time.sleep(0.01)
        reply = json.loads(answer.read_text())
        answer.unlink()
        if not reply["ok"]:
            raise GuestError(f"request {op} {params}: {reply['error']}")
        return reply["result"]

    def _agent_log(self) -> str:
        log = self.vm.share / "out" / "agent.log"
        return log.read_text()[-1500:] if log.exists() else "(none)"

    def status(self) -> dict:
        return self.request("status")

    def wait_status(self, what: str, ready: Callable[[dict], bool], timeout: float = 60) -> dict:
        """edged's status, once READY says it is what the test waits for."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            try:
                if ready(st):
                    return st
            except KeyError:  # a device not in the status yet (edged just restarted): not ready
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: not within {timeout} s; edged's status: {json.dumps(st)[-2000:]}")
            time.sleep(0.3)

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
        return self.printers([(name, vid, pid, serial)], manufacturer, product)[0]

    def printers(self, specs: list[tuple[str, str, str, str]], manufacturer: str = "EPSON",
                 product: str = "TM-T20II", wait: bool = True) -> list[PrinterGadget]:
        """Printer gadgets for SPECS (name, vid, pid, serial), their programs started at once
        (they bind one at a time by themselves: printer_gadget.py); with WAIT, ready."""
        made: list[PrinterGadget] = []
        try:
            for name, vid, pid, serial in specs:
                self.clear_gadget(name)
                udc = self.take_udc()
                # A new directory each time: 9p in the guest may still hold an old one's entries.
                run = f"{name}-{time.monotonic_ns()}"
                out = f"{OUT}/{run}"
                made.append(PrinterGadget(self, name, udc, self.vm.share / "out" / run))
                self.vm.sh(f"systemd-run --unit=gadget-{name} --collect -p StandardOutput=file:{out}.log "
                           f"-p StandardError=file:{out}.log python3 {GUEST}/printer_gadget.py {name} {vid} {pid} "
                           f"{serial} {udc} {out} {shlex.quote(manufacturer)} {shlex.quote(product)}")
            for g in made if wait else []:
                g.wait_ready()
        except BaseException:
            for g in made:  # none left running, no port left taken
                g.remove()
            raise
        return made


# --- USB sticks (QEMU usb-storage on xhci.0; issue 22 point 4) -------------------------------------
STICK_CLIENT = f"{GUEST}/stick_client.py"


def make_stick_image(path: Path, fs: str = "vfat", size_mb: int = 32, label: str = "TILLSTICK",
                     partitioned: bool = False, fill_mb: int = 0, leave_kb: int | None = None) -> Path:
    """A stick's disk image, made on the host from a plain file (no loop device): vfat with
    mkfs.vfat -C (partitioned: an MBR with one FAT partition at 1 MiB, as sticks are sold),
    ext4 with mkfs.ext4 on the file, or "none": blank. fill_mb: a file of that size on it already;
    leave_kb: a file filling it up to that much free space (a full stick)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    if fs == "vfat" and partitioned:
        sectors = (size_mb << 11) - 2048
        # The MBR by hand (sfdisk is not on every host): one entry, type 0x0e (FAT16 LBA) at sector 2048.
        entry = bytes([0, 0xFE, 0xFF, 0xFF, 0x0E, 0xFE, 0xFF, 0xFF]) + struct.pack("<II", 2048, sectors)
        with open(path, "wb") as f:
            f.truncate(size_mb << 20)
            f.seek(446)
            f.write(entry + bytes(48) + b"\x55\xaa")
        subprocess.run(["mkfs.vfat", "-n", label, "--offset", "2048", str(path),
                        str((size_mb - 1) * 1024)], check=True, capture_output=True)
    elif fs == "vfat":
        subprocess.run(["mkfs.vfat", "-C", "-n", label, str(path), str(size_mb * 1024)], check=True,
                       capture_output=True)
    elif fs == "ext4":
        with open(path, "wb") as f:
            f.truncate(size_mb << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, str(path)], check=True)
    elif fs == "none":
        with open(path, "wb") as f:
            f.truncate(size_mb << 20)
    else:
        raise ValueError(f"no recipe for a {fs} stick")
    if leave_kb is not None:
        listing = subprocess.run(["mdir", "-i", _mtools_target(path, partitioned), "::/"], check=True,
                                 capture_output=True, text=True).stdout
        free = int(listing.strip().splitlines()[-1].split("bytes free")[0].replace(" ", ""))
        fill = free - (leave_kb << 10)
    else:
        fill = fill_mb << 20
    if fill > 0:
        filler = path.with_suffix(".fill")
        with open(filler, "wb") as f:
            f.write(b"\xa5" * fill)
        subprocess.run(["mcopy", "-i", _mtools_target(path, partitioned), str(filler), "::/holiday.mp4"],
                       check=True)
        filler.unlink()
    return path


def _mtools_target(image: Path, partitioned: bool) -> str:
    return f"{image}@@1M" if partitioned else str(image)


@dataclass
class UsbStick:
    """A usb-storage device on the guest's xHCI, its drive an image file on the host."""

    port: StickPort
    dev_id: str
    node: str  # the drive's top blockdev node
    image: Path
    partitioned: bool
    throttle: str | None  # the throttle-group object, for a slow stick

    def yank(self, timeout: float = 60) -> None:
        """device_del: the stick pulled out, whatever the guest is doing with it."""
        vm = self.port.vm
        vm.qmp("device_del", id=self.dev_id)
        vm.wait_event("DEVICE_DELETED", lambda d: d.get("device") == self.dev_id, timeout)
        # usb-storage's scsi child sends its own DEVICE_DELETED (no `device`, only a path): drop it
        vm.events = [e for e in vm.events if not (e.get("event") == "DEVICE_DELETED"
                                                  and self.dev_id in e.get("data", {}).get("path", ""))]
        deadline = time.monotonic() + 30
        while True:  # the drive is let go of a moment after the device
            try:
                vm.qmp("blockdev-del", **{"node-name": self.node})
                break
            except RuntimeError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        if self.throttle:
            vm.qmp("object-del", id=self.throttle)
        self.port.stick_ids.discard(self.dev_id)

    def read(self, dest: Path, check: bool = True) -> Path:
        """Everything on the stick, copied out by mtools (never mounted on the host); dest. check=False
        for a stick whose filesystem a pull left broken: what mcopy could copy."""
        if dest.exists():
            subprocess.run(["rm", "-rf", str(dest)], check=True)
        dest.mkdir(parents=True)
        res = subprocess.run(["mcopy", "-s", "-n", "-i", _mtools_target(self.image, self.partitioned), "::/",
                              str(dest)], capture_output=True, text=True)
        if check and res.returncode != 0:
            raise RuntimeError(f"mcopy of stick {self.dev_id} exited {res.returncode}: {res.stderr[-1500:]}")
        return dest


class StickPort:
    """The till's USB port for sticks: plugs usb-storage devices in over QMP, remembers which are in
    (each test pulls its own: yank())."""

    def __init__(self, till: Till) -> None:
        self.till, self.vm = till, till.vm
        self.stick_ids: set[str] = set()

    def plug(self, image: Path, serial: str, read_only: bool = False, write_bps: int | None = None,
                   partitioned: bool = False) -> UsbStick:
        """blockdev-add the image (read-only: a write-protected stick; write_bps: a slow one, so a
        pull lands mid-write) and device_add usb-storage on xhci.0."""
        n = len(self.stick_ids) + 1
        while f"stick{n}" in self.stick_ids:
            n += 1
        dev_id, node = f"stick{n}", f"stick{n}-drive"
        drive: dict = {"driver": "raw", "node-name": node, "read-only": read_only,
                       "file": {"driver": "file", "filename": str(image), "read-only": read_only}}
        throttle = None
        if write_bps:
            throttle = f"stick{n}-slow"
            self.vm.qmp("object-add", **{"qom-type": "throttle-group", "id": throttle,
                                         "limits": {"bps-write": write_bps}})
            drive = {"driver": "throttle", "node-name": node, "throttle-group": throttle, "read-only": read_only,
                     "file": {**drive, "node-name": f"{node}-raw"}}
        self.vm.qmp("blockdev-add", **drive)
        self.vm.qmp("device_add", driver="usb-storage", id=dev_id, bus="xhci.0", drive=node, removable=True,
                    serial=serial)
        self.stick_ids.add(dev_id)
        return UsbStick(self, dev_id, node, image, partitioned, throttle)


# --- scanners (issue 22 point 3) ---------------------------------------------------------------
# Kept apart from the rest so merges stay simple: a HID keyboard gadget typing barcodes, QEMU's
# own usb-kbd, and a client in the guest watching edged's scanner events.

class ScannerGadget(Gadget):
    """guest/scanner_gadget.py: types barcodes as a scanner programmed for a layout."""

    vid = serial = job = ""

    def type(self, layout: str, text: str, enter: bool = True, unplug_after: int | None = None,
             wait: bool = True, timeout: float = 60, delay: float = 0) -> str:
        """Have the scanner type TEXT under LAYOUT; its outcome ("typed" or "aborted: ..."), or ""
        when not waited for. With unplug_after it unbinds itself from the UDC after that many
        characters, between two keys (replug() plugs it back)."""
        self.job = f"cmd-{len(list(self.out.glob('cmd-*.json'))) + 1:04d}"
        body: dict = {"layout": layout, "text": text, "enter": enter}
        if unplug_after is not None:
            body["unplug_after"] = unplug_after
        if delay:
            body["delay"] = delay  # the scanner's intercharacter delay setting
        (self.out / f"{self.job}.json").write_text(json.dumps(body, ensure_ascii=False))
        self.till.vm.write(f"/run/till-{self.name}.fifo", f"{self.job}\n".encode())  # wakes its program
        return self.outcome(timeout) if wait else ""

    def outcome(self, timeout: float = 60) -> str:
        done = self.out / f"{self.job}.done"  # written whole, then renamed
        deadline = time.monotonic() + timeout
        while not done.exists():
            if time.monotonic() > deadline:
                raise TimeoutError(f"scanner {self.name}: {self.job} not typed in {timeout} s")
            time.sleep(0.05)
        return done.read_text()

    def event_node(self, timeout: float = 30) -> str:
        """Its /dev/input/eventN on the host side of dummy_hcd, once udev has finished with it."""
        return input_node(self.till.vm, self.vid, self.serial, timeout)


class QemuKeyboard:
    """QEMU's usb-kbd on the xHCI controller (always 0627:0001): keys are sent over QMP, one key per
    command about 30 ms apart (QEMU's HID queue holds 16 events and drops the rest, VM-USB.md)."""

    def __init__(self, till: Till, dev_id: str, serial: str, bound: bool) -> None:
        self.till, self.id, self.serial, self.bound = till, dev_id, serial, bound

    def type(self, layout: str, text: str, enter: bool = True, gap: float = 0.03) -> None:
        """TEXT as the scanner gadget would type it under LAYOUT: the same hand-made key tables;
        GAP seconds between two keys (QEMU drops keys its 16-event queue cannot hold while the
        guest is too busy to poll it: no SYN_DROPPED, the keys are simply gone)."""
        import sys

        sys.path.insert(0, str(Path(__file__).parent / "guest"))
        from scanner_gadget import ALTGR, ENTER, SHIFT, reports  # the gadget's hand-made tables

        for report in reports(layout, text, enter)[::2]:  # key downs; each is sent down + up
            mods, usage = report[0], report[2]
            keys = (["shift"] if mods & SHIFT else []) + (["alt_r"] if mods & ALTGR else [])
            keys.append("ret" if usage == ENTER else QCODE[usage])
            events = [{"type": "key", "data": {"down": True, "key": {"type": "qcode", "data": k}}} for k in keys]
            events += [{"type": "key", "data": {"down": False, "key": {"type": "qcode", "data": k}}}
                       for k in reversed(keys)]
            args: dict = {"events": events}
            if self.bound:
                args["device"] = "vga0"  # a keyboard bound to the console gets the aimed events
            self.till.vm.qmp("input-send-event", **args)
            time.sleep(gap)

    def event_node(self, timeout: float = 30) -> str:
        return input_node(self.till.vm, "0627", self.serial, timeout)

    def unplug(self) -> None:
        self.till.vm.unplug(self.id)


# HID usage -> QEMU qcode, for the keys the layout tables use.
QCODE = {**{0x04 + i: chr(ord("a") + i) for i in range(26)},
         **{0x1E + i: str((i + 1) % 10) for i in range(10)},
         0x2C: "spc", 0x2D: "minus", 0x2E: "equal", 0x2F: "bracket_left", 0x30: "bracket_right",
         0x31: "backslash", 0x32: "backslash", 0x33: "semicolon", 0x34: "apostrophe", 0x35: "grave_accent",
         0x36: "comma", 0x37: "dot", 0x38: "slash", 0x64: "less"}


class Scanners:
    """Plugging scanners into the guest and watching what edged makes of them."""

    def __init__(self, till: Till) -> None:
        self.till = till
        self.vm = till.vm

    def gadget(self, name: str, vid: str, pid: str, serial: str, manufacturer: str = "Honeywell",
               product: str = "Barcode Scanner") -> ScannerGadget:
        """A HID boot-keyboard gadget with these ids on a free dummy_hcd port, plugged in."""
        return self.gadgets([(name, vid, pid, serial)], manufacturer, product)[0]

    def gadgets(self, specs: list[tuple[str, str, str, str]], manufacturer: str = "Honeywell",
                product: str = "Barcode Scanner", wait: bool = True) -> list[ScannerGadget]:
        """Gadgets for SPECS (name, vid, pid, serial), their programs started at once: a python3
        start costs seconds of the guest's CPU, and started one after the other each waits for
        the last one's. With WAIT, ready."""
        made: list[ScannerGadget] = []
        try:
            for name, vid, pid, serial in specs:
                g = ScannerGadget(self.till, name, self.till.take_udc(), self.vm.share / "out" / name)
                g.vid, g.serial = vid, serial
                made.append(g)
                out = f"{OUT}/{name}"
                self.vm.sh(f"rm -rf {out}; systemd-run --unit=gadget-{name} --collect "
                           f"-p StandardOutput=file:{OUT}/{name}.log -p StandardError=file:{OUT}/{name}.log "
                           f"python3 {GUEST}/scanner_gadget.py {name} {vid} {pid} {serial} {g.udc} {out} "
                           f"{shlex.quote(manufacturer)} {shlex.quote(product)}")
            for g in made if wait else []:
                g.wait_ready()
        except BaseException:
            for g in made:  # none left running, no port left taken
                g.remove()
            raise
        return made

    def qemu_kbd(self, dev_id: str, serial: str, bound: bool = False) -> QemuKeyboard:
        """QEMU's usb-kbd hot-plugged on xhci.0; bound=True binds it to the VGA console so key
        events can be aimed at it (device=vga0) while other keyboards are plugged."""
        args = {"driver": "usb-kbd", "id": dev_id, "bus": "xhci.0", "serial": serial}
        if bound:
            args["display"] = "vga0"
        self.vm.qmp("device_add", **args)
        return QemuKeyboard(self.till, dev_id, serial, bound)

    def watch(self, name: str) -> ScanWatch:
        """A client in the guest subscribed to edged's scanner events (guest/scan_watch.py)."""
        self.vm.sh(f"rm -f {OUT}/{name}.jsonl {OUT}/{name}.watching; systemd-run --unit=watch-{name} --collect "
                   f"-p StandardOutput=file:{OUT}/{name}.log -p StandardError=file:{OUT}/{name}.log "
                   f"python3 {GUEST}/scan_watch.py {OUT}/{name}.jsonl")
        self.vm.wait_for(f"scan watcher {name} subscribed", f"test -f {OUT}/{name}.watching", timeout=30)
        return ScanWatch(self.till, name, self.vm.share / "out" / f"{name}.jsonl")

    def console(self) -> str:
        """What tty1 shows now (/dev/vcs1: the screen's characters, rows run together)."""
        return self.vm.sh("cat /dev/vcs1").out

    def reset_console(self) -> None:
        """A fresh login prompt on tty1 (what a control case typed there is gone)."""
        self.vm.sh("systemctl restart getty@tty1")
        self.vm.wait_for("login prompt on tty1", "grep -q 'login:' /dev/vcs1", timeout=30)


class ScanWatch:
    def __init__(self, till: Till, name: str, path: Path) -> None:
        self.till, self.name, self.path = till, name, path

    def events(self) -> list[dict]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        return whole_lines(text)

    def scans(self, device: str | None = None) -> list[dict]:
        return [e for e in self.events() if e.get("event") == "scanner.scan" and device in (None, e.get("device"))]

    def wait(self, what: str, cond: Callable[[list[dict]], bool], timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.events()
            if cond(events):
                return events
            if time.monotonic() > deadline:
                raise TimeoutError(f"watcher {self.name}: {what} not within {timeout} s; events: {events[-10:]}")
            time.sleep(0.05)  # the share, read on the host

    def wait_scans(self, n: int, timeout: float = 60) -> list[dict]:
        self.wait(f"{n} scans", lambda _: len(self.scans()) >= n, timeout)
        return self.scans()

    def stop(self) -> None:
        self.till.vm.sh(f"systemctl stop watch-{self.name}", check=False)



def whole_lines(text: str) -> list[dict]:
    """The JSON lines of a file another program is appending to: only those it ended with a
    newline (a line being written may end in a nested object's `}`)."""
    return [json.loads(line) for line in text.split("\n")[:-1] if line]


def input_node(vm: VM, vid: str, serial: str, timeout: float = 60) -> str:
    """The /dev/input/eventN of the USB keyboard with this vendor id and serial, once udev has run
    its rules for it (its /dev/input/by-id link, made last, is there)."""
    script = (f"for l in /dev/input/by-id/usb-*_{serial}-event-kbd; do d=$(readlink -f $l); "
              f"grep -qix {vid} /sys/class/input/${{d##*/}}/device/id/vendor && echo $d && exit 0; done; exit 1")
    return vm.wait_for(f"input node of {vid} serial {serial}", script, timeout=timeout).strip()
