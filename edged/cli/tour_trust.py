"""`edged demo`, step 15: what no client of the socket may do, whoever it runs as (docs/PROTOCOL.md
"Who may do what"): write edged's own records, take another client's sale by its tx_id, read a
consumer's stream from beyond the journal's end, or grow edged's memory with one request.
"""
from __future__ import annotations

import asyncio

import msgpack

from ..client import Client, ClientError
from ..relay import framing
from .tour_steps import DemoTill, step


async def trust_steps(till: DemoTill) -> None:
    step(15, "trust on the till: what no client of the socket may do (docs/PROTOCOL.md \"Who may do what\")")
    async with await Client.connect(till.socket, client="demo-intruder") as c:
        forged = {"kind": "day.exported", "body": {"business_day": "2099-01-01", "path": "/nowhere"}}
        print(f"  append a day.exported record (edged's own kind) -> {await _refused(c, 'append', records=[forged])}")
        retry = await c.request("append", records=[{"kind": "sale", "body": {"total": 0}, "tx_id": "pos-7f3a-0001"}])
        print(f"  append with the POS's tx_id pos-7f3a-0001 from the same user -> seq {retry['records'][0]['seq']}, "
              f"a duplicate of its own sale (from another user it is that user's own record: tx_ids are "
              f"scoped to the uid that appended them)")
        last = (await c.request("status"))["journal"]["last_seq"]
        beyond = await _refused(c, "subscribe", consumer="head-office", **{"from": last + 1000})
        print(f"  subscribe head-office from seq {last + 1000}, past the end -> {beyond}")
        kick = await c.request("print", job_id="demo-raw-kick", raw=b"\x1bp\x00\x19\xfa")
        print(f"  raw ESC p (a drawer kick) to the printer -> job {kick['state']}, journaled as drawer.open when it "
              "prints: this demo's user is edged's own, so privileged; any other user gets not_permitted")
    # 1 MiB of empty arrays decodes to ~70 MiB: refused before decoding, only this connection closed.
    reader, writer = await asyncio.open_unix_connection(till.socket)
    body = msgpack.packb({"op": "hello", "id": 1, "protocol": 1, "client": "demo-bomb",
                          "padding": [[]] * 1_000_000}, use_bin_type=True)
    writer.write(framing.HEADER.pack(len(body)) + body)
    await writer.drain()
    answer = await framing.read_frame(reader, 4 << 20, 5, 5)
    writer.close()
    error = (answer or {}).get("error") or {}
    print(f"  one request of 1 MiB holding a million empty lists -> {error.get('code')}: {error.get('message')}")
    async with await Client.connect(till.socket, client="demo-after") as c:
        status = await c.request("status")
        print(f"  edged goes on: journal {status['journal']['state']}, "
              f"{len(status.get('connections', []))} client connected")


async def _refused(c: Client, op: str, **params: object) -> str:
    try:
        await c.request(op, **params)
    except ClientError as e:
        return f"{e.code}: {e.message}"
    return "accepted (it should not be)"
