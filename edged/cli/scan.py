"""`edged scan ...`: the simulated scanner, the echo test, recording fixtures, finding the layout."""
from __future__ import annotations

import argparse
import errno
import os
import select
import stat
import sys
from pathlib import Path
from typing import Any

from ..devices.scanner import fixture
from ..devices.scanner.assemble import Assembler
from .common import connected, socket_arg

EXIT_FAIL = 1


def register(sub: argparse._SubParsersAction) -> None:
    scan = sub.add_parser("scan", help="barcode scanners: echo test, find the layout, record, simulate",
                          description="Barcode scanner tools for technicians. Start with `edged scan listen` "
                                      "and scan something; if letters or symbols come out wrong, "
                                      "`edged scan layouts` shows which layout setting reads them right.")
    scsub = scan.add_subparsers(dest="scan_command", metavar="SCOMMAND", required=True)
    listen = scsub.add_parser("listen", help="print every scan as edged decodes it (an echo test for technicians)",
                              description="Scan something: each scan is printed with the scanner's name, the "
                                          "code, its symbology (AIM id), GS1 fields and whether its check digit "
                                          "is right. Wrong letters or symbols mean the scanner's layout setting "
                                          "does not match how it is programmed. Ctrl+C stops.")
    socket_arg(listen)
    lay = scsub.add_parser("layouts", help="show what one scan reads as under each common keyboard layout",
                           description="Scan a barcode whose text you know (one with letters and symbols "
                                       "helps): the scan is shown as it reads under each common layout. "
                                       "Set the scanner's `layout` in the config to the one that matches. "
                                       "Works on the running daemon's keyboard-wedge scanner, or offline on "
                                       "a file from `edged scan record` (--file).")
    lay.add_argument("scanner", nargs="?", metavar="SCANNER",
                     help="scanner name from the config (default: the only keyboard-wedge one)")
    lay.add_argument("--expect", metavar="TEXT", help="what the barcode says: layouts reading it so are marked")
    lay.add_argument("--file", type=Path, metavar="FIXTURE", help="read a recording instead of a live scan")
    lay.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the scan (default 60)")
    socket_arg(lay)
    rec = scsub.add_parser("record", help="capture a scanner's raw input events into a fixture file",
                           description="Reads DEVICE (a /dev/input/... node, grabbed so scans do not reach "
                                       "the console; or a file or FIFO of raw input_event structs) and writes "
                                       "its raw events to FILE, with the scans they read as under --layout. "
                                       "Attach FILE to a bug report. Stop edged first if it has the scanner "
                                       "(systemctl stop edged); Ctrl+C ends the recording.")
    rec.add_argument("device", metavar="DEVICE", help="e.g. /dev/input/by-id/usb-...-event-kbd")
    rec.add_argument("file", type=Path, metavar="FILE", help="fixture file to write (JSON)")
    rec.add_argument("--layout", default="us", help="layout the scanner is programmed for (default us)")
    rec.add_argument("--variant", default="", help="layout variant, e.g. nodeadkeys")
    rec.add_argument("--suffix", default="enter", choices=("enter", "tab", "none"),
                     help="what ends a scan (default enter)")
    rec.add_argument("--scans", type=int, default=0, metavar="N", help="stop after N scans (default: Ctrl+C)")
    rec.add_argument("--timeout", type=_timeout, default=0.05, metavar="SECONDS",
                     help="quiet time that ends a scan, as the scanner's `timeout` setting (default 0.05)")
    send = scsub.add_parser("send", help="let the simulated scanner of `edged run --simulate` scan CODE",
                            description="The simulated till's scanner scans CODE (prefix an AIM id such as "
                                        "]E0 to say which symbology it was), e.g. `edged scan send ]E04006381333931`.")
    send.add_argument("code", metavar="CODE")
    send.add_argument("--scanner", choices=("scanner", "wedge"), default="scanner",
                      help="scanner: the serial one (default); wedge: the keyboard-wedge one, programmed German")
    socket_arg(send)
    scan.set_defaults(func=cmd_scan)


def cmd_scan(args: argparse.Namespace) -> int:
    if args.scan_command == "record":
        return cmd_record(args)
    if args.scan_command == "layouts":
        return cmd_layouts(args)
    if args.scan_command == "send":
        with connected(args) as client:
            answer = client.request("sim", scan=args.code, device=args.scanner)
            print(f"{answer['device']} scanned {answer['scanned']!r}")
        return 0
    with connected(args, timeout=None) as client:
        client.request("watch", topics=["scanner"])
        print("scan something (Ctrl+C stops)", flush=True)
        try:
            for ev in client.iter_events():
                if ev["event"] == "scanner.state":
                    print(f"{ev['device']}: {ev['state']} {ev.get('detail', '')}".rstrip(), flush=True)
                    continue
                extra = f"  gs1 {ev['gs1']}" if ev.get("gs1") else ""
                check = "" if ev["valid"] else f"  INVALID: {ev.get('error')}"
                print(f"{ev['device']}: {ev['code']!r}  symbology {ev['symbology'] or '-'}{extra}{check}", flush=True)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_layouts(args: argparse.Namespace) -> int:
    if args.file:
        try:
            doc = fixture.load(args.file)
        except ValueError as e:
            print(f"edged: {e}", file=sys.stderr)
            return EXIT_FAIL
        print(f"{args.file}: recorded as layout {doc['layout']}")
        return _show(fixture.under_layouts(doc["events"], doc["suffix"], doc["timeout"]), doc["layout"], args.expect)
    with connected(args, timeout=args.timeout) as client:
        devices = client.request("status")["devices"]
        wedges = [n for n, d in devices.items() if d.get("kind") == "scanner" and d.get("backend") == "evdev"]
        if not wedges or args.scanner and args.scanner not in wedges:
            named = f" {args.scanner!r}" if args.scanner else ""
            print(f"edged: no keyboard-wedge scanner{named} (configured: {', '.join(wedges) or 'none'}); serial "
                  "scanners send characters, not keys, so their layout does not matter", file=sys.stderr)
            return EXIT_FAIL
        client.request("watch", topics=["scanner"])
        print("scan a barcode now", flush=True)
        try:
            while True:
                ev = client.next_event()
                if ev["event"] == "scanner.scan" and ev["device"] in (args.scanner or wedges):
                    break
        except TimeoutError:
            print(f"edged: no scan within {args.timeout:g} s", file=sys.stderr)
            return EXIT_FAIL
        answer = client.request("scan_layouts", device=ev["device"])
    print(f"scanner {answer['device']} (configured layout: {answer['layout']})")
    return _show(answer["read_as"], answer["layout"], args.expect)


