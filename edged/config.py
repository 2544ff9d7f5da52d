"""Settings: a TOML file read into typed, validated dataclasses.

Defaults live in these classes, so an empty file is a valid config. Every
error is one line naming the file and the full key path (`printers.receipt.port`).
"""
from __future__ import annotations

import dataclasses
import difflib
import grp
import pwd
import re
import socket
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from .cpu import problem as cpu_problem
from .usb import filesystems as stick_filesystems

DEFAULT_PATH = Path("/etc/edged/edged.toml")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ENTRY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")  # no '.': it would split the key path
# A record kind (e.g. "order.web"): written as a quoted key, [deadlines."order.web"].
_KIND = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_USB_ID = re.compile(r"^[0-9a-fA-F]{4}$")
_SOCKET_MAX = 107  # sun_path holds 108 bytes with the terminating NUL


T = TypeVar("T")


class ConfigError(Exception):
    """A config problem; str() is the one line a technician sees."""


def _range(lo: float, hi: float) -> dict[str, Any]:
    return {"range": (lo, hi)}


def _choices(*values: Any) -> dict[str, Any]:
    return {"choices": values}


def _help(text: str, **more: Any) -> dict[str, Any]:
    return {"help": text, **more}


@dataclass
class DaemonSettings:
    socket: str = field(default="/run/edged/edged.sock", metadata=_help("unix socket clients connect to"))
    socket_group: str = field(default="", metadata=_help("group owning the socket (mode 0660); "
                                                        "empty: the daemon's own group"))
    privileged_users: list[str] = field(default_factory=list, metadata=_help(
        "may open the drawer, close the day, export, remove consumers (root always may)"))
    privileged_groups: list[str] = field(default_factory=list, metadata=_help("same, by group"))
    max_frame: int = field(default=1 << 20, metadata=_range(4096, 64 << 20) | _help("bytes per message"))
    max_connections: int = field(default=64, metadata=_range(1, 4096))
    max_connections_per_uid: int = field(default=16, metadata=_range(1, 4096) | _help(
        "connections one user may hold at once (root and edged's own user: no limit)"))
    reserved_connections: int = field(default=8, metadata=_range(0, 4095) | _help(
        "of max_connections, kept for root, edged's own user and the privileged users and groups"))
    send_queue: int = field(default=1000, metadata=_range(16, 1_000_000)
                            | _help("messages queued per client before a watcher is dropped"))
    client_timeout: float = field(default=10.0, metadata=_range(0.1, 3600)
                                  | _help("seconds to say hello, or to finish a started message"))
    state_dir: str = field(default="/var/lib/edged", metadata=_help("journal and state files"))
    log_level: str = field(default="info", metadata=_choices("debug", "info", "warning", "error"))
    cpu: str = field(default="auto", metadata=_help(
        '"auto": all threads on one CPU (cheap hand-offs, fastest appends); "any": the scheduler '
        "decides; or a CPU number in quotes (\"3\")"))

    def problems(self) -> list[tuple[str, str]]:
        out = []
        if (bad := cpu_problem(self.cpu)) is not None:
            out.append(("cpu", bad))
        if self.socket_group and _gid(self.socket_group) is None:
            out.append(("socket_group", f"no group {self.socket_group!r} on this system"))
        for user in self.privileged_users:
            if _uid(user) is None:
                out.append(("privileged_users", f"no user {user!r} on this system"))
        for group in self.privileged_groups:
            if _gid(group) is None:
                out.append(("privileged_groups", f"no group {group!r} on this system"))
        if not self.socket.startswith("/"):
            out.append(("socket", f"must be an absolute path, got {self.socket!r}"))
        elif len(self.socket.encode()) > _SOCKET_MAX:
            out.append(("socket", f"path too long for a unix socket (at most {_SOCKET_MAX} bytes)"))
        if not self.state_dir.startswith("/"):
            out.append(("state_dir", f"must be an absolute path, got {self.state_dir!r}"))
        if self.reserved_connections >= self.max_connections:
            out.append(("reserved_connections", f"must be below max_connections ({self.max_connections}), "
                                                f"got {self.reserved_connections}"))
        elif self.max_connections_per_uid >= self.max_connections - self.reserved_connections:
            out.append(("max_connections_per_uid", f"must be below max_connections - reserved_connections "
                                                   f"({self.max_connections - self.reserved_connections}), got "
                                                   f"{self.max_connections_per_uid}: one user could take every "
                                                   "connection the others may use"))
        return out


