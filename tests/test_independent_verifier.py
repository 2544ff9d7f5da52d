"""A verifier written only from docs/JOURNAL.md ("Segment file", "Days and exports", "Signatures"),
with hashlib, json, struct, zlib, msgpack and cryptography: it accepts what a real till exports and
refuses it once a sale is altered (re-chained), a manifest field is changed or another key signed.

Nothing from edged is imported for checking: edged only runs the till that makes the export."""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import os
import re
import shutil
import struct
import zlib
from pathlib import Path

import msgpack
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edged import config
from edged.client import Client
from edged.daemon import Daemon

DAY_CONTEXT = b"edged day.close signature 1\n"
MANIFEST_CONTEXT = b"edged export manifest signature 1\n"
SEG = struct.Struct(">8sQ32sI")
HEAD = struct.Struct(">IQqQQ32sI")
DAYS = {"2026-03-02": ["sale", "sale", "Rückgabe", "stock.move", "sale"], "2026-03-03": ["sale", "💶 Kasse", "sale"]}


class Refused(Exception):
    pass


# --- canonical JSON, by the rules of "Canonical JSON" ---------------------------------------------

_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(s: str) -> str:
    out = []
    for ch in s:
        cp = ord(ch)
        if ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0x20 <= cp <= 0x7E:
            out.append(ch)
        elif cp > 0xFFFF:
            cp -= 0x10000
            out.append(f"\\u{0xD800 + (cp >> 10):04x}\\u{0xDC00 + (cp & 0x3FF):04x}")
        else:
            out.append(f"\\u{cp:04x}")
    return '"' + "".join(out) + '"'


