"""`edged sim printer`: the printer emulator on its own, driven from the terminal."""
from __future__ import annotations

import asyncio
import logging
import signal
import sys

from .paper import Receipt
from .printer import STATE_KEYS, PrinterEmulator

_HELP = f"commands: <key> on|off (keys: {', '.join(STATE_KEYS)}), state, quit"


def run_printer(port: int, columns: int) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    return asyncio.run(_main(port, columns))


async def _main(port: int, columns: int) -> int:
    def show(receipt: Receipt, text: str) -> None:
        print(f"----- receipt ({receipt.cut} cut) -----\n{text}" + "-" * 30, flush=True)

    emulator = PrinterEmulator(port=port, columns=columns, on_receipt=show)
    await emulator.start()
    print(f"printer emulator on tcp 127.0.0.1:{emulator.port} and pty {emulator.pty_path}", flush=True)
    print(_HELP, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    commands = asyncio.create_task(_commands(reader, emulator, stop))
    await stop.wait()
    commands.cancel()
    await emulator.stop()
    return 0


async def _commands(reader: asyncio.StreamReader, emulator: PrinterEmulator, stop: asyncio.Event) -> None:
    quit_requested = False
    while line := await reader.readline():
        words = line.decode(errors="replace").split()
        if not words:
            continue
        if words == ["quit"]:
            quit_requested = True
            break
        if words == ["state"]:
            print(emulator.describe(), flush=True)
        elif len(words) == 2 and words[1] in ("on", "off"):
            try:
                emulator.set_state(**{words[0]: words[1] == "on"})
                print(emulator.describe(), flush=True)
            except ValueError as e:
                print(e, flush=True)
        else:
            print(_HELP, flush=True)
    # Ctrl+D on a terminal means stop; stdin from /dev/null (run in the background) does not.
    if quit_requested or sys.stdin.isatty():
        stop.set()