@dataclass
class PrinterSettings:
    backend: str = field(default="network", metadata=_choices("network", "serial", "usb", "usblp", "file") | _help(
        "usb: raw USB by vendor_id/product_id (pyusb); usblp: the kernel's /dev/usb/lpN, status read back; "
        "file: a device file written to, no status"))
    host: str = field(default="", metadata=_help("network: printer address"))
    port: int = field(default=9100, metadata=_range(1, 65535))
    device: str = field(default="", metadata=_help(
        "serial: the port by a stable name, /dev/edged/serial-tty-... or /dev/serial/by-id/... (/dev/ttyUSB0 "
        "is numbered in plug order); usblp and file: /dev/usb/lp0 or its /dev/edged/printer-lp-... name"))
    baudrate: int = field(default=19200, metadata=_choices(9600, 19200, 38400, 57600, 115200))
    vendor_id: int = field(default=0, metadata=_range(0, 0xFFFF) | _help("usb: as `lsusb` shows it, e.g. 0x04b8"))
    product_id: int = field(default=0, metadata=_range(0, 0xFFFF))
    serial_number: str = field(default="", metadata=_help("usb: needed when two printers share vendor:product"))
    out_ep: int = field(default=0, metadata=_range(0, 0xFF) | _help(
        "usb: the bulk OUT endpoint print data goes to, e.g. 0x01; 0: read from the printer's USB "
        "descriptors (set it only for a printer whose descriptors are wrong; `lsusb -v` lists them)"))
    in_ep: int = field(default=0, metadata=_range(0, 0xFF) | _help(
        "usb: the bulk IN endpoint status replies come from, e.g. 0x82; 0: from the descriptors"))
    profile: str = field(default="default", metadata=_help("python-escpos printer profile"))
    codepage: str = field(default="PC858", metadata=_help("one code page for every job"))
    paper_width: int = field(default=80, metadata=_choices(58, 80) | _help("paper roll width in mm"))
    columns: int = field(default=0, metadata=_range(0, 96)
                         | _help("characters per line; 0: from the profile, else 32 on 58 mm, 42 on 80 mm"))
    status_interval: float = field(default=2.0, metadata=_range(0.2, 600)
                                   | _help("seconds between status reads (DLE EOT); also read before each job"))
    timeout: float = field(default=2.0, metadata=_range(0.1, 60) | _help("seconds to connect or get an answer"))
    confirm_timeout: float = field(default=30.0, metadata=_range(1, 3600) | _help(
        "seconds a ready printer may take to confirm a job before it counts as 'unknown'"))
    job_max_age: float = field(default=1800.0, metadata=_range(10, 7 * 86400) | _help(
        "seconds a job may wait (held, queued) before it is expired instead of printed"))

    def line_columns(self) -> int:
        """Characters per line in the normal font."""
        if self.columns:
            return self.columns
        from .devices.printer import codepages  # the printer stack, only once a printer is configured

        return 32 if self.paper_width == 58 else codepages.columns(self.profile)

    def head_dots(self) -> int:
        """Print-head width in dots, for images."""
        from .devices.printer import codepages

        return 384 if self.paper_width == 58 else codepages.profile_dots(self.profile) or 512

    def problems(self) -> list[tuple[str, str]]:
        """Cross-field checks: (key, message) for each problem."""
        out = []
        needed = {"network": "host", "serial": "device", "usblp": "device", "file": "device"}.get(self.backend)
        if needed and not getattr(self, needed):
            out.append((needed, f"required for backend {self.backend!r}"))
        if self.backend == "usb" and not (self.vendor_id and self.product_id):
            out.append(("vendor_id", "backend 'usb' needs vendor_id and product_id"))
        out += self._endpoint_problems()
        from .devices.printer import codepages

        if msg := codepages.profile_problem(self.profile):
            out.append(("profile", msg))
        elif msg := codepages.codepage_problem(self.profile, self.codepage):
            out.append(("codepage", msg))
        return out

    def _endpoint_problems(self) -> list[tuple[str, str]]:
        # Bit 7 of an endpoint address is its direction (set: IN, towards the host); endpoint 0
        # is the control endpoint, never a bulk one.
        out = []
        for key, want_in, example in (("out_ep", False, "0x01"), ("in_ep", True, "0x82")):
            address = getattr(self, key)
            if not address:
                continue
            if self.backend != "usb":
                out.append((key, "only backend 'usb' talks to endpoints"))
            elif bool(address & 0x80) != want_in or not address & 0x0F or address & 0x70:
                side = "IN (0x81..0x8f)" if want_in else "OUT (0x01..0x0f)"
                out.append((key, f"an {side} endpoint address such as {example}, got 0x{address:02x}"))
        return out


