"""Fair connections: one uid's idle connections never lock out the others (the real daemon,
hostile clients under other uids)."""
from __future__ import annotations

import pytest

from edged import config
from edged.client import BlockingClient, ClientError
from other_user import ATTACKER_UID, KEEP, POS_UID, PRIVILEGED_UID, AsUser, Edged, as_user, needs_root

LIMITS = "max_connections = 12\nmax_connections_per_uid = 4\nreserved_connections = 3\n"


def _grab_all(sock: str, name: str) -> dict:
    """Open idle, introduced connections until edged says busy; keep them open."""
    while len(KEEP) < 100:
        try:
            KEEP.append(BlockingClient.connect(sock, name, timeout=10))
        except ClientError as e:
            return {"held": len(KEEP), "code": e.code, "message": e.message}
    return {"held": len(KEEP), "code": None, "message": ""}


def _served(sock: str, name: str) -> dict:
    try:
        with BlockingClient.connect(sock, name, timeout=10) as c:
            seq = c.request("append", records=[{"kind": "sale", "body": {"by": name}}])["records"][0]["seq"]
            return {"seq": seq, "last_seq": c.request("status")["journal"]["last_seq"]}
    except ClientError as e:
        return {"refused": e.code, "message": e.message}


@needs_root
def test_one_uid_cannot_lock_out_root_the_pos_or_a_privileged_user(short_dir):
    with Edged(short_dir, LIMITS) as edged:
        attacker = AsUser(ATTACKER_UID, lambda: _grab_all(edged.sock, "hog"), hold=True)
        try:
            grabbed = attacker.result()
            assert grabbed["held"] == 4 and grabbed["code"] == "busy"
            assert f"uid {ATTACKER_UID}" in grabbed["message"] and "max_connections_per_uid" in grabbed["message"]
            for uid in (POS_UID, PRIVILEGED_UID):  # the attack changes nothing for them
                answer = as_user(uid, lambda: _served(edged.sock, f"user-{uid}"))
                assert answer.get("seq") and answer["last_seq"] >= answer["seq"], answer
            with BlockingClient.connect(edged.sock, "root") as root:
                status = root.request("status")
                assert [c["uid"] for c in status["connections"]].count(ATTACKER_UID) == 4
                assert status["refused_busy"] >= 1
                assert status["max_connections_per_uid"] == 4 and status["reserved_connections"] == 3
        finally:
            attacker.release()


@needs_root
def test_the_last_slots_are_kept_for_root_and_the_privileged(short_dir):
    """Several hostile uids together fill what ordinary users may take; the reserve stays."""
    with Edged(short_dir, LIMITS) as edged:
        hogs = []
        try:
            held = 0
            for i in range(3):  # 4 + 4 + 1: the 9 slots outside the reserve
                hogs.append(AsUser(ATTACKER_UID + i, lambda: _grab_all(edged.sock, "hog"), hold=True))
                grabbed = hogs[-1].result()
                held += grabbed["held"]
                assert grabbed["code"] == "busy"
            assert held == 9 and "reserved_connections" in grabbed["message"]
            pos = as_user(POS_UID, lambda: _served(edged.sock, "pos"))
            assert pos["refused"] == "busy"  # documented: ordinary users share the 9
            privileged = as_user(PRIVILEGED_UID, lambda: _served(edged.sock, "manager"))
            assert privileged.get("seq"), privileged
            with BlockingClient.connect(edged.sock, "root") as root:
                assert root.request("status")["journal"]["last_seq"] >= privileged["seq"]
        finally:
            for hog in hogs:
                hog.release()
        # Once the hogs are gone, the POS is served again.
        assert as_user(POS_UID, lambda: _served(edged.sock, "pos")).get("seq")


@pytest.mark.parametrize("table,key", [
    ({"max_connections": 8, "reserved_connections": 8}, "daemon.reserved_connections"),
    ({"max_connections": 20, "reserved_connections": 4, "max_connections_per_uid": 16},
     "daemon.max_connections_per_uid"),
    ({"max_connections_per_uid": 0}, "daemon.max_connections_per_uid"),
])
def test_limits_that_would_let_one_uid_take_everything_are_refused(table, key):
    with pytest.raises(config.ConfigError) as e:
        config.from_dict({"daemon": table})
    assert key in str(e.value)
    assert "\n" not in str(e.value)
