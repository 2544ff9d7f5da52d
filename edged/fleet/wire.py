"""What travels over the broker between a till's relay and head office's ingest (docs/FLEET.md):
topics, the batch a till publishes and the ack head office answers with, as msgpack maps.

Everything read here is hostile until checked (a broker message may be forged or damaged): each
decoder checks every field's type and bound and raises WireError naming what is wrong.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import msgpack

VERSION = 1
PREFIX = "edged/v1/till"
TILL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")  # config.py's till_id rule
MAX_FRAMES = 5000  # records in one batch (PROTOCOL.md `frames` events: at most 5000)
MAX_BATCH_BYTES = 32 << 20  # one batch; a single journal record may be up to 16 MiB
MAX_SEQ = 1 << 63  # seqs are stored as SQLite (and PostgreSQL) signed 64-bit integers


class WireError(ValueError):
    """A message that is not what the other side sends; str() names what is wrong."""


def up_topic(till: str) -> str:
    return f"{PREFIX}/{till}/up"


def ack_topic(till: str) -> str:
    return f"{PREFIX}/{till}/ack"


def status_topic(till: str) -> str:
    return f"{PREFIX}/{till}/status"


def hello_topic(till: str) -> str:
    return f"{PREFIX}/{till}/hello"


def down_topic(till: str) -> str:
    return f"{PREFIX}/{till}/down"


def down_ack_topic(till: str) -> str:
    return f"{PREFIX}/{till}/down-ack"


BROADCAST_DOWN = "edged/v1/broadcast/down"  # one message the broker copies to every till online
CHANNELS = ("till", "broadcast")  # a till's own records, and those for every till
MAX_DOWN_BYTES = 256 << 10  # one downstream record's body, msgpack-encoded: well inside edged's 1 MiB
# requests and brokers' packet limits (EMQX's default 1 MB)
MAX_DOWN_VALUES = 20_000  # msgpack values in one body: edged takes at most 100,000 in one request
MAX_DEPTH = 64  # containers nested in one body
MAX_POS = 1 << 62  # downstream positions: far from where a counter + 1 would overflow a signed 64-bit column


def till_of(topic: str, leaf: str) -> str:
    """The till id in `edged/v1/till/<till>/<leaf>`; WireError for any other topic."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX or parts[4] != leaf or not TILL_ID.match(parts[3]):
        raise WireError(f"topic {topic[:200]!r} is not {PREFIX}/<till>/{leaf}")
    return parts[3]


@dataclass
class Batch:
    till: str
    first_seq: int
    last_seq: int
    chain_before: bytes
    frames: list[bytes]
    since: int = 1  # where the relay's session began (its cursor + 1): every seq below it head office has
    # acknowledged, or the till no longer holds. Head office starts a till's watermark there, never at
    # whatever batch happens to commit first.
    journal_last: int | None = None  # the till's last journaled seq when it was sent: its lag (optional)


@dataclass
class Ack:
    till: str
    archived_through: int  # every seq of the till up to this one is in head office's archive
    chain: bytes  # the chain link after it (32 zero bytes when nothing is archived)
    conflict: str | None = None  # why the last batch was refused, if it was
    down: dict[str, int] | None = None  # in the answer to a hello: per channel, what this till acknowledged


def encode_batch(b: Batch) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "till": b.till, "first_seq": b.first_seq, "last_seq": b.last_seq,
                            "chain_before": b.chain_before, "since": b.since, "frames": b.frames}
    if b.journal_last is not None:
        body["journal_last"] = b.journal_last
    return msgpack.packb(body, use_bin_type=True)


def encode_ack(a: Ack) -> bytes:
    body: dict[str, Any] = {"v": VERSION, "till": a.till, "archived_through": a.archived_through, "chain": a.chain}
    if a.conflict is not None:
        body["conflict"] = a.conflict
    if a.down is not None:
        body["down"] = a.down
    return msgpack.packb(body, use_bin_type=True)


