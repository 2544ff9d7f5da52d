"""The journal online to head office (docs/FLEET.md), with real processes: edged (`run --simulate`),
a real Mosquitto on loopback, `edged relay` and `edged headoffice ingest` as the CLI starts them,
the archive in SQLite or in PostgreSQL (a real one, tests/conftest.py). What head office holds is
compared byte for byte with the till's journal."""
from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from brokers import Pki, free_port
from edged.client import Client
from edged.fleet import wire
from edged.journal import frame
from fleetkit import BOTH, POSTGRES, REPO, TILL, Fleet, _acked, _append, _journal


@BOTH
def test_sales_reach_head_office_byte_for_byte_and_edged_is_acked_after_the_commit(fleet):
    fleet.ingest()
    fleet.relay()
    last = asyncio.run(_append(fleet.sock, 1000))
    rows = fleet.wait_archived(last)
    journal = asyncio.run(_journal(fleet.sock))
    assert rows == journal[:len(rows)] and [s for s, _ in rows] == list(range(1, len(rows) + 1))
    deadline = time.monotonic() + 30
    while asyncio.run(_acked(fleet.sock)) < last:  # edged's cursor follows head office's archive
        assert time.monotonic() < deadline, fleet.logs("relay")
        time.sleep(0.2)


def test_broker_down_sales_go_on_and_head_office_catches_up_without_loss(fleet):
    fleet.ingest()
    fleet.relay()
    first = asyncio.run(_append(fleet.sock, 400))
    fleet.wait_archived(first)
    fleet.broker.stop()
    last = asyncio.run(_append(fleet.sock, 3000, start=400))  # edged acks every sale while the broker is gone
    assert asyncio.run(_acked(fleet.sock)) <= first
    time.sleep(1)
    fleet.broker.start()  # same port, nothing persisted: the till's journal was the buffer
    rows = fleet.wait_archived(last)
    assert [s for s, _ in rows] == list(range(1, last + 1))
    assert rows == asyncio.run(_journal(fleet.sock))[:last]


@POSTGRES
def test_killed_relay_and_ingest_lose_nothing_and_store_nothing_twice(fleet):
    """SIGKILL of the ingest and of the relay, several times each, while sales go on: the archive
    ends equal to the journal, every seq once."""
    fleet.ingest()
    fleet.relay()
    appending = threading.Thread(target=lambda: asyncio.run(_append(fleet.sock, 12_000, pause=0.01)))
    appending.start()
    try:
        for round_ in range(6):
            time.sleep(0.4)
            archived = len(fleet.archived())
            fleet.kill("ingest" if round_ % 2 else "relay")  # mid-batch: batches go every few ms
            fleet.ingest() if round_ % 2 else fleet.relay()
            assert len(fleet.archived()) >= archived  # nothing taken back
    finally:
        appending.join()
    total = asyncio.run(_journal(fleet.sock))
    last = max(s for s, _ in total)
    rows = fleet.wait_archived(last)
    assert [s for s, _ in rows] == list(range(1, last + 1))  # the key (till, seq): nothing twice
    assert rows == total[:last]
    assert _watermark(fleet) == last


def _watermark(fleet: Fleet) -> int:
    return fleet.query("SELECT archived_through FROM online WHERE till=?", (TILL,))[0][0]


@POSTGRES
def test_two_ingest_workers_share_the_batches_and_the_watermark_is_right(fleet):
    """Small batches shared by two ingest processes (MQTT 5 shared subscription): they commit out of
    order at times; the watermark only moves over what is all there, and ends at the last seq."""
    fleet.cfg.write_text(f'till_id = "{TILL}"\n[relay]\nbatch = 20\nack_timeout = 2\n')
    fleet.ingest("ingest-a")
    fleet.ingest("ingest-b")
    fleet.relay()
    last = asyncio.run(_append(fleet.sock, 4000))
    rows = fleet.wait_archived(last)
    assert [s for s, _ in rows] == list(range(1, last + 1))
    took = [fleet.logs(n).count("added") for n in ("ingest-a", "ingest-b")]
    assert all(took), took  # both took batches
    deadline = time.monotonic() + 30
    while _watermark(fleet) != last:
        assert time.monotonic() < deadline, _watermark(fleet)
        time.sleep(0.1)


