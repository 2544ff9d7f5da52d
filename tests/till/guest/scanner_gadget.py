"""A USB keyboard-wedge barcode scanner inside the guest: a configfs HID gadget (boot keyboard) on
dummy_hcd, driven by this program, which types barcodes the way a scanner programmed for a
keyboard layout does.

The kernel makes it real: the host side of dummy_hcd sees a HID boot keyboard with the given
vendor/product id and serial, usbhid binds it, an /dev/input/eventN appears and udev runs edged's
rules. This program is the scanner's firmware: for each character it sends the 8-byte boot
keyboard report (modifiers, HID usage) that produces that character on a host set to the layout,
then an all-keys-up report, then Enter.

The layout tables below are written by hand from the layouts' key charts, on purpose not derived
from xkbcommon: edged decodes with xkbcommon, so input made with it would test nothing.

Commands come as files DIR/cmd-N.json (written by the host into the 9p share), each announced by
the line "cmd-N" in the FIFO /run/till-NAME.fifo (written by the host through the guest agent):
{"layout": "de", "text": "...", "enter": true, "unplug_after": K, "delay": S}. The program waits
on the FIFO: polling the share for new files cost each scanner gadget ~14 s of the guest's
emulated CPU in a run. "delay" is
the scanner's intercharacter delay setting (seconds after each key; default none: as fast as the
host polls). With unplug_after the
program types K characters and then pulls its own cable (unbinds the gadget from its UDC, which the
host side of dummy_hcd sees as a disconnect) between two keys of the scan, as a yank would. The outcome goes to DIR/cmd-N.done: "typed" or
"aborted: <why>" (a write failed: unplugged).

Usage (as root in the guest): scanner_gadget.py NAME VID PID SERIAL UDC DIR [MANUFACTURER PRODUCT]
Unplug / replug: write "" / UDC to /sys/kernel/config/usb_gadget/NAME/UDC; the program keeps going.
"""
from __future__ import annotations

import json
import os
import select
import sys
import time
from pathlib import Path

CONFIGFS = Path("/sys/kernel/config/usb_gadget")

# The HID boot keyboard report descriptor (HID 1.11 appendix B.1): 1 byte modifiers, 1 reserved,
# 6 key usages; 5 LED bits out.
BOOT_KEYBOARD = bytes.fromhex(
    "05 01 09 06 a1 01 05 07 19 e0 29 e7 15 00 25 01 75 01 95 08 81 02 95 01 75 08 81 03"
    "95 05 75 01 05 08 19 01 29 05 91 02 95 01 75 03 91 03"
    "95 06 75 08 15 00 25 65 05 07 19 00 29 65 81 00 c0")

SHIFT, ALTGR = 0x02, 0x40  # left shift, right alt in the modifier byte
ENTER = 0x28

# HID usage ids (HID Usage Tables, keyboard page 0x07) by the US key cap's unshifted character.
US_KEY = {**{chr(ord("a") + i): 0x04 + i for i in range(26)},
          **{str(d): 0x1E + (d - 1) % 10 for d in range(1, 10)}, "0": 0x27,
          " ": 0x2C, "-": 0x2D, "=": 0x2E, "[": 0x2F, "]": 0x30, "\\": 0x31, ";": 0x33, "'": 0x34,
          "`": 0x35, ",": 0x36, ".": 0x37, "/": 0x38}
NON_US_HASH = 0x32  # ISO key left of Enter
NON_US_BACKSLASH = 0x64  # ISO key right of left Shift

Key = tuple[int, int]  # (modifiers, usage)


def _us() -> dict[str, Key]:
    t = {c: (0, u) for c, u in US_KEY.items()}
    t.update({c.upper(): (SHIFT, US_KEY[c]) for c in "abcdefghijklmnopqrstuvwxyz"})
    t.update({s: (SHIFT, US_KEY[c]) for s, c in zip("!@#$%^&*()_+{}|:\"~<>?",
                                                    "1234567890-=[]\\;'`,./")})
    return t


def _letters(swap: dict[str, str]) -> dict[str, Key]:
    """a-z and A-Z, with the letters a layout puts on other keys (German Y/Z)."""
    t: dict[str, Key] = {}
    for c in "abcdefghijklmnopqrstuvwxyz":
        usage = US_KEY[swap.get(c, c)]
        t[c], t[c.upper()] = (0, usage), (SHIFT, usage)
    return t


