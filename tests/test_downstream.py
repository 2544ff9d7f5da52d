"""Head office talks back (docs/FLEET.md, "Head office talks back"): records put into head office's
outbox reach the till's journal once, in order, through a real Mosquitto, `edged relay`, `edged
headoffice ingest` and a real PostgreSQL, and the POS app gets them as a consumer of their kinds.
What the till does not take over in time comes back up as an alert."""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from brokers import FLEET_ACL
from edged import identity
from edged.client import Client
from edged.day import archive
from edged.fleet import mqtt, wire
from edged.journal import frame
from fleetkit import REPO, TILL, Fleet, _append, _journal

PG = pytest.mark.parametrize("fleet", [{"archive": "postgresql"}], indirect=True, ids=["postgresql"])
ORDERS = ["order.web", "voucher.sold", "prices.list"]


def ho(fleet: Fleet, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    """`edged headoffice ...` on the fleet's archive, as head office's staff run it."""
    return subprocess.run([sys.executable, "-m", "edged", "headoffice", *args, "--archive", fleet.archive],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60,
                          input=stdin)


def send(fleet: Fleet, who: list[str], kind: str, body: dict, *extra: str) -> str:
    path = fleet.base / f"body-{time.monotonic_ns()}.json"
    path.write_text(json.dumps(body))
    out = ho(fleet, "send", *who, kind, str(path), *extra)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def records(fleet: Fleet, kinds: list[str] = ORDERS) -> list[frame.Record]:
    """The journal's records of these kinds, in seq order."""
    recs = [frame.decode(raw, 0, None) for _seq, raw in asyncio.run(_journal(fleet.sock))]
    return [r for r in recs if r.kind in kinds]


def wait_for(what, timeout: float = 60, why=lambda: ""):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        assert time.monotonic() < deadline, why()
        time.sleep(0.2)


def downstream(fleet: Fleet) -> dict[str, int]:
    return {c: a for c, a in fleet.query("SELECT channel, acked FROM downstream WHERE till=?", (TILL,))}


def _already(fleet: Fleet) -> int:
    """Head office's records the relay found in the journal already (sent again), so far."""
    return sum(int(n) for n in re.findall(r"(\d+) already in the journal", fleet.logs("relay")))


def _logs(fleet: Fleet) -> str:
    return f"relay: {fleet.logs('relay')}\ningest: {fleet.logs('ingest')}"


async def _pos_reads(sock: str, n: int, ack: bool = True) -> list[dict]:
    """The POS app: a consumer of head office's kinds, from its cursor; N record events."""
    async with await Client.connect(sock, "pos") as pos:
        await pos.request("subscribe", consumer="pos", kinds=ORDERS, **{"from": "acked"})
        got = []
        while len(got) < n:
            ev = await pos.next_event(30)
            if ev.get("event") == "record":
                got.append(ev)
                if ack:
                    await pos.request("ack", consumer="pos", seq=ev["seq"])
        return got


def enroll(fleet: Fleet, till: str) -> None:
    """Another till of the chain, as head office knows it (its key enrolled)."""
    raw = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    out = subprocess.run([sys.executable, "-m", "edged", "archive", "enroll", fleet.archive, till,
                          identity.public_text(raw)], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("fleet", [{}, {"archive": "postgresql"}], indirect=True, ids=["sqlite", "postgresql"])
def test_records_queued_while_the_till_is_away_arrive_once_in_order_and_survive_replays(fleet):
    fleet.ingest()
    # The till is away (no relay): three for it, one for every till, one for another till.
    for n in range(1, 4):
        assert f"till:{TILL} {n}: order.web" in send(fleet, ["--till", TILL], "order.web", {"order": f"W-{n}"})
    assert "broadcast 1: prices.list" in send(fleet, ["--all"], "prices.list", {"version": 7})
    unknown = ho(fleet, "send", "--till", "shop9-till9", "order.web", "-", stdin='{"order": "W-9"}')
    assert unknown.returncode == 2 and "no till 'shop9-till9' is enrolled" in unknown.stderr
    enroll(fleet, "shop9-till9")
    send(fleet, ["--till", "shop9-till9"], "order.web", {"order": "not ours"})

    fleet.relay()
    got = wait_for(lambda: len(recs := records(fleet)) >= 4 and recs, why=lambda: _logs(fleet))
    tx = [r.tx_id for r in got]
    assert sorted(tx) == ["ho:broadcast:1", "ho:till:1", "ho:till:2", "ho:till:3"], tx
    assert [t for t in tx if t.startswith("ho:till:")] == ["ho:till:1", "ho:till:2", "ho:till:3"]  # in order
    assert [r.body for r in got if r.kind == "order.web"] == [{"order": "W-1"}, {"order": "W-2"}, {"order": "W-3"}]
    # The POS app gets them as a consumer of their kinds.
    pos = asyncio.run(_pos_reads(fleet.sock, 4))
    assert sorted(e["tx_id"] for e in pos) == sorted(tx)
    wait_for(lambda: downstream(fleet) == {"till": 3, "broadcast": 1}, why=lambda: str(downstream(fleet)))

    # The relay's positions file lost: it says it has nothing; head office holds its acks and sends nothing.
    fleet.kill("relay")
    (fleet.relay_state / "down.json").unlink(missing_ok=True)
    fleet.relay()
    wait_for(lambda: "says it applied till through 0; it acknowledged 3" in fleet.logs("ingest"),
             why=lambda: _logs(fleet))
    assert [r.tx_id for r in records(fleet)] == tx

    # Head office's acks lost too (its archive restored from a backup): it sends everything again,
    # and the journal still holds each record once.
    fleet.kill("relay")
    (fleet.relay_state / "down.json").unlink(missing_ok=True)
    db = archive.open_archive(fleet.archive)
    db.execute("UPDATE downstream SET acked=0, sent_through=0, last_sent=0 WHERE till=?", (TILL,))
    db.close()
    had = _already(fleet)
    fleet.relay()
    wait_for(lambda: _already(fleet) - had >= 4, why=lambda: _logs(fleet))  # all four came again
    wait_for(lambda: downstream(fleet) == {"till": 3, "broadcast": 1}, why=lambda: str(downstream(fleet)))
    assert [r.tx_id for r in records(fleet)] == tx


@pytest.mark.parametrize("fleet", [{"archive": "postgresql", "tls": True}], indirect=True, ids=["mtls"])
def test_a_relay_killed_between_the_append_and_the_ack_leaves_one_record(fleet):
    fleet.ingest()
    fleet.relay()
    send(fleet, ["--till", TILL], "order.web", {"order": "W-1"})
    wait_for(lambda: downstream(fleet).get("till") == 1, why=lambda: _logs(fleet))
    # The broker now refuses the till's down-acks: the next record is appended and its ack never arrives.
    acl = fleet.broker.dir / "acl"
    acl.write_text(FLEET_ACL.replace("pattern write edged/v1/till/%u/down-ack\n", ""))
    fleet.broker.proc.send_signal(signal.SIGHUP)  # Mosquitto reads its ACL again
    time.sleep(0.5)
    send(fleet, ["--till", TILL], "order.web", {"order": "W-2"})
    wait_for(lambda: len(records(fleet)) == 2, why=lambda: _logs(fleet))
    time.sleep(1)
    assert downstream(fleet)["till"] == 1  # head office never heard of the append
    fleet.kill("relay")  # killed with the record in its journal and no ack at head office
    (fleet.relay_state / "down.json").unlink(missing_ok=True)  # nor a note of it: it says hello with nothing
    acl.write_text(FLEET_ACL)
    fleet.broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    fleet.relay()
    wait_for(lambda: downstream(fleet).get("till") == 2, why=lambda: _logs(fleet))
    assert [(r.tx_id, r.body) for r in records(fleet)] == [("ho:till:1", {"order": "W-1"}),
                                                            ("ho:till:2", {"order": "W-2"})]
    assert "till 2..2: 0 appended, 1 already in the journal" in fleet.logs("relay")


@PG
def test_an_expired_record_is_not_delivered_and_head_office_says_so(fleet):
    fleet.ingest()
    send(fleet, ["--till", TILL], "order.web", {"order": "W-old"}, "--expires-in", "1s")
    send(fleet, ["--all"], "prices.list", {"version": 1}, "--collapse", "prices")
    send(fleet, ["--all"], "prices.list", {"version": 2}, "--collapse", "prices")
    send(fleet, ["--till", TILL], "order.web", {"order": "W-new"})
    time.sleep(1.5)
    fleet.relay()
    wait_for(lambda: downstream(fleet) == {"till": 2, "broadcast": 2}, why=lambda: _logs(fleet))
    got = records(fleet)
    assert [(r.tx_id, r.body) for r in got] in (
        [("ho:till:2", {"order": "W-new"}), ("ho:broadcast:2", {"version": 2})],
        [("ho:broadcast:2", {"version": 2}), ("ho:till:2", {"order": "W-new"})]), got
    skipped = fleet.query("SELECT channel, pos, reason FROM skipped WHERE till=? ORDER BY channel", (TILL,))
    assert [(c, p) for c, p, _ in skipped] == [("broadcast", 1), ("till", 1)]
    assert "superseded by 2" in skipped[0][2] and "expired at" in skipped[1][2]
    assert f"{TILL} till 1 not delivered: expired" in fleet.logs("ingest")
    status = ho(fleet, "status", "--json")
    row = next(t for t in json.loads(status.stdout) if t["till"] == TILL)
    assert row["down"]["till"] == {"applied": 2, "last": 2, "pending": 0}
    assert row["link"] == "online"


@pytest.mark.parametrize("fleet", [{"archive": "postgresql", "config": '[deadlines."order.web"]\nconsumer = "pos"\n'
                                    'within = 1\n'}], indirect=True, ids=["postgresql"])
def test_a_web_order_not_picked_up_in_time_reaches_head_office_alerts_and_clears_there(fleet):
    fleet.ingest()
    fleet.relay()
    send(fleet, ["--till", TILL], "order.web", {"order": "W-77", "pickup": "16:30"})

    async def pos_sees_it_but_waits() -> dict:
        async with await Client.connect(fleet.sock, "pos") as pos:
            await pos.request("subscribe", consumer="pos", kinds=["order.web"], **{"from": 1})
            return await pos.next_event(30)

    order = asyncio.run(pos_sees_it_but_waits())
    assert order["body"] == {"order": "W-77", "pickup": "16:30"} and order["tx_id"] == "ho:till:1"

    def open_alerts() -> list:
        out = ho(fleet, "alerts", "--json")
        return json.loads(out.stdout) if out.returncode == 1 else []

    alert = wait_for(open_alerts, why=lambda: _logs(fleet))[0]
    assert (alert["till"], alert["record_seq"], alert["kind"], alert["consumer"]) == (TILL, order["seq"], "order.web",
                                                                                      "pos")
    assert "OVERDUE" in ho(fleet, "alerts").stdout
    status = ho(fleet, "status")
    assert status.returncode == 1 and "1 overdue" in status.stdout, status.stdout

    async def pos_acks() -> None:
        async with await Client.connect(fleet.sock, "pos") as pos:
            await pos.request("ack", consumer="pos", seq=order["seq"])

    asyncio.run(pos_acks())
    wait_for(lambda: ho(fleet, "alerts").returncode == 0, why=lambda: _logs(fleet))
    cleared = json.loads(ho(fleet, "alerts", "--all", "--json").stdout)
    assert len(cleared) == 1 and cleared[0]["cleared_seq"] > cleared[0]["overdue_seq"]


@pytest.mark.parametrize("fleet", [{"archive": "postgresql", "tls": True}], indirect=True, ids=["mtls"])
def test_a_till_cannot_read_or_answer_for_another_tills_channel(fleet):
    fleet.ingest()
    fleet.relay()
    wait_for(lambda: "says hello" in fleet.logs("ingest"), why=lambda: _logs(fleet))
    enroll(fleet, "shop2-till1")
    cert, key = fleet.pki.issue("shop2-till1")
    seen: list[str] = []
    granted: list[list[str]] = []
    puback: dict[int, str] = {}
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="shop2-till1", protocol=MQTTProtocolVersion.MQTTv5)
    c.tls_set(ca_certs=fleet.pki.ca, certfile=cert, keyfile=key)
    c.on_message = lambda client, userdata, msg: seen.append(msg.topic)
    c.on_subscribe = lambda client, userdata, mid, reasons, props: granted.append([str(r) for r in reasons])
    c.on_publish = lambda client, userdata, mid, reason, props: puback.__setitem__(mid, str(reason))
    host, port, _ = mqtt.Endpoint(fleet.broker.url).parts()
    c.connect(host, port)
    c.loop_start()
    try:
        c.subscribe(wire.down_topic(TILL), qos=1)  # Mosquitto grants it, and delivers nothing of it
        c.subscribe(wire.down_topic("shop2-till1"), qos=1)
        wait_for(lambda: len(granted) == 2)
        # This till's own channel works (its hello, as a relay says it): only that reaches it.
        own = c.publish(wire.hello_topic("shop2-till1"), wire.encode_hello(wire.Hello("shop2-till1", {})), qos=1)
        send(fleet, ["--till", "shop2-till1"], "order.web", {"order": "for till 2"})
        send(fleet, ["--till", TILL], "order.web", {"order": "for till 1 only"})
        wait_for(lambda: records(fleet) and seen, why=lambda: _logs(fleet))
        # Answering for the other till: refused by the broker, nothing changes at head office.
        forged = c.publish(wire.down_ack_topic(TILL), wire.encode_down_ack(wire.DownAck(TILL, "till", 99)), qos=1)
        hello = c.publish(wire.hello_topic(TILL), wire.encode_hello(wire.Hello(TILL, {"till": 99})), qos=1)
        wait_for(lambda: {own.mid, forged.mid, hello.mid} <= set(puback))
        time.sleep(1)
    finally:
        c.loop_stop()
        c.disconnect()
    assert seen == [wire.down_topic("shop2-till1")], seen
    assert (puback[forged.mid], puback[hello.mid]) == ("Not authorized", "Not authorized")
    assert puback[own.mid] == "Success"
    assert downstream(fleet)["till"] == 1
    assert [r.body for r in records(fleet)] == [{"order": "for till 1 only"}]


@pytest.mark.parametrize("fleet", [{"archive": "postgresql", "tls": True}], indirect=True, ids=["mtls"])
def test_a_broker_whose_acl_predates_the_hello_still_takes_the_journal_up(fleet):
    """A chain that upgrades its tills before its broker's ACL: the hello is refused, said so in the
    relay's log, and the till's sales are archived all the same."""
    (fleet.broker.dir / "acl").write_text(FLEET_ACL.replace("pattern write edged/v1/till/%u/hello\n", ""))
    fleet.broker.proc.send_signal(signal.SIGHUP)
    time.sleep(0.5)
    fleet.ingest()
    fleet.relay()
    last = asyncio.run(_append(fleet.sock, 400))
    fleet.wait_archived(last, timeout=60)
    assert "the broker refused this till's hello (Not authorized)" in fleet.logs("relay")
    assert downstream(fleet) == {}  # head office never heard it: nothing sent down