def canonical(v) -> bytes:
    def enc(v) -> str:
        if v is None:
            return "null"
        if v is True or v is False:
            return "true" if v else "false"
        if isinstance(v, int):
            return str(v)
        if isinstance(v, str):
            return _string(v)
        if isinstance(v, list):
            return "[" + ",".join(enc(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{" + ",".join(_string(k) + ":" + enc(v[k]) for k in sorted(v)) + "}"
        raise Refused(f"{type(v).__name__} cannot be in signed JSON")
    return enc(v).encode("ascii")


# --- keys ------------------------------------------------------------------------------------------

def parse_key(text: str) -> bytes:
    if not re.fullmatch(r"ed25519:[0-9a-f]{64}", text or ""):
        raise Refused(f"not a public key: {text!r}")
    return bytes.fromhex(text[8:])


def fingerprint(raw: bytes) -> str:
    return "sha256:" + hashlib.sha256(raw).hexdigest()[:32]


def check_sig(raw: bytes, sig: bytes, message: bytes, what: str) -> None:
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, message)
    except InvalidSignature:
        raise Refused(f"{what}: signature does not check out") from None


# --- the verifier ----------------------------------------------------------------------------------

def _no_dupes(pairs):
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        raise Refused("manifest.json: duplicate key")
    return dict(pairs)


def _float(text):
    raise Refused(f"manifest.json: float {text}")


def verify_export(folder: Path, enrolled: dict[str, list[str]]) -> dict:
    """The steps of "What a verifier checks, in this order"; Refused(reason) at the first failure."""
    m = json.loads((folder / "manifest.json").read_bytes(), object_pairs_hook=_no_dupes, parse_float=_float)
    if m.get("format") != "edged-export/3":  # 1
        raise Refused(f"format {m.get('format')!r} is not signed")
    till, key = m["till_id"], m["key"]  # 2
    if key["public_key"] not in enrolled.get(till, []):
        raise Refused(f"key {key['fingerprint']} is not enrolled for {till}")
    public = parse_key(key["public_key"])
    if key["fingerprint"] != fingerprint(public):
        raise Refused("key fingerprint is not the key's")
    sig = m.get("signature", "")  # 3
    if not re.fullmatch(r"[0-9a-f]{128}", sig):
        raise Refused("manifest signature is not 128 hex digits")
    check_sig(public, bytes.fromhex(sig), MANIFEST_CONTEXT + canonical({k: v for k, v in m.items()
                                                                        if k != "signature"}), "manifest")
    names = set(os.listdir(folder)) - {"manifest.json"}  # 4
    if names != set(m["files"]):
        raise Refused(f"files {sorted(names)} are not the manifest's {sorted(m['files'])}")
    data = {}
    for name, meta in m["files"].items():
        if "/" in name or name in (".", ".."):
            raise Refused(f"{name!r} is not a plain file name")
        blob = (folder / name).read_bytes()
        if len(blob) != meta["size"] or hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            raise Refused(f"{name}: size or sha256 differs from the manifest")
        data[name] = blob
    seg = data["journal.seg"]
    magic, first, chain, crc = SEG.unpack_from(seg, 0)  # 5
    if magic != b"EDGEDJ01" or zlib.crc32(seg[:48]) != crc:
        raise Refused("bad segment header")
    if first != m["first_seq"] or chain.hex() != m["chain_before"]:
        raise Refused("segment header is not the manifest's")
    excluded = m.get("excluded") or {"kinds": [], "counts": {}, "runs": []}
    runs = [(a, b, bytes.fromhex(link)) for a, b, link in excluded["runs"]]
    pos, expect, records, after = 52, first, [], {}  # 6
    while pos < len(seg):
        length, seq, ts, bf, bl, link, crc = HEAD.unpack_from(seg, pos)
        if not 1 <= length <= 16 << 20 or pos + 72 + length > len(seg):
            raise Refused(f"frame at {pos}: bad length")
        payload = seg[pos + 72:pos + 72 + length]
        if zlib.crc32(payload, zlib.crc32(seg[pos:pos + 68])) != crc:
            raise Refused(f"record {seq}: CRC")
        if runs and runs[0][0] == expect and seq > expect:
            _a, last, chain = runs.pop(0)
            after[last] = chain
            expect = last + 1
        if seq != expect:
            raise Refused(f"seq {seq} where {expect} was due")
        if hashlib.sha256(chain + seg[pos:pos + 36] + payload).digest() != link:
            raise Refused(f"record {seq}: chain link")
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if not isinstance(fields, list) or len(fields) not in (5, 6):
            raise Refused(f"record {seq}: payload is not a record")
        records.append((seq, fields))
        after[seq] = chain = link
        pos, expect = pos + 72 + length, expect + 1
    seq, (kind, body, tx_id, _counter, _number, *_uid) = records[-1]  # 7
    if seq != m["last_seq"] or seq != m["day_close_seq"] or chain.hex() != m["chain_after"]:
        raise Refused("last record is not the manifest's last_seq / chain_after")
    if dict(collections.Counter(f[0] for _s, f in records)) != m["counts"]:
        raise Refused("counts differ from the manifest")
    day = m["business_day"]  # 8
    if kind != "day.close" or tx_id != f"day.close:{day}":
        raise Refused("the last record is not the day's day.close")
    want_counts = collections.Counter(f[0] for _s, f in records[:-1]) + collections.Counter(excluded["counts"])
    if (body["business_day"], body["till_id"], body["first_seq"], body["last_seq"]) != (day, till, first, seq - 1) \
            or body["chain"] != after.get(body["last_seq"], bytes.fromhex(m["chain_before"])) \
            or body["counts"] != dict(want_counts) or body["numbers"] != m["numbers"] \
            or sorted(body.get("excluded_kinds") or []) != sorted(excluded["kinds"]):
        raise Refused("the day.close body does not match the records and the manifest")
    s = body["signature"]  # 9
    signer = next((parse_key(k) for k in enrolled.get(till, []) if fingerprint(parse_key(k)) == s["fingerprint"]),
                  None)
    if signer is None:
        raise Refused(f"day.close signed by {s['fingerprint']}, not a key enrolled for {till}")
    summary = {k: body[k] for k in ("business_day", "till_id", "first_seq", "last_seq", "counts", "numbers")}
    summary.update(chain=body["chain"].hex(), excluded_kinds=sorted(body.get("excluded_kinds") or []),
                   key=s["fingerprint"], epoch=s["epoch"])
    check_sig(signer, s["ed25519"], DAY_CONTEXT + canonical(summary), "day.close")
    return m


def verify_stick(root: Path, enrolled: dict[str, list[str]]) -> list[dict]:
    manifests = [verify_export(d, enrolled) for d in sorted(root.glob("EDGED/*/*"))]
    for a, b in zip(manifests, manifests[1:]):  # one till here: each day continues the one before
        if b["first_seq"] != a["last_seq"] + 1 or b["chain_before"] != a["chain_after"]:
            raise Refused(f"{b['business_day']} does not continue {a['business_day']}")
    return manifests


# --- a genuine stick from a real till ---------------------------------------------------------------

@pytest.fixture(scope="module")
def genuine(tmp_path_factory):
    d = Path(tmp_path_factory.mktemp("till"))
    short = Path(f"/tmp/edged-iv-{os.getpid()}")
    short.mkdir()
    stick = d / "stick"
    stick.mkdir()
    cfg = config.from_dict({"till_id": "till-7", "numbering": {"receipt": {"first": 100, "last": 999}},
                            "export": {"exclude_kinds": ["stock.move"]},
                            "daemon": {"socket": str(short / "s.sock"), "state_dir": str(d / "st")}})

    async def scenario():
        async with Daemon(cfg).parts():
            async with await Client.connect(cfg.daemon.socket, "pos") as c:
                for day, kinds in DAYS.items():
                    for i, kind in enumerate(kinds):
                        await c.request("append", records=[{"kind": kind, "body": {"i": i, "total": 999 + i},
                                                            "tx_id": f"{day}-{i}", "number": "receipt"}])
                    await c.request("day_close", business_day=day)
                    await c.request("export", business_day=day, target=str(stick))
    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(short, ignore_errors=True)
    info = json.loads((d / "st" / "identity" / "identity.json").read_text())  # what `edged identity` shows
    key = serialization.load_pem_private_key((d / "st" / "identity" / "ed25519.key").read_bytes(), None)
    return stick, info["public_key"], key


def _copy(genuine, tmp_path) -> Path:
    shutil.copytree(genuine[0], tmp_path / "stick")
    return tmp_path / "stick"


def _frames(seg: bytes) -> list[tuple[tuple, bytes]]:
    out, pos = [], 52
    while pos < len(seg):
        head = HEAD.unpack_from(seg, pos)
        out.append((head, seg[pos + 72:pos + 72 + head[0]]))
        pos += 72 + head[0]
    return out


def _rechain(folder: Path, edit, signer: Ed25519PrivateKey | None = None) -> None:
    """Change records with edit(kind, body) and redo what a forger can: every chain link and CRC,
    the day.close body's chain, the manifest's chain_after and checksums; re-sign with `signer`,
    if given (the day.close with it too when it is not the till's key)."""
    seg = (folder / "journal.seg").read_bytes()
    m = json.loads((folder / "manifest.json").read_text())
    chain, out, heads = SEG.unpack_from(seg, 0)[2], [seg[:52]], []
    expect = m["first_seq"]
    for (_l, seq, ts, bf, bl, _c, _crc), payload in _frames(seg):
        if seq != expect:  # after a left-out run: its link is now the forged chain so far
            next(r for r in m["excluded"]["runs"] if r[1] == seq - 1)[2] = chain.hex()
        expect = seq + 1
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=False)
        if fields[0] == "day.close":
            fields[1]["chain"] = heads[-1] if heads else chain
            if signer is not None and fields[1]["signature"]["fingerprint"] != fingerprint(_raw(signer)):
                fields[1]["signature"]["fingerprint"] = fingerprint(_raw(signer))
                s, b = fields[1]["signature"], fields[1]
                summary = {k: b[k] for k in ("business_day", "till_id", "first_seq", "last_seq", "counts",
                                             "numbers")}
                summary.update(chain=b["chain"].hex(), excluded_kinds=sorted(b.get("excluded_kinds") or []),
                               key=s["fingerprint"], epoch=s["epoch"])
                s["ed25519"] = signer.sign(DAY_CONTEXT + canonical(summary))
        else:
            edit(fields[0], fields[1])
        payload = msgpack.packb(fields, use_bin_type=True)
        fixed = struct.pack(">IQqQQ", len(payload), seq, ts, bf, bl)
        chain = hashlib.sha256(chain + fixed + payload).digest()
        heads.append(chain)
        out.append(fixed + chain + struct.pack(">I", zlib.crc32(payload, zlib.crc32(fixed + chain))) + payload)
    data = b"".join(out)
    (folder / "journal.seg").write_bytes(data)
    m["files"]["journal.seg"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    m["chain_after"] = chain.hex()
    if signer is not None:
        _sign_manifest(m, signer)
    (folder / "manifest.json").write_text(json.dumps(m, indent=1))


def _raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _sign_manifest(m: dict, signer: Ed25519PrivateKey) -> None:
    m["key"] = {**m["key"], "public_key": "ed25519:" + _raw(signer).hex(), "fingerprint": fingerprint(_raw(signer))}
    m.pop("signature", None)
    m["signature"] = signer.sign(MANIFEST_CONTEXT + canonical(m)).hex()


def _alter_sale(kind, body):
    if kind == "sale" and body["i"] == 1:
        body["total"] = 1


DAY1 = Path("EDGED/till-7/20260302")


def test_genuine_export_verifies(genuine):
    stick, public, _key = genuine
    manifests = verify_stick(stick, {"till-7": [public]})
    assert [m["business_day"] for m in manifests] == list(DAYS)
    assert manifests[0]["excluded"]["counts"] == {"stock.move": 1}
    assert manifests[0]["counts"] == {"sale": 3, "Rückgabe": 1, "day.close": 1}  # non-ASCII kinds are signed too
    assert "💶 Kasse" in manifests[1]["counts"]


def test_altered_sale_rechained_is_refused(genuine, tmp_path):
    stick = _copy(genuine, tmp_path)
    _rechain(stick / DAY1, _alter_sale)  # every link, CRC and checksum right; the signatures cannot be
    with pytest.raises(Refused, match="manifest: signature"):
        verify_stick(stick, {"till-7": [genuine[1]]})


def test_altered_sale_in_an_export_signed_by_the_till_key_is_refused(genuine, tmp_path):
    """An export written by the genuine till from an altered, re-chained journal: the manifest
    checks out, the day.close signature (made when the day closed) does not."""
    stick = _copy(genuine, tmp_path)
    _rechain(stick / DAY1, _alter_sale, signer=genuine[2])
    with pytest.raises(Refused, match="day.close: signature"):
        verify_stick(stick, {"till-7": [genuine[1]]})


@pytest.mark.parametrize("field, value", [("till_id", "till-8"), ("business_day", "2026-03-01"),
                                          ("exported_at", 1), ("numbers", {}), ("edged_version", "9.9"),
                                          ("counts", {"sale": 3, "day.close": 1})])
def test_changed_manifest_field_is_refused(genuine, tmp_path, field, value):
    stick = _copy(genuine, tmp_path)
    m = json.loads((stick / DAY1 / "manifest.json").read_text())
    m[field] = value
    (stick / DAY1 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(Refused, match="manifest: signature|not enrolled for till-8"):
        verify_stick(stick, {"till-7": [genuine[1]], "till-8": [genuine[1]] if field != "till_id" else []})


def test_relabelled_to_another_till_is_refused_even_with_the_key_enrolled_there(genuine, tmp_path):
    stick = _copy(genuine, tmp_path)
    m = json.loads((stick / DAY1 / "manifest.json").read_text())
    m["till_id"] = "till-8"
    (stick / DAY1 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(Refused, match="manifest: signature"):
        verify_stick(stick, {"till-8": [genuine[1]]})


def test_another_key_is_refused(genuine, tmp_path):
    stick, public, _key = genuine
    other = Ed25519PrivateKey.generate()
    with pytest.raises(Refused, match="not enrolled for till-7"):  # a key head office did not enroll for till-7
        verify_stick(stick, {"till-7": ["ed25519:" + _raw(other).hex()]})
    forged = _copy(genuine, tmp_path)
    _rechain(forged / DAY1, _alter_sale, signer=other)  # everything re-signed by a forger's own key
    with pytest.raises(Refused, match="not enrolled for till-7"):
        verify_stick(forged, {"till-7": [public]})
    # enrolled by mistake for the till, the forger's key would still not be the one the day.close names
    # when only the manifest is re-signed
    again = tmp_path / "again"
    shutil.copytree(stick, again)
    m = json.loads((again / DAY1 / "manifest.json").read_text())
    _sign_manifest(m, other)
    (again / DAY1 / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(Refused, match="day.close signed by"):
        verify_stick(again, {"till-7": ["ed25519:" + _raw(other).hex()]})


def test_canonical_json_rules_on_hard_strings():
    """The rules as the section states them, on strings where JCS would differ (non-ASCII, DEL,
    a code point above U+FFFF) and the short escapes."""
    value = {"z": 1, "ä": [True, None, -5], "a\u007f": "x\"\\\b\t\n\f\r\u0001", "💶": "é"}
    assert canonical(value) == (b'{"a\\u007f":"x\\"\\\\\\b\\t\\n\\f\\r\\u0001","z":1,"\\u00e4":[true,null,-5],'
                                b'"\\ud83d\\udcb6":"\\u00e9"}')