def _map(payload: bytes, what: str, max_len: int, maps: int = 1, max_bin: int = MAX_BATCH_BYTES) -> dict[str, Any]:
    if len(payload) > max_len:
        raise WireError(f"{what} of {len(payload)} bytes: more than {max_len}")
    made = [0, 0]  # lists, maps decoded so far

    def one_list(items: list) -> list:
        made[0] += 1
        if made[0] > 1:  # a batch holds one list (its frames): anything nested is refused as it is met
            raise ValueError("nested arrays")
        return items

    def one_map(pairs: list) -> dict:
        made[1] += 1
        if made[1] > maps:  # a hello holds one map in its map (positions per channel)
            raise ValueError("nested maps")
        return dict(pairs)

    try:
        # Bounded decoding: 1 MiB of empty arrays would be ~70 MiB of lists; here the second is refused.
        data = msgpack.unpackb(payload, raw=False, strict_map_key=True, max_array_len=MAX_FRAMES,
                               max_map_len=16, max_str_len=4096, max_bin_len=max_bin,
                               list_hook=one_list, object_pairs_hook=one_map)
    except Exception as e:
        raise WireError(f"{what} is not msgpack of the expected shape ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise WireError(f"{what} is not a map")
    if data.get("v") != VERSION:
        raise WireError(f"{what} of version {data.get('v')!r}; this head office speaks {VERSION}")
    return data


def _field(data: dict[str, Any], name: str, tp: type, what: str) -> Any:
    value = data.get(name)
    if type(value) is not tp:
        raise WireError(f"{what}: {name!r} must be {tp.__name__}, not {type(value).__name__}")
    return value


def decode_batch(payload: bytes) -> Batch:
    data = _map(payload, "batch", MAX_BATCH_BYTES + (1 << 20))
    till = _field(data, "till", str, "batch")
    if not TILL_ID.match(till):
        raise WireError(f"batch: till {till[:80]!r} is not a till id")
    first, last = _field(data, "first_seq", int, "batch"), _field(data, "last_seq", int, "batch")
    chain = _field(data, "chain_before", bytes, "batch")
    frames = _field(data, "frames", list, "batch")
    if len(chain) != 32:
        raise WireError("batch: chain_before must be 32 bytes")
    if not 1 <= first <= last < MAX_SEQ or last - first + 1 != len(frames):
        raise WireError(f"batch: seqs {first}..{last} do not match its {len(frames)} frames")
    if not all(type(f) is bytes for f in frames):
        raise WireError("batch: every frame must be bytes")
    since = _field(data, "since", int, "batch")
    if not 1 <= since <= first:
        raise WireError(f"batch: since {since} is not between 1 and its first seq {first}")
    journal_last = data.get("journal_last")  # optional: relays before it did not send it
    if journal_last is not None and (type(journal_last) is not int or not last <= journal_last < MAX_SEQ):
        raise WireError(f"batch: journal_last {journal_last!r} is not a seq from its last seq {last} on")
    return Batch(till, first, last, chain, frames, since, journal_last)


def decode_ack(payload: bytes) -> Ack:
    data = _map(payload, "ack", 64 << 10, maps=2)
    till = _field(data, "till", str, "ack")
    through = _field(data, "archived_through", int, "ack")
    chain = _field(data, "chain", bytes, "ack")
    conflict = data.get("conflict")
    if through < 0 or len(chain) != 32 or not (conflict is None or isinstance(conflict, str)):
        raise WireError("ack: archived_through, chain or conflict out of shape")
    down = data.get("down")
    if down is not None:
        down = _positions(down, "ack")
    return Ack(till, through, chain, conflict, down)


@dataclass
class Hello:
    """A relay's first word in each session: how far it applied each downstream channel."""

    till: str
    down: dict[str, int]  # channel -> the last position appended to the till's journal


@dataclass
class Down:
    """One record from head office's outbox. The till applies it when `prev` <= what it applied
    < `pos` (positions between were skipped on purpose: expired or superseded); `prev` above what
    it applied means something in between was lost on the way, and it asks again (a hello)."""

    channel: str
    pos: int
    prev: int
    kind: str
    body: bytes  # the record's body, msgpack-encoded (decoded by the till, bounded)


@dataclass
class DownAck:
    till: str
    channel: str
    pos: int  # every position of the channel up to it is in the till's journal (or refused by it)
    refused: str | None = None  # the till could not append record `pos` and skipped it: why


def _pack(body: dict[str, Any]) -> bytes:
    return msgpack.packb({"v": VERSION, **body}, use_bin_type=True)


def encode_hello(h: Hello) -> bytes:
    return _pack({"till": h.till, "down": h.down})


def encode_down(d: Down) -> bytes:
    return _pack({"channel": d.channel, "pos": d.pos, "prev": d.prev, "kind": d.kind, "body": d.body})


def encode_down_ack(a: DownAck) -> bytes:
    body: dict[str, Any] = {"till": a.till, "channel": a.channel, "pos": a.pos}
    if a.refused is not None:
        body["refused"] = a.refused
    return _pack(body)


def _position(data: dict[str, Any], name: str, what: str) -> int:
    value = _field(data, name, int, what)
    if not 0 <= value < MAX_POS:
        raise WireError(f"{what}: {name} {value} is not a position")
    return value


def _channel(value: Any, what: str) -> str:
    if value not in CHANNELS:
        raise WireError(f"{what}: channel {str(value)[:40]!r} is not one of {', '.join(CHANNELS)}")
    return value


def _till(data: dict[str, Any], what: str) -> str:
    till = _field(data, "till", str, what)
    if not TILL_ID.match(till):
        raise WireError(f"{what}: till {till[:80]!r} is not a till id")
    return till


def decode_hello(payload: bytes) -> Hello:
    data = _map(payload, "hello", 4096, maps=2)
    return Hello(_till(data, "hello"), _positions(data.get("down"), "hello"))


def _positions(down: Any, what: str) -> dict[str, int]:
    if not isinstance(down, dict):
        raise WireError(f"{what}: down must be a map of channel -> position")
    positions = {}
    for channel, pos in down.items():
        _channel(channel, what)
        if type(pos) is not int or not 0 <= pos < MAX_POS:
            raise WireError(f"{what}: position {pos!r} of channel {channel} is not a position")
        positions[channel] = pos
    return positions


def decode_down(payload: bytes) -> Down:
    data = _map(payload, "down", MAX_DOWN_BYTES + 4096, max_bin=MAX_DOWN_BYTES)
    pos, prev = _position(data, "pos", "down"), _position(data, "prev", "down")
    if not prev < pos:
        raise WireError(f"down: prev {prev} is not below pos {pos}")
    kind = _field(data, "kind", str, "down")
    if not 1 <= len(kind) <= 128 or "\0" in kind:
        raise WireError(f"down: kind {kind[:40]!r} is not a record kind")
    return Down(_channel(data.get("channel"), "down"), pos, prev, kind, _field(data, "body", bytes, "down"))


def body(packed: bytes) -> tuple[Any, int]:
    """A downstream record's body as the till appends it, and how many msgpack values it holds
    (about); WireError when edged could not take it (not msgpack, a map key that is not a string,
    too many values, nested too deep)."""
    count = [1]

    def counted(value: Any) -> Any:
        count[0] += 1 + (2 * len(value) if isinstance(value, dict) else len(value))  # as edged counts: key and value
        if count[0] > MAX_DOWN_VALUES:
            raise ValueError(f"more than {MAX_DOWN_VALUES} values")
        return value

    try:
        value = msgpack.unpackb(packed, raw=False, strict_map_key=True, list_hook=counted,
                                object_hook=counted, max_bin_len=MAX_DOWN_BYTES, max_str_len=MAX_DOWN_BYTES,
                                max_array_len=MAX_DOWN_VALUES, max_map_len=MAX_DOWN_VALUES, max_ext_len=0)
        _shallow(value)
        return value, count[0]
    except Exception as e:
        raise WireError(f"not a body edged can append ({type(e).__name__}: {str(e)[:200]})") from None


def _shallow(value: Any) -> None:
    """ValueError for a body nested deeper than MAX_DEPTH (edged's encoder and decoder stop near 1,000)."""
    todo = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"nested deeper than {MAX_DEPTH}")
        if isinstance(item, dict):
            todo.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            todo.extend((v, depth + 1) for v in item)


def body_problem(packed: bytes) -> str | None:
    try:
        body(packed)
    except WireError as e:
        return str(e)
    return None


def decode_down_ack(payload: bytes) -> DownAck:
    data = _map(payload, "down-ack", 8192)
    refused = data.get("refused")
    if refused is not None and not isinstance(refused, str):
        raise WireError("down-ack: refused must be a string")
    return DownAck(_till(data, "down-ack"), _channel(data.get("channel"), "down-ack"),
                   _position(data, "pos", "down-ack"), refused)
