"""A USB receipt printer inside the guest: a configfs printer gadget on dummy_hcd, driven by this
program, which answers as an ESC/POS printer would.

The kernel makes it real: the host side of dummy_hcd sees a USB printer (class 7) with the given
vendor/product id, usblp binds /dev/usb/lpN, udev runs edged's rules, pyusb can claim it. This
program is the printer's firmware: every byte received is appended to DIR/received.bin, the
commands are executed by edged's printer emulator (installed with the package), so DLE EOT is
answered with real status bytes and GS r only once what came before is "printed"; receipts go to
DIR/receipts.txt. Like a real printer it prints from a receive buffer while its USB side reads
(a thread): the emulator runs ~25 times slower under TCG than on the host (~36 KB/s), and reading
only between whole 64 KiB feeds once held edged's 4 KiB bulk writes past their 2 s timeout, on
every retry (a CI run's yanked job never printed). The host still meets a printer that takes bytes
only as fast as it prints: the kernel queues Q_LEN x 8 KiB, and the node is read only while less
than LOW waits to be printed. Each read takes all the kernel holds: two versions whose reads
often left part of a request behind, while the host reset the device, crashed 6.1's f_printer
(list_del corruption in setup_rx_reqs, from poll); the loop that never did has not.

Writing JSON such as {"paper_out": true} to DIR/state, then a line into the FIFO
/run/till-NAME.fifo, changes the printer's state (and the IEEE 1284 status usblp reads with
LPGETSTATUS). The FIFO, not a poll of the file: reading DIR/state over 9p ten times a second cost
each printer gadget seconds of the guest's emulated CPU in a run.

Usage (as root in the guest): printer_gadget.py NAME VID PID SERIAL UDC DIR [MANUFACTURER PRODUCT]
Unplug / replug: write "" / UDC to /sys/kernel/config/usb_gadget/NAME/UDC; the program keeps going.
"""
from __future__ import annotations

import errno
import fcntl
import glob
import json
import os
import select
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, "/usr/lib/edged")
from edged.sim.printer import STATE_KEYS, PrinterEmulator, _Stream  # noqa: E402

CONFIGFS = Path("/sys/kernel/config/usb_gadget")
GADGET_SET_PRINTER_STATUS = 0xC0016722  # _IOWR('g', 0x22, unsigned char), linux/usb/g_printer.h
NOT_ERROR, SELECTED, PAPER_EMPTY = 0x08, 0x10, 0x20
Q_LEN = 2  # the kernel's requests each way, 8 KiB each: at most 16 KiB taken per read
LOW = 8 << 10  # the node is read only while less than this waits to be printed
SLICE = 2048  # bytes printed at a time (~60 ms under TCG): a state change waits no longer


def make_gadget(name: str, vid: str, pid: str, serial: str, udc: str, manufacturer: str, product: str) -> Path:
    g = CONFIGFS / name
    g.mkdir()
    (g / "idVendor").write_text(f"0x{vid}")
    (g / "idProduct").write_text(f"0x{pid}")
    (g / "bcdUSB").write_text("0x0200")
    s = g / "strings/0x409"
    s.mkdir(parents=True)
    (s / "manufacturer").write_text(manufacturer)
    (s / "product").write_text(product)
    (s / "serialnumber").write_text(serial)
    f = g / "functions/printer.usb0"
    f.mkdir(parents=True)
    (f / "pnp_string").write_text(f"MFG:{manufacturer};CMD:ESC/POS;MDL:{product};CLS:PRINTER;")
    (f / "q_len").write_text(str(Q_LEN))
    c = g / "configs/c.1"
    (c / "strings/0x409").mkdir(parents=True)
    (c / "strings/0x409/configuration").write_text("printer")
    (c / "MaxPower").write_text("100")
    os.symlink(f, c / "printer.usb0")
    (g / "UDC").write_text(udc)
    return g


