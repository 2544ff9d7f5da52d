"""`edged demo`, steps 9 to 13: the POS app journals a sale, the sync layer reads and acks it,
head office talks back (offline, web orders, one overdue), and the day is closed and carried to
head office on a USB stick.
"""
from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from ..client import Client
from . import format as fmt
from .status import format_status
from .tour_steps import DemoTill, next_event, show_event, step


async def journal_steps(client: Client, till: DemoTill) -> None:
    step(9, "the POS app appends a sale; edged answers after fdatasync, with the next receipt number")
    sale = {"kind": "sale", "body": {"total": 1250, "lines": [["Brot", 450], ["Käse", 800]]},
            "tx_id": "pos-7f3a-0001", "number": "receipt"}
    print(f"  append -> {_appended(await client.request('append', records=[sale]))}")
    again = await client.request("append", records=[sale])
    print(f"  the same tx_id again (a retry after a lost answer) -> {_appended(again)}")


def _appended(answer: dict[str, Any]) -> str:
    return "; ".join(f"seq {r['seq']}" + (f", receipt number {r['number']}" if r.get("number") is not None else "")
                     + (", a duplicate: not appended again" if r["duplicate"] else "")
                     for r in answer["records"])


async def sync_steps(till: DemoTill) -> None:
    async with await Client.connect(till.socket, client="demo-sync") as sync:
        step(10, "the sync layer subscribes from its last ack, receives records, acks them")
        answer = await sync.request("subscribe", consumer="head-office", window=100, **{"from": "acked"})
        print(f"  subscribe -> reading from seq {answer['from_seq']}")
        last = (await sync.request("consumers"))["last_seq"]
        rows = []
        while True:
            ev = await asyncio.wait_for(sync.events.get(), 5)
            rows.append((f"seq {ev['seq']}", ev["kind"], f"number {fmt.value('number', ev['number'])}",
                         f"chain {fmt.value('chain', ev['chain'])}"))
            if ev["seq"] == last:
                break
        print("\n".join(fmt.table(rows, indent="    ")))
        print(f"  ack -> acked up to seq {(await sync.request('ack', consumer='head-office', seq=ev['seq']))['acked']}")
        step(11, "status now shows the journal, the consumer and who is connected")
        status = await sync.request("status")
        j = status["journal"]
        lag = status["consumer_lag"]
        print("\n".join(fmt.key_values(
            [("journal", f"records {fmt.seq_range(j['first_seq'], j['last_seq'])}, {j['state']}, "
                         f"{fmt.plural(j['segments'], 'segment')}")]
            + [(f"consumer {name}", f"acked up to seq {acked}, lag {lag.get(name, 0)}")
               for name, acked in status["consumers"].items()])))
        print("\n".join(f"  {line}" for line in format_status(status).rstrip("\n").split("\n\n")[-1].splitlines()))
        print("  privileged ops (consumer_remove, drawer_open, day_close, export) need root, edged's user, or a")
        print("  user/group from daemon.privileged_users / privileged_groups; others get not_permitted.")
    await _talk_back(till)