@pytest.mark.parametrize("fleet", [{"tls": True}], indirect=True)
def test_over_mutual_tls_with_the_per_till_acl(fleet):
    """The till's client certificate is its identity at the broker: it may publish only under its own
    id. A certificate of till A publishing as till B is refused by the broker (PUBACK "Not
    authorized"); a batch on A's own topic that names B is refused by the ingest. Nothing of either
    is archived; A's own sales are."""
    fleet.ingest()
    fleet.relay()
    last = asyncio.run(_append(fleet.sock, 300))
    fleet.wait_archived(last)
    cert, key = fleet.pki.issue(TILL)
    forged = wire.encode_batch(wire.Batch("shop1-till2", 1, 1, bytes(32), [b"x" * 80]))
    reasons = _publish_as(fleet, cert, key, {wire.up_topic("shop1-till2"): forged,
                                              wire.up_topic(TILL): forged})
    assert "Not authorized" in reasons[wire.up_topic("shop1-till2")]
    assert reasons[wire.up_topic(TILL)] in ("Success", "No matching subscribers")  # the broker took it ...
    deadline = time.monotonic() + 10
    while "naming till 'shop1-till2'" not in fleet.logs("ingest"):  # ... and the ingest refused it
        assert time.monotonic() < deadline, fleet.logs("ingest")
        time.sleep(0.1)
    assert fleet.query("SELECT DISTINCT till FROM records") == [(TILL,)]
    assert fleet.archived()[-1][0] == last