def _de() -> dict[str, Key]:
    """German (QWERTZ, Germany), as on the key caps of a German keyboard."""
    t = _letters({"y": "z", "z": "y"})
    t.update({str(d): (0, US_KEY[str(d)]) for d in range(10)})
    t.update({" ": (0, US_KEY[" "]),
              "ß": (0, US_KEY["-"]), "?": (SHIFT, US_KEY["-"]),
              "ü": (0, US_KEY["["]), "Ü": (SHIFT, US_KEY["["]),
              "+": (0, US_KEY["]"]), "*": (SHIFT, US_KEY["]"]), "~": (ALTGR, US_KEY["]"]),
              "ö": (0, US_KEY[";"]), "Ö": (SHIFT, US_KEY[";"]),
              "ä": (0, US_KEY["'"]), "Ä": (SHIFT, US_KEY["'"]),
              "#": (0, NON_US_HASH), "'": (SHIFT, NON_US_HASH),
              ",": (0, US_KEY[","]), ";": (SHIFT, US_KEY[","]),
              ".": (0, US_KEY["."]), ":": (SHIFT, US_KEY["."]),
              "-": (0, US_KEY["/"]), "_": (SHIFT, US_KEY["/"]),
              "<": (0, NON_US_BACKSLASH), ">": (SHIFT, NON_US_BACKSLASH), "|": (ALTGR, NON_US_BACKSLASH),
              "!": (SHIFT, US_KEY["1"]), '"': (SHIFT, US_KEY["2"]), "§": (SHIFT, US_KEY["3"]),
              "$": (SHIFT, US_KEY["4"]), "%": (SHIFT, US_KEY["5"]), "&": (SHIFT, US_KEY["6"]),
              "/": (SHIFT, US_KEY["7"]), "(": (SHIFT, US_KEY["8"]), ")": (SHIFT, US_KEY["9"]),
              "=": (SHIFT, US_KEY["0"]),
              "@": (ALTGR, US_KEY["q"]), "€": (ALTGR, US_KEY["e"]),
              "{": (ALTGR, US_KEY["7"]), "[": (ALTGR, US_KEY["8"]), "]": (ALTGR, US_KEY["9"]),
              "}": (ALTGR, US_KEY["0"]), "\\": (ALTGR, US_KEY["-"])})
    return t


def _no() -> dict[str, Key]:
    """Norwegian, as on the key caps of a Norwegian keyboard."""
    t = _letters({})
    t.update({str(d): (0, US_KEY[str(d)]) for d in range(10)})
    t.update({" ": (0, US_KEY[" "]),
              "+": (0, US_KEY["-"]), "?": (SHIFT, US_KEY["-"]),
              "\\": (0, US_KEY["="]),
              "å": (0, US_KEY["["]), "Å": (SHIFT, US_KEY["["]),
              "ø": (0, US_KEY[";"]), "Ø": (SHIFT, US_KEY[";"]),
              "æ": (0, US_KEY["'"]), "Æ": (SHIFT, US_KEY["'"]),
              "'": (0, NON_US_HASH), "*": (SHIFT, NON_US_HASH),
              ",": (0, US_KEY[","]), ";": (SHIFT, US_KEY[","]),
              ".": (0, US_KEY["."]), ":": (SHIFT, US_KEY["."]),
              "-": (0, US_KEY["/"]), "_": (SHIFT, US_KEY["/"]),
              "<": (0, NON_US_BACKSLASH), ">": (SHIFT, NON_US_BACKSLASH),
              "!": (SHIFT, US_KEY["1"]), '"': (SHIFT, US_KEY["2"]), "#": (SHIFT, US_KEY["3"]),
              "%": (SHIFT, US_KEY["5"]), "&": (SHIFT, US_KEY["6"]),
              "/": (SHIFT, US_KEY["7"]), "(": (SHIFT, US_KEY["8"]), ")": (SHIFT, US_KEY["9"]),
              "=": (SHIFT, US_KEY["0"]),
              "@": (ALTGR, US_KEY["2"]), "£": (ALTGR, US_KEY["3"]), "$": (ALTGR, US_KEY["4"]),
              "{": (ALTGR, US_KEY["7"]), "[": (ALTGR, US_KEY["8"]), "]": (ALTGR, US_KEY["9"]),
              "}": (ALTGR, US_KEY["0"])})
    return t


