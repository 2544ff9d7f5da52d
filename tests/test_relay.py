"""The socket: framing byte-exact, bad frames closing only their own connection, op errors."""
from __future__ import annotations

import asyncio
import os
import socket
import stat
import struct

import msgpack
import pytest

from edged import config
from edged.client import Client, ClientError
from edged.relay import framing
from edged.relay.registry import Registry
from edged.relay.server import Server, SocketBusy
from edged.till import Till

# {"op": "hello", "id": 1, "protocol": 1, "client": "t"}, written out by hand from the msgpack spec
HELLO_FRAME = bytes.fromhex(
    "00000021"                      # length 33
    "84"                            # map of 4
    "a26f70" "a568656c6c6f"         # "op": "hello"
    "a26964" "01"                   # "id": 1
    "a870726f746f636f6c" "01"       # "protocol": 1
    "a6636c69656e74" "a174"         # "client": "t"
)


def test_hello_frame_encodes_byte_exact():
    assert framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "t"}) == HELLO_FRAME
    assert framing.decode_body(HELLO_FRAME[4:]) == {"op": "hello", "id": 1, "protocol": 1, "client": "t"}


@pytest.mark.parametrize("body,fragment", [
    (msgpack.packb([1, 2, 3]), "must hold a msgpack map"),
    (msgpack.packb({1: 2}), "map key"),
    (msgpack.packb({"a": 1}) + b"\x01", "more than one msgpack value"),
    (b"\xc1", "not valid msgpack"),
    (b"\x81\xa1a\xa2\xff\xfe", "UTF-8"),
    (b"\x91" * 5000 + b"\x00", "nested too deeply"),
    (b"\xd6\xff\x00\x00\x00\x01", "timestamps"),
    (b"\xc7\x01\x05\x00", "extension type 5"),
])
def test_decode_rejects_bad_bodies(body, fragment):
    with pytest.raises(framing.FrameError) as err:
        framing.decode_body(body)
    assert err.value.code == "bad_frame"
    assert fragment in err.value.message


class Harness:
    """A real Server on a real unix socket, in this test's event loop."""

    def __init__(self, path: str, max_frame: int = 4096) -> None:
        cfg = config.from_dict({"till_id": "till-test"})
        self.till = Till(cfg, {}, simulated=False)
        self.server = Server(path, Registry.of(self.till), self.till.hello_info, max_frame=max_frame)
        self.till.server = self.server
        self.path = path

    async def raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_unix_connection(self.path)


async def _read_answer(reader: asyncio.StreamReader) -> dict | None:
    return await asyncio.wait_for(framing.read_frame(reader, 1 << 20), 5)


def _run(short_dir, scenario, **kw):
    async def main():
        h = Harness(str(short_dir / "s.sock"), **kw)
        await h.server.start()
        try:
            await scenario(h)
        finally:
            await h.server.stop()
    asyncio.run(main())


def test_hello_round_trip_on_the_wire(short_dir):
    async def scenario(h: Harness):
        reader, writer = await h.raw()
        writer.write(HELLO_FRAME)
        header = await reader.readexactly(4)
        (length,) = struct.unpack(">I", header)
        body = await reader.readexactly(length)
        assert body[0] == 0x83  # map of 3: id, ok, result
        answer = msgpack.unpackb(body)
        assert answer["id"] == 1 and answer["ok"] is True
        result = answer["result"]
        assert result["protocol"] == 1 and result["till_id"] == "till-test"
        assert result["max_frame"] == 4096
        assert result["journal"] == {"first_seq": 0, "last_seq": 0}
        assert result["server"].startswith("edged ")
        writer.close()
    _run(short_dir, scenario)