def _show(read_as: dict[str, str], configured: str, expect: str | None) -> int:
    for layout, text in read_as.items():
        marks = [m for m, on in (("configured", layout == configured), ("= expected", text == expect)) if on]
        print(f"  {layout:<4} {text!r:<40} {'  '.join(marks)}".rstrip())
    if expect is None:
        return 0
    right = [layout for layout, text in read_as.items() if text == expect]
    if not right:
        print(f"no common layout reads {expect!r}; is the scanner a keyboard wedge with a Latin layout?")
        return EXIT_FAIL
    print(f"set layout = \"{right[0]}\"" + (f" (or {', '.join(right[1:])}: same result)" if right[1:] else ""))
    return 0


def cmd_record(args: argparse.Namespace) -> int:
    try:
        Assembler(args.layout, args.variant, args.suffix, args.timeout)  # a bad layout fails before anything is read
    except ValueError as e:
        print(f"edged: {e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        args.file.open("w").close()  # a FILE that cannot be written fails now, not after the recording
    except OSError as e:
        print(f"edged: {args.file}: cannot write: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        dev, fd = _open_input(args.device)
    except OSError as e:
        print(f"edged: {args.device}: {e.strerror or e}", file=sys.stderr)
        return EXIT_FAIL
    try:
        events, error = _record(fd, args)
    finally:
        if dev is not None:
            dev.close()
        else:
            os.close(fd)
    scans = fixture.save(args.file, events, device=args.device, layout=args.layout, variant=args.variant,
                         suffix=args.suffix, timeout=args.timeout)
    if error:
        print(f"edged: {args.device}: reading stopped: {error} (what came before it is saved)", file=sys.stderr)
    print(f"wrote {len(events)} events, {len(scans)} scans (read as layout {args.layout}) to {args.file}")
    return 0


def _open_input(path: str) -> tuple[Any, int]:
    """(InputDevice or None, fd): an event node is grabbed; a file or FIFO is read as it is."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode) or stat.S_ISFIFO(mode):
        return None, os.open(path, os.O_RDONLY)
    if not stat.S_ISCHR(mode):
        raise OSError(errno.EINVAL, "not an input device, file or FIFO")
    try:
        dev = fixture.open_evdev(path)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise OSError(e.errno, "another program has grabbed it (a running edged? systemctl stop edged)") from None
        if e.errno == errno.EACCES:
            raise OSError(e.errno, "permission denied (run as root or as a member of group input)") from None
        raise
    return dev, dev.fd


def _record(fd: int, args: argparse.Namespace) -> tuple[list[fixture.RawEvent], str]:
    """Raw events until EOF, Ctrl+C, a read error (ENODEV: unplugged; then why), or N scans
    (then until the scanner is quiet)."""
    asm = Assembler(args.layout, args.variant, args.suffix, args.timeout)
    events: list[fixture.RawEvent] = []
    pending, count = b"", 0
    print(f"recording {args.device}: scan now (Ctrl+C stops)", flush=True)
    try:
        while True:
            done = bool(args.scans) and count >= args.scans
            ready, _, _ = select.select([fd], [], [], asm.timeout * 2 if done else 0.2)
            if not ready:
                if done:
                    break
                end = asm.idle(float("inf"))
                count += _echo([end] if end else [])
                continue
            try:
                data = os.read(fd, 64 * fixture.EVENT.size)
            except OSError as e:
                return events, e.strerror or str(e)
            if not data:
                break
            pending += data
            whole = len(pending) - len(pending) % fixture.EVENT.size
            for ev in fixture.unpack(pending[:whole]):
                events.append(ev)
                if ev[2] == 1:  # EV_KEY
                    count += _echo(asm.key(ev[3], ev[4], ev[0] + ev[1] / 1e6))
                elif ev[2] == 0 and ev[3] == 3:  # SYN_DROPPED: this reader fell behind the kernel's buffer
                    lost = asm.dropped(ev[0] + ev[1] / 1e6)
                    print(f"  dropped by the kernel: torn scan {lost!r}... not counted (scan it again)", flush=True)
            pending = pending[whole:]
    except KeyboardInterrupt:
        pass
    return events, ""


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.005 <= value <= 5:
        raise argparse.ArgumentTypeError(f"{text!r}: seconds between 0.005 and 5, as scanners' timeout setting")
    return value


def _echo(scans: list[tuple[str, str]]) -> int:
    for text, _ in scans:
        print(f"  scan: {text!r}", flush=True)
    return len(scans)
