"""`edged bench ...`: the subcommands, their options, and which benchmark each runs.

Each benchmark module is imported only when its command runs: they pull in
python-escpos, the daemon and SQLite, which the rest of the CLI does not need.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

EXIT_USAGE = 2  # as edged/cli/common.py: a bad option value, like argparse's own usage errors


def _dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", help="where to put the temporary files (default: $TMPDIR)")


def register(sub: Any) -> None:
    """`edged bench` and its five benchmarks, on the subparsers of `edged`."""
    bench = sub.add_parser("bench", help="measure performance against baselines from the same run")
    bsub = bench.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    bj = bsub.add_parser("journal", help="append rate, ack latency, startup and verify speed of the journal",
                         description="Measures raw fdatasync and SQLite as baselines, then edged's journal "
                                     "with 1 and 16 appenders, ack latency, startup on a large journal and "
                                     "verify speed. Writes only to a temporary directory.")
    bj.add_argument("--seconds", type=float, default=3.0, help="time per figure (default 3)")
    bj.add_argument("--flush-delay", default="0ms", metavar="MS",
                    help="add this much to every fdatasync, e.g. 5ms as on a till's SD card")
    bj.add_argument("--startup-size", type=int, default=1024, metavar="MB",
                    help="size of the journal built for the startup and verify figures (default 1024; 0 skips)")
    _dir_arg(bj)
    br = bsub.add_parser("relay", help="the socket: replay speed, live latency, 32 appending clients, "
                                       "latency with hostile clients",
                         description="Builds a journal, starts a real `edged run --simulate` on it and "
                                     "measures, as its clients: catch-up replay to one subscriber, append-ack "
                                     "to record-event latency, 32 clients appending (beside the in-process "
                                     "rate), and append latency with hostile clients attached.")
    br.add_argument("--records", type=int, default=1_000_000, help="journal size to replay (default 1,000,000)")
    br.add_argument("--seconds", type=float, default=3.0, help="time per append figure (default 3)")
    _dir_arg(br)
    bp = bsub.add_parser("print", help="receipt render time and print request -> first byte at the printer",
                         description="Renders a 40-line receipt with QR code and logo (beside python-escpos "
                                     "alone), then starts a real `edged run` printing to the emulator and "
                                     "measures from the print request to the job's first byte at the printer "
                                     "(beside the same daemon's append round trip).")
    bp.add_argument("--samples", type=int, default=300, help="renders and print jobs measured (default 300)")
    _dir_arg(bp)
    bs = bsub.add_parser("scan", help="latency from a scanner's last key event to the scan event at a client",
                         description="Feeds a keyboard-wedge scanner (a pipe of packed input events) and "
                                     "measures from its last key event to the scanner.scan event at a socket "
                                     "client, beside a status round trip on the same socket.")
    bs.add_argument("--samples", type=int, default=500, help="scans measured (default 500)")
    _dir_arg(bs)
    bi = bsub.add_parser("import", help="head office: verify and import of a stick, beside reading its bytes",
                         description="Generates a stick of signed exports of one till (streamed to disk), "
                                     "then measures reading its files (the baseline), `edged verify --key` "
                                     "and `edged import --archive` as child processes: records/s, MB/s and "
                                     "peak RSS. As root the page cache is dropped before each step. Writes "
                                     "only to a temporary directory, removed at the end.")
    bi.add_argument("--megabytes", type=int, default=64, metavar="N", help="size of the stick in MiB (default 64)")
    bi.add_argument("--record-bytes", type=int, default=256, metavar="B",
                    help="bytes per sale record on disk, header included (default 256)")
    _dir_arg(bi)
    bf = bsub.add_parser("fleet", help="tills online to head office over MQTT: latency, archived rate, catch-up",
                         description="Starts a Mosquitto on loopback, TILLS simulated tills (edged and edged relay "
                                     "each) and one edged headoffice ingest writing a PostgreSQL archive (a "
                                     "server of its own, on a unix socket) or an SQLite one, then measures "
                                     "append -> committed at head office one sale at a time, records/s archived "
                                     "with every till appending at once beside the same rows written straight "
                                     "into the archive (PostgreSQL: COPY), and the catch-up of a till back after "
                                     "an outage. Writes only to a temporary directory, removed at the end.")
    bf.add_argument("--tills", type=int, default=4, metavar="N",
                    help="simulated tills (default 4). Up to 16: each a real edged and edged relay; more (or with "
                         "--light): lightweight tills sharing processes, for a chain's figures: upstream records/s, "
                         "fan-out of a broadcast, the reconnect storm after head office was down, memory")
    bf.add_argument("--light", action="store_true", help="lightweight simulated tills whatever their number")
    bf.add_argument("--tls", action="store_true", help="with lightweight tills: TLS with a client certificate per "
                                                       "till, as in a chain (default: passwords, cheaper to connect)")
    bf.add_argument("--outage", type=float, default=30, metavar="SECONDS",
                    help="with lightweight tills: how long head office is down before the storm (default 30)")
    bf.add_argument("--records", type=int, default=20_000, metavar="N",
                    help="sales each till appends at once (default 20000)")
    bf.add_argument("--samples", type=int, default=500, help="single sales timed online (default 500)")
    bf.add_argument("--catch-up", type=int, default=1_000_000, metavar="N",
                    help="records in the journal of a till back after an outage (default 1000000; 0: skip)")
    bf.add_argument("--ingests", type=int, default=1, metavar="N",
                    help="ingest processes sharing the batches (MQTT 5 shared subscription; default 1)")
    bf.add_argument("--backend", choices=("postgresql", "sqlite"), default="postgresql",
                    help="head office's archive (default postgresql: needs the Debian package postgresql)")
    _dir_arg(bf)
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "scan":
        from . import scan

        return scan.run(args.samples, args.dir)
    if args.bench_command == "print":
        from . import print_

        return print_.run(args.samples, args.dir)
    if args.bench_command == "import":
        from . import import_

        if args.megabytes < 1 or not import_.MIN_RECORD <= args.record_bytes <= 1 << 20:
            print(f"edged: --megabytes is at least 1, --record-bytes between {import_.MIN_RECORD} and "
                  "1048576", file=sys.stderr)
            return EXIT_USAGE
        return import_.run(args.megabytes, args.record_bytes, args.dir)
    if args.bench_command == "fleet" and (args.light or args.tills > 16):
        from . import chainsim

        # the default is for a few real tills; here 200,000 in all
        records = max(200, 200_000 // args.tills) if args.records == 20_000 else args.records
        return chainsim.run(args.tills, records, args.outage, args.dir, args.tls)
    if args.bench_command == "fleet":
        from . import fleet

        if args.tills < 1 or args.records < 1 or args.samples < 1 or args.catch_up < 0 or not 1 <= args.ingests <= 16:
            print("edged: --tills, --records and --samples are at least 1, --catch-up at least 0, --ingests 1 to 16",
                  file=sys.stderr)
            return EXIT_USAGE
        return fleet.run(args.tills, args.records, args.samples, args.catch_up, args.dir, args.backend, args.ingests)
    if args.bench_command == "relay":
        from . import relay

        return relay.run(args.records, args.seconds, args.dir)
    from . import journal

    delay = args.flush_delay.removesuffix("ms")
    try:
        delay_ms = float(delay)
    except ValueError:
        print(f"edged: --flush-delay {args.flush_delay!r}: write milliseconds, e.g. 5ms", file=sys.stderr)
        return EXIT_USAGE
    return journal.run(args.seconds, delay_ms, args.startup_size, args.dir)