@pytest.mark.parametrize("bad_bytes,code", [
    (struct.pack(">I", 4097) + b"\x80" * 10, "frame_too_large"),
    (struct.pack(">I", 0xFFFFFFFF), "frame_too_large"),
    (framing.HEADER.pack(4) + msgpack.packb([1, 2, 3]), "bad_frame"),
    (framing.HEADER.pack(0), "bad_frame"),
    (framing.HEADER.pack(3) + b"\xa5ab", "bad_frame"),
])
def test_bad_frame_closes_only_its_connection(short_dir, bad_bytes, code):
    async def scenario(h: Harness):
        good = await Client.connect(h.path, client="bystander")
        reader, writer = await h.raw()
        writer.write(HELLO_FRAME)
        assert (await _read_answer(reader))["ok"] is True
        writer.write(bad_bytes)
        answer = await _read_answer(reader)
        assert answer["ok"] is False and answer["id"] is None
        assert answer["error"]["code"] == code
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by the server
        status = await good.request("status")  # the other connection carries on
        assert [c["client"] for c in status["connections"]] == ["bystander"]
        await good.close()
    _run(short_dir, scenario)


def test_request_errors_keep_the_connection(short_dir):
    async def scenario(h: Harness):
        reader, writer = await h.raw()

        async def ask(msg: dict) -> dict:
            writer.write(framing.encode(msg))
            return await _read_answer(reader)

        assert (await ask({"op": "status", "id": 1}))["error"]["code"] == "hello_required"
        assert (await ask({"op": "hello", "id": 2, "protocol": 2, "client": "x"}))["error"]["code"] \
            == "unsupported_protocol"
        bad = await ask({"op": "hello", "id": 3, "protocol": "1", "client": "x"})
        assert bad["error"]["code"] == "bad_request" and "'protocol'" in bad["error"]["message"]
        assert (await ask({"op": "hello", "id": 4, "protocol": 1, "client": "x"}))["ok"]
        assert (await ask({"op": "append", "id": 5, "records": []}))["error"]["code"] == "unknown_op"
        no_id = await ask({"op": "status"})
        assert no_id["id"] is None and no_id["error"]["code"] == "bad_request"
        assert (await ask({"id": 6}))["error"]["code"] == "bad_request"
        assert (await ask({"op": "status", "id": 7}))["ok"]  # still open and answering
        writer.close()
    _run(short_dir, scenario)


def test_responses_come_in_request_order(short_dir):
    async def scenario(h: Harness):
        reader, writer = await h.raw()
        writer.write(HELLO_FRAME + b"".join(framing.encode({"op": "status", "id": i}) for i in range(10, 60)))
        ids = [(await _read_answer(reader))["id"] for _ in range(51)]
        assert ids == [1] + list(range(10, 60))
        writer.close()
    _run(short_dir, scenario)


def test_socket_mode_and_stale_socket(short_dir):
    path = short_dir / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # bound, never listening: what a crashed daemon leaves
    stale.close()

    async def scenario(h: Harness):
        assert stat.S_IMODE(os.stat(h.path).st_mode) == 0o660
        second = Harness(h.path)
        with pytest.raises(SocketBusy, match="already listening"):
            await second.server.start()
        client = await Client.connect(h.path)
        with pytest.raises(ClientError) as err:
            await client.request("drawer_open", reason="x")
        assert err.value.code == "unknown_op"
        await client.close()
    _run(short_dir, scenario)
    assert not path.exists()  # removed on stop


def test_the_hello_example_in_the_protocol_doc_is_exact():
    import re
    from pathlib import Path

    from edged.relay import framing

    doc = (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text()
    example = doc[doc.index("### Worked example: hello"):doc.index("## Requests, responses, events")]
    blocks = re.findall(r"```\n(.*?)```", example, re.S)
    # each line: hex bytes, then 3+ spaces and a comment
    request = bytes.fromhex(" ".join(re.split(r"\s{3,}", line)[0] for line in blocks[0].splitlines()
                                     if not line.startswith("00 00 00 21")))
    assert framing.encode({"op": "hello", "id": 1, "protocol": 1, "client": "t"}) == \
        bytes.fromhex("00000021") + request
    answer = bytes.fromhex(blocks[1].replace("\n", " "))
    assert framing.HEADER.unpack(answer[:4])[0] == len(answer) - 4
    assert framing.decode_body(answer[4:]) == {"id": 1, "ok": True, "result": {
        "protocol": 1, "max_frame": 1048576, "server": "edged 0.1.0", "till_id": "till-1",
        "journal": {"first_seq": 0, "last_seq": 0}}}