def _publish_as(fleet: Fleet, cert: str, key: str, messages: dict[str, bytes]) -> dict[str, str]:
    """Publish each message QoS 1 with this client certificate; the broker's PUBACK reason per topic."""
    import ssl

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="forger", protocol=MQTTProtocolVersion.MQTTv5)
    c.tls_set(ca_certs=fleet.pki.ca, certfile=cert, keyfile=key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
    reasons: dict[int, str] = {}
    c.on_publish = lambda client, userdata, mid, reason, props: reasons.__setitem__(mid, str(reason))
    c.connect("127.0.0.1", fleet.broker.port)
    c.loop_start()
    try:
        mids = {topic: c.publish(topic, payload, qos=1).mid for topic, payload in messages.items()}
        deadline = time.monotonic() + 10
        while len(reasons) < len(mids):
            assert time.monotonic() < deadline, reasons
            time.sleep(0.05)
    finally:
        c.disconnect()
        c.loop_stop()
    return {topic: reasons[mid] for topic, mid in mids.items()}


@pytest.mark.parametrize("fleet", [{"tls": True}], indirect=True)
def test_relay_check_says_in_one_line_what_is_wrong(fleet):
    def check(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "edged", "relay", "--check", *args], capture_output=True,
                              text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)

    good = check("--broker", fleet.broker.url, *fleet.creds(TILL))
    assert good.returncode == 0 and "connected to mqtts://127.0.0.1" in good.stdout, good.stdout + good.stderr
    other_ca = Pki(fleet.base / "other-pki")
    cert, key = fleet.pki.issue(TILL)
    wrong_ca = check("--broker", fleet.broker.url, "--ca", other_ca.ca, "--cert", cert, "--key", key)
    assert wrong_ca.returncode == 1 and "TLS with 127.0.0.1" in wrong_ca.stdout, wrong_ca.stdout
    assert len(wrong_ca.stdout.strip().splitlines()) == 1
    foreign = other_ca.issue(TILL)  # a certificate the broker's CA did not sign
    refused = check("--broker", fleet.broker.url, "--ca", fleet.pki.ca, "--cert", foreign[0], "--key", foreign[1])
    assert refused.returncode == 1 and len(refused.stdout.strip().splitlines()) == 1, refused.stdout
    nobody = check("--broker", f"mqtts://127.0.0.1:{free_port()}", *fleet.creds(TILL))
    assert nobody.returncode == 1 and "cannot reach 127.0.0.1" in nobody.stdout, nobody.stdout
    unset = subprocess.run([sys.executable, "-m", "edged", "relay", "--config", str(fleet.cfg)], capture_output=True,
                           text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert unset.returncode == 2 and "relay.broker is not set" in unset.stderr


@POSTGRES
def test_a_day_relayed_online_and_imported_from_a_stick_is_stored_once(fleet):
    fleet.ingest()
    fleet.relay()
    asyncio.run(_append(fleet.sock, 500))

    (fleet.base / "stick").mkdir()

    async def close_and_export() -> dict:
        async with await Client.connect(fleet.sock, "till-admin") as c:
            closed = await c.request("day_close", business_day="2026-11-02")
            await c.request("export", business_day="2026-11-02", target=str(fleet.base / "stick"))
            return closed
    closed = asyncio.run(close_and_export())
    last = asyncio.run(_journal(fleet.sock))[-1][0]  # day.exported follows the day: relayed too
    rows = fleet.wait_archived(last)
    day_rows = fleet.query("SELECT first_seq, last_seq, source FROM days WHERE till=?", (TILL,))
    assert day_rows == [(closed["first_seq"], closed["seq"], "online")]
    fleet.kill("ingest", signal.SIGTERM)  # the stick's import and the ingest take turns at the archive
    out = subprocess.run([sys.executable, "-m", "edged", "import", "--archive", fleet.archive,
                          str(fleet.base / "stick")], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"0 records added, {closed['seq'] - closed['first_seq'] + 1} already archived" in out.stdout, out.stdout
    assert fleet.archived() == rows  # once, as they came online
    assert fleet.query("SELECT count(*) FROM days WHERE till=?", (TILL,)) == [(1,)]
    status = subprocess.run([sys.executable, "-m", "edged", "archive", "status", fleet.archive],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert f"online: every record through seq {last} archived" in status.stdout, status.stdout
    assert re.search(rf"in all; lag 0 records \(the till's journal was at seq {last}\)", status.stdout), status.stdout
    assert "gaps: none" in status.stdout, status.stdout


@POSTGRES
def test_catch_up_of_100000_records_after_the_broker_was_down(fleet):
    """The issue's bar: 100,000 sales appended while the broker is down, then it comes back: the
    archive equals the journal, every seq once, byte for byte."""
    fleet.ingest()
    fleet.relay()
    fleet.broker.stop()
    last = asyncio.run(_append(fleet.sock, 100_000))
    fleet.broker.start()
    rows = fleet.wait_archived(last, timeout=600)
    assert [s for s, _ in rows] == list(range(1, last + 1))
    assert rows == asyncio.run(_journal(fleet.sock))[:last]
    assert _watermark(fleet) == last


def test_a_qos0_message_does_not_knock_the_ingest_off_the_broker(fleet):
    """A QoS 0 message has no PUBACK: the ingest must not send one (the broker would drop it)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    fleet.ingest()
    fleet.relay()
    c = paho.Client(CallbackAPIVersion.VERSION2, client_id="qos0", protocol=MQTTProtocolVersion.MQTTv5)
    c.connect("127.0.0.1", fleet.broker.port)
    c.loop_start()
    try:
        for payload in (b"junk", wire.encode_batch(wire.Batch(TILL, 1, 1, bytes(32), [b"x" * 80]))):
            c.publish(wire.up_topic(TILL), payload, qos=0).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()
    last = asyncio.run(_append(fleet.sock, 200))
    fleet.wait_archived(last)
    assert "dropped a message" in fleet.logs("ingest") and "disconnected" not in fleet.logs("ingest")


def _delivered_through(sock: str, seq: int, timeout: float = 30) -> None:
    """Until edged has pushed the relay's subscription every record through SEQ (edged's status)."""
    async def next_seq() -> int:
        async with await Client.connect(sock, "check") as c:
            status = await c.request("status")
        subs = [conn["subscriptions"]["head-office"] for conn in status["connections"]
                if "head-office" in conn.get("subscriptions", {})]
        return subs[0]["next_seq"] if subs else 0
    deadline = time.monotonic() + timeout
    while asyncio.run(next_seq()) <= seq:
        assert time.monotonic() < deadline, f"edged did not push the relay records through {seq}"
        time.sleep(0.05)


def test_while_head_office_owes_an_ack_the_relay_fills_the_next_batch(fleet):
    """Nagle's rule (edged/fleet/relay.py): a lone sale goes at once; the sales appended while head
    office owes its ack go as one full batch once the ack comes, not one batch per append request
    (head office's cost is mostly per batch). Head office here is a plain MQTT client that acks
    when the test says."""
    import queue

    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    fleet.cfg.write_text(f'till_id = "{TILL}"\n[relay]\nack_timeout = 60\nbatch = 500\n')
    got: queue.Queue = queue.Queue()
    subscribed = threading.Event()
    office = paho.Client(CallbackAPIVersion.VERSION2, client_id="test-head-office", protocol=MQTTProtocolVersion.MQTTv5)
    office.on_connect = lambda c, u, f, r, p: c.subscribe(wire.up_topic(TILL), 1)
    office.on_subscribe = lambda c, u, mid, codes, p: subscribed.set()
    office.on_message = lambda c, u, m: got.put(wire.decode_batch(bytes(m.payload)))
    host, port = fleet.broker.url.removeprefix("mqtt://").split(":")
    office.connect(host, int(port))
    office.loop_start()
    try:
        assert subscribed.wait(30)
        fleet.relay()
        assert asyncio.run(_append(fleet.sock, 1)) == 1
        first = got.get(timeout=30)
        assert (first.first_seq, first.last_seq) == (1, 1)  # nothing owed: at once
        # Two requests of 200, each pushed to the relay as its own `frames` event before the next.
        for start, through in ((1, 201), (201, 401)):
            assert asyncio.run(_append(fleet.sock, 200, start=start)) == through
            _delivered_through(fleet.sock, through)
        time.sleep(0.5)  # without the rule, the relay published each event as it came
        assert got.empty(), f"published while head office owed its ack: {got.get().first_seq}.."
        link = frame.link(first.chain_before, first.frames[0])
        office.publish(wire.ack_topic(TILL), wire.encode_ack(wire.Ack(TILL, 1, link)), qos=1)
        batch = got.get(timeout=30)
        assert (batch.first_seq, batch.last_seq, len(batch.frames)) == (2, 401, 400)
        assert batch.chain_before == link  # it follows the acked record
    finally:
        office.loop_stop()
        office.disconnect()