def _own_node(before: set[str]) -> str:
    """This gadget's /dev/g_printerN: the node its binding made. Nothing names an instance's minor
    in configfs (6.1), so the harness makes printer gadgets one at a time (till.py waits for
    `ready`, or the programs take a lock) and the new node is this one's; it keeps its number
    across unbind and bind."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        new = set(glob.glob("/dev/g_printer*")) - before
        if len(new) == 1:
            return new.pop()
        if len(new) > 1:
            raise SystemExit(f"printer gadget: several new nodes at once: {sorted(new)}")
        time.sleep(0.05)
    raise SystemExit("printer gadget: no /dev/g_printerN appeared after binding")


def lpstatus(state) -> int:
    if state.paper_out:
        return SELECTED | PAPER_EMPTY  # an error: NOT_ERROR cleared
    if state.offline or state.cover_open:
        return NOT_ERROR
    return NOT_ERROR | SELECTED


class Printing(threading.Thread):
    """Prints what the USB side took, a slice at a time, in the order it came."""

    def __init__(self, emu: PrinterEmulator, stream: _Stream, pending: bytearray, lock: threading.Lock) -> None:
        super().__init__(name="printing", daemon=True)
        self.emu, self.stream, self.pending, self.lock = emu, stream, pending, lock
        self.buffer = bytearray()
        self.more = threading.Condition()
        self.start()

    def waiting(self) -> int:
        with self.more:
            return len(self.buffer)

    def take(self, data: bytes) -> None:
        with self.more:
            self.buffer += data
            self.more.notify()

    def run(self) -> None:
        while True:
            with self.more:
                while not self.buffer:
                    self.more.wait()
                piece = bytes(self.buffer[:SLICE])
                del self.buffer[:SLICE]
            with self.lock:
                self.pending += self.emu.feed(self.stream, piece)


def main() -> None:
    name, vid, pid, serial, udc, out = sys.argv[1:7]
    manufacturer, product = sys.argv[7:9] if len(sys.argv) >= 9 else ("EPSON", "TM-T20II")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    received = open(d / "received.bin", "ab", buffering=0)
    receipts = open(d / "receipts.txt", "a", buffering=1)
    emu = PrinterEmulator(use_pty=False, on_receipt=lambda r, text: receipts.write(text + "\n=====\n"))
    # Printer gadgets bind one at a time, each finding its node as the one that came; their
    # programs may start together (the imports above are most of a start under emulation).
    with open("/run/till-printer-gadgets.lock", "w") as one_at_a_time:
        fcntl.flock(one_at_a_time, fcntl.LOCK_EX)
        before = set(glob.glob("/dev/g_printer*"))
        make_gadget(name, vid, pid, serial, udc, manufacturer, product)
        node = _own_node(before)
    fd = -1
    pending = bytearray()  # answers not yet taken by the host
    stream = _Stream(lambda reply: pending.extend(reply))
    lock = threading.Lock()  # the emulator and `pending`, shared with the printing thread
    printer = Printing(emu, stream, pending, lock)
    state_file, state_seen = d / "state", ""
    fifo = f"/run/till-{name}.fifo"
    if not os.path.exists(fifo):
        os.mkfifo(fifo, 0o600)
    # Read and write: the FIFO never reads as ended when the host's writer closes it.
    told = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    news = True  # the state file is read once at start, then whenever the host says so
    (d / "ready").write_text(f"{os.getpid()}\n")
    while True:
        try:
            news = bool(os.read(told, 4096)) or news
        except BlockingIOError:
            pass
        text = state_seen
        if news:
            news = False
            try:
                text = state_file.read_text()
            except FileNotFoundError:
                text = ""
        if text != state_seen:
            state_seen = text
            wanted = json.loads(text or "{}")  # the whole state: what it does not name is off
            with lock:
                emu.set_state(**{key: bool(wanted.get(key)) for key in STATE_KEYS})
            if fd >= 0:
                fcntl.ioctl(fd, GADGET_SET_PRINTER_STATUS, lpstatus(emu.state))
        if fd < 0:
            if not (CONFIGFS / name / "UDC").read_text().strip():
                time.sleep(0.1)  # unplugged: opened again only once bound again
                continue
            try:
                fd = os.open(node, os.O_RDWR | os.O_NONBLOCK)
                fcntl.ioctl(fd, GADGET_SET_PRINTER_STATUS, lpstatus(emu.state))
                (d / "open").write_text("1")
            except OSError:
                time.sleep(0.1)
                continue
        if printer.waiting() >= LOW:
            time.sleep(0.02)  # busy printing: USB is not read, the host waits
            continue
        events = select.poll()
        events.register(fd, select.POLLIN | (select.POLLOUT if pending else 0))
        events.register(told, select.POLLIN)  # a new state: the loop's top reads it
        try:
            for where, ev in events.poll(100):
                if where == told:
                    continue
                if ev & (select.POLLERR | select.POLLHUP):
                    # Unbound from the UDC (unplugged). The node must be closed before the gadget is
                    # bound again: a file left open across unbind and bind corrupts the kernel's
                    # char device list (6.1's f_printer; seen as "list_del corruption" in cd_forget
                    # and a locked-up guest when the file was finally closed).
                    os.close(fd)
                    fd = -1
                    (d / "open").write_text("0")
                    break
                if ev & select.POLLIN:
                    data = os.read(fd, 65536)  # more than Q_LEN requests hold: never a partial read
                    received.write(data)
                    printer.take(data)
                if ev & select.POLLOUT and pending:
                    with lock:
                        answer = bytes(pending)
                    written = os.write(fd, answer)
                    with lock:
                        del pending[:written]
        except OSError as e:
            # While the host resets the device or the UDC is unbound, the gadget's endpoints are
            # gone: wait and go on (a reader blocked here would never re-queue its requests).
            if e.errno not in (errno.ENODEV, errno.ESHUTDOWN, errno.EAGAIN, errno.EIO, errno.ECONNRESET):
                raise
            time.sleep(0.05)


if __name__ == "__main__":
    main()