@dataclass
class DrawerSettings:
    printer: str = field(default="", metadata=_help("printer the drawer is wired to; empty: the only printer"))
    pin: int = field(default=2, metadata=_choices(2, 5) | _help("drawer kick connector pin"))
    pulse_ms: int = field(default=100, metadata=_range(2, 510) | _help("kick pulse on-time"))
    sensor: str = field(default="none", metadata=_choices("none", "open_high", "open_low") | _help(
        "drawer sensor on pin 3: which level means open ('edged drawer calibrate' tells)"))
    open_alert_after: float = field(default=60.0, metadata=_range(1, 86400)
                                    | _help("seconds open before a drawer.alert event"))


@dataclass
class ScannerSettings:
    backend: str = field(default="evdev", metadata=_choices("evdev", "serial") | _help(
        "evdev: a USB keyboard-wedge scanner; serial: RS-232 or USB-serial (CDC) scanner"))
    device: str = field(default="", metadata=_help(
        "evdev: /dev/input/by-id/... (stable); serial: /dev/edged/serial-tty-... or /dev/serial/by-id/... "
        "(stable; /dev/ttyACM0 is numbered in plug order)"))
    vendor: str = field(default="", metadata=_help(
        "evdev, instead of device: USB vendor id, 4 hex digits (ID_VENDOR_ID in `udevadm info`)"))
    product: str = field(default="", metadata=_help("evdev, with vendor: USB product id (ID_MODEL_ID)"))
    serial: str = field(default="", metadata=_help(
        "evdev, with vendor: serial number (ID_SERIAL_SHORT); required when two scanners share vendor:product"))
    keep_unheard: int = field(default=0, metadata=_range(0, 100) | _help(
        "scans kept while no client watches `scanner`, for the next `watch` with kept: true (0: none)"))
    layout: str = field(default="us", metadata=_help("evdev: keyboard layout the scanner is programmed for"))
    variant: str = field(default="", metadata=_help("evdev: layout variant, e.g. nodeadkeys"))
    suffix: str = field(default="enter", metadata=_choices("enter", "tab", "none", "cr", "lf", "crlf") | _help(
        "what ends a scan: enter/tab/none (evdev), cr/lf/crlf (serial)"))
    timeout: float = field(default=0.05, metadata=_range(0.005, 5) | _help(
        "seconds without a character that end a scan (evdev)"))
    baudrate: int = field(default=9600, metadata=_choices(1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200))

    def problems(self) -> list[tuple[str, str]]:
        by_ids = self.vendor or self.product or self.serial
        if self.backend == "evdev" and by_ids:
            if self.device:
                return [("device", "give either device or vendor/product/serial, not both")]
            for key in ("vendor", "product"):
                if not _USB_ID.match(getattr(self, key)):
                    return [(key, f"4 hex digits, e.g. 05e0 (got {getattr(self, key)!r})")]
            return []
        if by_ids:
            return [("vendor", "vendor/product/serial identify keyboard-wedge (evdev) scanners only")]
        if not self.device:
            return [("device", f"required for backend {self.backend!r}"
                               + (" (or vendor and product)" if self.backend == "evdev" else ""))]
        serial_suffix = self.suffix in ("cr", "lf", "crlf")
        if self.backend == "serial" and not serial_suffix:
            return [("suffix", "a serial scanner ends scans with cr, lf or crlf")]
        if self.backend == "evdev":
            if serial_suffix:
                return [("suffix", "a keyboard-wedge scanner ends scans with enter, tab or none")]
            from .devices.scanner.keymap import check_layout  # xkbcommon, only for a wedge scanner

            if msg := check_layout(self.layout, self.variant):
                return [("layout", msg)]
        return []