LAYOUTS = {"us": _us(), "de": _de(), "no": _no()}


def reports(layout: str, text: str, enter: bool) -> list[bytes]:
    """The boot keyboard reports that type TEXT (each character: key down, all keys up)."""
    table = LAYOUTS[layout]
    out = []
    for c in text:
        if c not in table:
            raise ValueError(f"layout {layout}: no key for {c!r}")
        mods, usage = table[c]
        out += [bytes([mods, 0, usage, 0, 0, 0, 0, 0]), bytes(8)]
    if enter:
        out += [bytes([0, 0, ENTER, 0, 0, 0, 0, 0]), bytes(8)]
    return out


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
    f = g / "functions/hid.usb0"
    f.mkdir(parents=True)
    (f / "protocol").write_text("1")  # keyboard
    (f / "subclass").write_text("1")  # boot interface
    (f / "report_length").write_text("8")
    (f / "report_desc").write_bytes(BOOT_KEYBOARD)
    c = g / "configs/c.1"
    (c / "strings/0x409").mkdir(parents=True)
    (c / "strings/0x409/configuration").write_text("scanner")
    (c / "MaxPower").write_text("100")
    os.symlink(f, c / "hid.usb0")
    (g / "UDC").write_text(udc)
    return g


def hidg_node(function: Path) -> str:
    """The /dev/hidgN of this function: the one whose major:minor is the function's `dev`."""
    want = (function / "dev").read_text().strip()
    for cls in Path("/sys/class/hidg").iterdir():
        if (cls / "dev").read_text().strip() == want:
            return f"/dev/{cls.name}"
    raise FileNotFoundError(f"no /sys/class/hidg entry with dev {want}")


def run(cmd: Path, node: str, gadget: Path) -> str:
    job = json.loads(cmd.read_text())
    keys = reports(job["layout"], job["text"], job.get("enter", True))
    unplug = job.get("unplug_after")
    delay = float(job.get("delay", 0))
    i = 0
    try:
        fd = os.open(node, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as e:
        return f"aborted: open {node}: {e.strerror}"
    try:
        for i, report in enumerate(keys):
            if unplug is not None and i == 2 * unplug:
                (gadget / "UDC").write_text("\n")
            # The driver keeps one report in flight: the next is writable once the host polled
            # the last one (the pace of real USB). A host that stopped polling (unplugged) gets
            # no more keys.
            poll = select.poll()
            poll.register(fd, select.POLLOUT)
            if not poll.poll(5000):
                return f"aborted: the host took no report for 5 s after {i} of {len(keys)}"
            os.write(fd, report)
            if delay and i % 2:
                time.sleep(delay)
    except OSError as e:
        return f"aborted: {e.strerror} after {i} of {len(keys)} reports"
    finally:
        os.close(fd)
    return "typed"


def main() -> None:
    name, vid, pid, serial, udc, out = sys.argv[1:7]
    manufacturer, product = sys.argv[7:9] if len(sys.argv) >= 9 else ("Honeywell", "Barcode Scanner")
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    g = make_gadget(name, vid, pid, serial, udc, manufacturer, product)
    node = hidg_node(g / "functions/hid.usb0")
    fifo = f"/run/till-{name}.fifo"
    if not os.path.exists(fifo):
        os.mkfifo(fifo, 0o600)
    # Read and write: the FIFO never reads as ended when the host's writer closes it.
    commands = os.fdopen(os.open(fifo, os.O_RDWR), "rb")
    (d / "ready").write_text(f"{os.getpid()} {node}\n")
    for line in commands:
        job = line.decode(errors="replace").strip()
        if not job.startswith("cmd-") or "/" in job:
            print(f"scanner gadget: not a command: {line!r}", file=sys.stderr, flush=True)
            continue
        cmd = d / f"{job}.json"
        try:
            outcome = run(cmd, node, g)
        except (OSError, ValueError) as e:  # a command file unreadable: its outcome says so
            outcome = f"aborted: {cmd.name}: {e}"
        done = cmd.with_suffix(".tmp-done")
        done.write_text(outcome)
        done.rename(cmd.with_suffix(".done"))


if __name__ == "__main__":
    main()
