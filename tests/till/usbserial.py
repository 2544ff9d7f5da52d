"""A USB-serial adapter (QEMU's usb-serial: an FTDI 0403:6001) plugged into the guest, and the
serial devices on its far end, played by programs in the test process on real sockets.

QEMU wires the adapter's serial side to a chardev, here a unix socket server in the run
directory. The peer program connects to it: every byte the guest writes to /dev/ttyUSBn
arrives on that socket, and every byte the peer sends comes out of the guest's tty. The
guest's kernel does the rest: xHCI, ftdi_sio, udev with edged's packaged rules.

Peers: a serial barcode scanner (sends a scan followed by CR or CR LF) and a serial receipt
printer (edged's own ESC/POS emulator, so DLE EOT and GS r are answered from its state).
"""
from __future__ import annotations

import socket
import threading
import time

from vm import VM

from edged.sim.printer import PrinterEmulator, _Stream

FTDI = ("0403", "6001")  # QEMU's usb-serial: fixed ids, no property changes them


class UsbSerial:
    """One adapter. `serial` becomes its USB serial number string (iSerialNumber), so two
    adapters of one model get distinct /dev/serial/by-id and /dev/edged names."""

    def __init__(self, vm: VM, name: str, serial: str) -> None:
        self.vm, self.name, self.serial = vm, name, serial
        self.chardev = f"{name}-chr"
        self.socket = vm.run / f"{name}.sock"
        self.plugged = False

    @property
    def edged_link(self) -> str:
        """The stable name edged's udev rules give the tty (70-edged.rules)."""
        return f"/dev/edged/serial-tty-{FTDI[0]}-{FTDI[1]}-{self.serial}-if00"

    def plug(self) -> None:
        """Plug the adapter into the xHCI root hub. always-plugged: the guest sees it at once,
        like a real adapter, whether or not the device on its serial side is connected yet."""
        self.socket.unlink(missing_ok=True)
        self.vm.qmp("chardev-add", id=self.chardev, backend={
            "type": "socket", "data": {"addr": {"type": "unix", "data": {"path": str(self.socket)}},
                                       "server": True, "wait": False}})
        self.vm.qmp("device_add", driver="usb-serial", id=self.name, chardev=self.chardev, bus="xhci.0",
                    serial=self.serial, **{"always-plugged": True})
        self.plugged = True

    def unplug(self) -> None:
        """Pull the adapter (device_del: a surprise removal); its chardev goes with it, which
        also closes the peer's connection."""
        if not self.plugged:
            return
        self.vm.unplug(self.name)
        self.vm.qmp("chardev-remove", id=self.chardev)
        self.socket.unlink(missing_ok=True)
        self.plugged = False


class SerialPeer:
    """The device on the adapter's serial side: connects to the adapter's socket and reads in
    a thread. Kept across an unplug of the adapter (the device behind it keeps its state);
    `connect` again after a replug."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.received = bytearray()
        self.lock = threading.Lock()
        self._reader: threading.Thread | None = None

    def connect(self, adapter: UsbSerial, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(str(adapter.socket))
                break
            except OSError:
                sock.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self.sock = sock
        self._reader = threading.Thread(target=self._read, args=(sock,), name=f"peer-{adapter.name}", daemon=True)
        self._reader.start()

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.sock = None
        if self._reader is not None:
            self._reader.join(timeout=10)
            self._reader = None

    def send(self, data: bytes) -> None:
        if self.sock is None:
            raise ConnectionError("not connected to the adapter")
        self.sock.sendall(data)

    def _read(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(4096)
            except OSError:
                return
            if not data:  # the adapter was pulled (chardev removed) or we closed
                return
            with self.lock:
                self.received += data
                self.handle(data)

    def handle(self, data: bytes) -> None:
        """Bytes from the guest, under `lock`."""


class SerialScanner(SerialPeer):
    """A barcode scanner in serial mode: each scan is the code and the configured suffix."""

    def __init__(self, suffix: bytes = b"\r") -> None:
        super().__init__()
        self.suffix = suffix

    def scan(self, code: str) -> None:
        self.send(code.encode() + self.suffix)


class SerialPrinter(SerialPeer):
    """A serial receipt printer: edged's ESC/POS emulator behind the socket. Answers (DLE EOT
    status, GS r confirmation) go back the way the request came, also late ones released by
    `set_state`."""

    def __init__(self, columns: int = 42) -> None:
        super().__init__()
        self.columns = columns
        self.emulator = PrinterEmulator(use_pty=False, columns=columns)
        self._stream = _Stream(self._answer)

    def handle(self, data: bytes) -> None:
        reply = self.emulator.feed(self._stream, data)
        if reply:
            self._answer(reply)

    def _answer(self, reply: bytes) -> None:
        sock = self.sock
        if sock is not None:
            try:
                sock.sendall(reply)
            except OSError:  # pulled while answering: the answer is lost, as on a real cable
                pass

    def set_state(self, **state: bool) -> None:
        with self.lock:
            self.emulator.set_state(**state)

    def receipts(self) -> list[str]:
        with self.lock:
            return [r.text(self.columns) for r in self.emulator.receipts]

    def __repr__(self) -> str:
        return f"SerialPrinter({self.emulator.describe()}, {len(self.received)} bytes)"