@dataclass
class JournalSettings:
    segment_size: int = field(default=16 << 20, metadata=_range(64 << 10, 1 << 30)
                              | _help("bytes before a new segment"))
    min_retention_days: float = field(default=30.0, metadata=_range(0, 3650)
                                      | _help("keep acked segments at least this long"))
    flush_timeout: float = field(default=10.0, metadata=_range(0.5, 300) | _help(
        "seconds a journal write or fdatasync may take; then the journal turns read-only, waiting appends "
        "get journal_unavailable and the watchdog is no longer fed (keep it below WatchdogSec, 20 s)"))


@dataclass
class NumberRange:
    first: int = field(default=1, metadata=_range(0, 2**62))
    last: int = field(default=999_999, metadata=_range(0, 2**62))

    def problems(self) -> list[tuple[str, str]]:
        if self.last < self.first:
            return [("last", f"must be >= first ({self.first}), got {self.last}")]
        return []


_FS = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


@dataclass
class UsbSettings:
    mounter: str = field(default="udisks2", metadata=_choices("udisks2", "mount", "directory") | _help(
        "how sticks are mounted: udisks2 (the package's polkit rule lets edged use it), mount (mount(8), "
        "needs root or CAP_SYS_ADMIN), directory (the simulated till: a stick is a directory)"))
    # The known ones, their mount options and tools: edged/usb/filesystems.py (the mounters read it too).
    filesystems: list[str] = field(default_factory=stick_filesystems.defaults, metadata=_help(
        "filesystem types a stick may have (blkid TYPE / ID_FS_TYPE); others are left alone"))
    buses: list[str] = field(default_factory=lambda: ["usb"], metadata=_help(
        "buses a stick may be on (ID_BUS); internal disks are never touched"))
    mount_dir: str = field(default="/run/edged/usb", metadata=_help(
        "mounter = \"mount\": sticks are mounted at mount_dir/<device>"))
    timeout: float = field(default=60.0, metadata=_range(1, 600) | _help(
        "seconds a mount or unmount may take before the stick counts as failed"))

    def problems(self) -> list[tuple[str, str]]:
        for key in ("filesystems", "buses"):
            values = getattr(self, key)
            if not values:
                return [(key, "at least one")]
            for value in values:
                if not _FS.match(value):
                    return [(key, f"{value!r} is not a name like vfat or usb")]
        if not self.mount_dir.startswith("/"):
            return [("mount_dir", f"must be an absolute path, got {self.mount_dir!r}")]
        return []


@dataclass
class ExportSettings:
    usb: str = field(default="manual", metadata=_choices("manual", "on_day_close") | _help(
        "on_day_close: every closed day not yet exported goes to the next USB stick plugged in; "
        "manual: only days asked for with `edged export DATE`"))
    exclude_kinds: list[str] = field(default_factory=list, metadata=_help(
        "record kinds left out of exports (e.g. stock movements head office keeps itself); fixed for a day "
        "when it is closed; the manifest lists their seqs, so `edged verify` and the archive know they "
        "were left out, not lost"))

    def problems(self) -> list[tuple[str, str]]:
        for kind in self.exclude_kinds:
            if not _KIND.match(kind):
                return [("exclude_kinds", f"{kind!r} is not a record kind like stock.move")]
            if kind.startswith("day."):
                return [("exclude_kinds", f"{kind!r}: day.* records are what an export is checked against")]
        return []


@dataclass
class SyncSettings:
    offline_after: float = field(default=15.0, metadata=_range(0, 86400) | _help(
        "seconds a consumer may be without a subscription (a sync client reconnecting) before it "
        "counts as offline"))
    lag_records: int = field(default=1000, metadata=_range(0, 10**9) | _help(
        "a consumer this many records behind is 'behind' (a sync.state event); 0: not checked"))
    lag_age: float = field(default=900.0, metadata=_range(0, 365 * 86400) | _help(
        "seconds its oldest unacked record may wait before the consumer is 'behind'; 0: not checked"))