async def _talk_back(till: DemoTill) -> None:
    step(12, "head office talks back: the network drops, a web order comes down to the POS app, one is "
             "picked up late (journal.overdue, then cleared), the sync layer catches up (`edged sync log`)")
    async with await Client.connect(till.socket, client="demo-screen") as screen, \
            await Client.connect(till.socket, client="demo-pos") as pos:
        await screen.request("watch", topics=["sync", "journal"])
        show_event(till, await next_event(screen, "sync.state"), "the sync layer disconnected")
        await pos.request("append", records=[{"kind": "stock.move", "body": {"item": "Brot", "qty": -1}},
                                             {"kind": "stock.move", "body": {"item": "Käse", "qty": -1}}])
        print("  the POS app journals two stock movements (stock.move: left out of exports, see step 13)")
        await pos.request("subscribe", consumer="pos", kinds=["order.web"], **{"from": "acked"})
        async with await Client.connect(till.socket, client="demo-sync") as relay:
            for order in ("W-1001", "W-1002"):
                await relay.request("append", records=[{"kind": "order.web", "tx_id": f"web:{order}",
                                                        "body": {"order": order, "pickup": "16:30"}}])
            print("  the sync layer (back for a moment) appends web orders W-1001 and W-1002 (kind order.web)")
        first = await next_event(pos, "record")
        print(f"  the POS app hears {first['body']['order']} (seq {first['seq']}) and acks it at once")
        await pos.request("ack", consumer="pos", seq=first["seq"])
        second = await next_event(pos, "record")
        print(f"  it hears {second['body']['order']} (seq {second['seq']}) but the cashier is busy...")
        show_event(till, await next_event(screen, "journal.overdue", 10))
        await pos.request("ack", consumer="pos", seq=second["seq"])
        show_event(till, await next_event(screen, "journal.overdue_cleared"), "picked up")
        _sync_lines(await pos.request("status"))
        async with await Client.connect(till.socket, client="demo-sync") as relay:
            await relay.request("subscribe", consumer="head-office", **{"from": "acked"})
            show_event(till, await next_event(screen, "sync.state"), "the sync layer is back")
            last = (await relay.request("consumers"))["last_seq"]
            while (await next_event(relay, "record"))["seq"] < last:
                pass
            await relay.request("ack", consumer="head-office", seq=last)
            print(f"  relayed and acked up to seq {last}:")
            _sync_lines(await relay.request("status"))
    till.cli("sync", "log", "--socket", "edged.sock")


def _sync_lines(status: dict[str, Any]) -> None:
    """`edged status`'s sync and deadline lines (systemd's STATUS= says the same in short)."""
    for line in format_status(status).splitlines():
        if line.startswith(("sync", "deadline")):
            print(f"  {line}")


async def day_steps(client: Client, till: DemoTill) -> None:
    step(13, "closing time: the day is closed, written to a USB stick (here a directory plugged in "
             "with `edged sim stick DIR`), verified and imported at head office")
    stick = till.root / "stick"
    stick.mkdir()
    day = time.strftime("%Y-%m-%d")
    closed = await client.request("day_close", business_day=day)
    numbers = ", ".join(f"{name} {lo}" if lo == hi else f"{name} {lo}..{hi}"
                        for name, (lo, hi) in closed["numbers"].items()) or "none"
    print(f"  day_close -> records {fmt.seq_range(closed['first_seq'], closed['last_seq'])}, "
          f"day-close record {closed['seq']}, chain {closed['chain'][:16]}...")
    print("\n".join(fmt.key_values([("counts", ", ".join(f"{k} {n}" for k, n in closed["counts"].items())),
                                    ("numbers", numbers)], indent="    ")))
    again = await client.request("day_close", business_day=day)
    print(f"  closing it again answers the same record: seq {again['seq']}"
          + (", a duplicate" if again["duplicate"] else ""))
    async with await Client.connect(till.socket, client="demo-cashier-screen") as screen:
        await screen.request("watch", topics=["usb"])
        asked = await client.request("export", business_day=day)  # `edged export DATE`: onto a stick
        print(f"  export {day} -> {'queued' if asked['queued'] else 'not queued'}; "
              + (f"writing to {', '.join(asked['stick'])}" if asked["stick"] else "no stick in yet"))
        show_event(till, await screen.next_event(5))
        plugged = (await client.request("sim", stick=str(stick)))["plugged"]
        print(f"  the cashier plugs in a stick: {plugged['device']} ({till.rel(plugged['node'])})")
        while True:
            ev = await screen.next_event(30)
            show_event(till, ev)
            if ev.get("state") in ("done", "failed"):
                break
    rows = [(os.path.relpath(os.path.join(d, name), stick), f"{os.path.getsize(os.path.join(d, name))} bytes")
            for d, _dirs, files in sorted(os.walk(stick)) for name in sorted(files)]
    print("  on the stick:")
    print("\n".join(fmt.table(rows, indent="    ")))
    till.cli("verify", "stick", note="intact; who made it is checked once head office knows the till's key (step 14)")