@dataclass
class RelaySettings:
    broker: str = field(default="", metadata=_help(
        "head office's MQTT 5 broker, mqtts://HOST:PORT (TLS) or mqtt://HOST:PORT; empty: `edged relay` has "
        "nowhere to send and stops at once (docs/FLEET.md)"))
    ca: str = field(default="", metadata=_help("the CA certificate that signed the broker's (PEM file); empty: "
                                               "the system's CAs"))
    cert: str = field(default="", metadata=_help("this till's client certificate (PEM file), for mqtts://"))
    key: str = field(default="", metadata=_help("its private key (PEM file, readable by the relay's user only)"))
    batch: int = field(default=500, metadata=_range(1, 5000) | _help("records per message to head office"))
    window: int = field(default=2000, metadata=_range(1, 100_000) | _help(
        "records sent but not yet acknowledged by head office, at most"))
    ack_timeout: float = field(default=10.0, metadata=_range(1, 3600) | _help(
        "seconds to wait for head office to acknowledge what was sent; then send again from the last ack"))
    reconnect_max: int = field(default=60, metadata=_range(5, 3600) | _help(
        "seconds: the longest pause between two tries to reach the broker (a random 1-4 s, doubling up to "
        "this); a chain of 10,000 tills or more spreads its reconnects after an outage with 300"))
    state_dir: str = field(default="/var/lib/edged-relay", metadata=_help(
        "where the relay notes how far it applied head office's records (down.json); lost, head office "
        "sends them again and the journal keeps each once"))

    def problems(self) -> list[tuple[str, str]]:
        if self.broker and not self.broker.startswith(("mqtt://", "mqtts://")):
            return [("broker", f"{self.broker!r}: write mqtts://HOST:PORT (or mqtt://HOST:PORT without TLS)")]
        if bool(self.cert) != bool(self.key):
            return [("cert" if not self.cert else "key", "give both the client certificate and its key")]
        if self.cert and not self.broker.startswith("mqtts://"):
            return [("broker", "a client certificate needs TLS: write mqtts://HOST:PORT")]
        if self.state_dir and not self.state_dir.startswith("/"):
            return [("state_dir", f"{self.state_dir!r}: an absolute directory")]
        return []


@dataclass
class DeadlineSettings:
    consumer: str = field(default="", metadata=_help("the consumer that must ack records of this kind, e.g. pos"))
    within: float = field(default=300.0, metadata=_range(1, 30 * 86400) | _help(
        "seconds it has from the record's append; then journal.overdue is raised, once"))

    def problems(self) -> list[tuple[str, str]]:
        if not self.consumer:
            return [("consumer", "name the consumer that must ack these records (e.g. \"pos\")")]
        return []


@dataclass
class Config:
    till_id: str = field(default_factory=lambda: _hostname(), metadata=_help("this till's name; unique per shop"))
    daemon: DaemonSettings = field(default_factory=DaemonSettings)
    journal: JournalSettings = field(default_factory=JournalSettings)
    numbering: dict[str, NumberRange] = field(default_factory=dict)
    printers: dict[str, PrinterSettings] = field(default_factory=dict)
    drawers: dict[str, DrawerSettings] = field(default_factory=dict)
    scanners: dict[str, ScannerSettings] = field(default_factory=dict)
    usb: UsbSettings = field(default_factory=UsbSettings)
    export: ExportSettings = field(default_factory=ExportSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    relay: RelaySettings = field(default_factory=RelaySettings)
    deadlines: dict[str, DeadlineSettings] = field(default_factory=dict, metadata={"entries": _KIND})

    def problems(self) -> list[tuple[str, str]]:
        if not _NAME.match(self.till_id):
            return [("till_id", "use letters, digits, '.', '_' or '-' (at most 64)")]
        for kind in self.deadlines:
            if kind.startswith("journal."):
                return [(f'deadlines."{kind}"', "journal.* records are edged's own; name a kind clients append")]
        for name, drawer in self.drawers.items():
            if not drawer.printer and len(self.printers) != 1:
                known = ", ".join(self.printers) or "none configured"
                return [(f"drawers.{name}.printer", f"name its printer ({known})")]
            if drawer.printer and drawer.printer not in self.printers:
                return [(f"drawers.{name}.printer", f"no printer {drawer.printer!r} in [printers]")]
        return self._shared_scanner_ids()

    def _shared_scanner_ids(self) -> list[tuple[str, str]]:
        """Two scanners of one model are told apart by serial number, never by vendor:product."""
        seen: dict[tuple[str, str], str] = {}
        for name, s in self.scanners.items():
            if not s.vendor:
                continue
            key = (s.vendor.lower(), s.product.lower())
            if key in seen:
                other = self.scanners[seen[key]]
                if not s.serial or not other.serial:
                    lacking = name if not s.serial else seen[key]
                    return [(f"scanners.{lacking}.serial", f"scanners {seen[key]} and {name} are both "
                             f"{key[0]}:{key[1]}; give each its serial (ID_SERIAL_SHORT)")]
                if s.serial == other.serial:
                    return [(f"scanners.{name}.serial", f"same as scanners.{seen[key]}.serial")]
            seen[key] = name
        return []


def _uid(name: str) -> int | None:
    try:
        return pwd.getpwnam(name).pw_uid
    except KeyError:
        return None


def _gid(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _hostname() -> str:
    name = socket.gethostname().split(".")[0]
    return name if _NAME.match(name) else "till"


def load(path: Path | str | None) -> Config:
    """Read a config file; None means the default path, which may be absent."""
    if path is None:
        if not DEFAULT_PATH.exists():
            return Config()
        path = DEFAULT_PATH
    return from_dict(_read(Path(path)), str(path))


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None


def from_dict(data: dict[str, Any], source: str = "<config>") -> Config:
    return _build(Config, data, "", source)


def load_as(cls: type[T], path: Path) -> T:
    """Another program's config file (head office's), read as strictly as edged.toml."""
    return typing.cast(T, _build(cls, _read(path), "", str(path)))


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _entry(name: str) -> str:
    """A named entry's key: a record kind with dots is quoted, as it is written in TOML."""
    return f'"{name}"' if "." in name else name


def _build(cls: type, data: Any, path: str, source: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: {path}: must be a table, got {_tname(data)}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(known)})"
            raise ConfigError(f"{source}: {_join(path, key)}: unknown key{hint}")
    values = {
        name: _convert(hints[name], data[name], _join(path, name), known[name].metadata, source)
        for name in known
        if name in data
    }
    obj = cls(**values)
    for key, msg in getattr(obj, "problems", list)():
        raise ConfigError(f"{source}: {_join(path, key)}: {msg}")
    return obj


def _convert(tp: Any, value: Any, path: str, meta: Any, source: str) -> Any:
    def bad(msg: str) -> ConfigError:
        return ConfigError(f"{source}: {path}: {msg}")

    origin = typing.get_origin(tp)
    if origin is dict:
        _, item = typing.get_args(tp)
        if not isinstance(value, dict):
            raise bad(f"must be a table of named entries, got {_tname(value)}")
        for name in value:
            if "entries" in meta:
                if not meta["entries"].match(name):
                    raise bad(f"{name!r} is not a record kind (letters, digits, '.', '_', '-')")
            elif not _ENTRY.match(name):
                raise bad(f"name {name!r}: use letters, digits, '_' or '-' (at most 64)")
        return {name: _build(item, v, _join(path, _entry(name)), source) for name, v in value.items()}
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, path, source)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise bad(f"must be an array, got {_tname(value)}")
        return [_convert(item, v, f"{path}[{i}]", {}, source) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad(f"must be true or false, got {_tname(value)}")
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"must be an integer, got {_tname(value)}")
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad(f"must be a number, got {_tname(value)}")
        value = float(value)
    elif tp is str:
        if not isinstance(value, str):
            raise bad(f"must be a string, got {_tname(value)}")
    else:  # pragma: no cover - a schema mistake, not a user mistake
        raise TypeError(f"unsupported config type {tp} at {path}")
    if "range" in meta:
        lo, hi = meta["range"]
        if not lo <= value <= hi:
            raise bad(f"must be between {lo} and {hi}, got {value}")
    if "choices" in meta and value not in meta["choices"]:
        raise bad(f"must be one of {', '.join(map(repr, meta['choices']))}, got {value!r}")
    return value


def _tname(value: Any) -> str:
    names = {str: "a string", bool: "a boolean", int: "an integer", float: "a number",
             dict: "a table", list: "an array"}
    shown = "" if isinstance(value, (dict, list)) else f" ({value!r})"
    return names.get(type(value), type(value).__name__) + shown


def to_toml(cfg: Any, prefix: str = "") -> str:
    """The effective config, as TOML that `load` reads back to the same values."""
    scalars, tables = [], []
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        name = _join(prefix, f.name)
        if dataclasses.is_dataclass(value):
            tables.append(f"\n[{name}]\n" + to_toml(value, name))
        elif isinstance(value, dict):
            for key, item in value.items():
                tables.append(f"\n[{_join(name, _entry(key))}]\n" + to_toml(item, _join(name, _entry(key))))
        else:
            comment = f"  # {f.metadata['help']}" if "help" in f.metadata else ""
            scalars.append(f"{f.name} = {_toml_value(value)}{comment}\n")
    return "".join(scalars) + "".join(tables)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)

