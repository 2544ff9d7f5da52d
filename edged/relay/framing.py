"""Wire framing (PROTOCOL.md): a 4-byte big-endian length N, then N bytes
holding exactly one msgpack map with string keys. Pure codec plus one reader."""
from __future__ import annotations

import asyncio
import struct
from typing import Any

import msgpack

HEADER = struct.Struct(">I")
DEFAULT_MAX_FRAME = 1 << 20
# msgpack values one frame may decode to (every key, element and scalar counts). Decoding is
# what costs memory, not the frame: a 1 MiB body of a million empty arrays decodes to ~70 MiB.
# At this limit a frame decodes to at most ~8 MiB (docs/PROTOCOL.md, "Limits").
MAX_VALUES = 100_000
_ARRAYS = frozenset(range(0x90, 0xA0)) | {0xDC, 0xDD}
_MAPS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


class FrameError(Exception):
    """A frame that breaks the framing rules; the connection is closed after answering."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _no_ext(code: int, data: bytes) -> Any:
    raise FrameError("bad_frame", f"msgpack extension type {code} is not used by this protocol")


def encode(message: dict[str, Any]) -> bytes:
    body = msgpack.packb(message, use_bin_type=True)
    return HEADER.pack(len(body)) + body


def _check_values(body: bytes) -> None:
    """Refuse a body holding more than MAX_VALUES values, walking its headers without building
    anything. A body of at most MAX_VALUES bytes cannot hold more: the common case costs nothing."""
    if len(body) <= MAX_VALUES:
        return
    walker = msgpack.Unpacker(raw=False, max_buffer_size=len(body))
    walker.feed(body)
    todo, seen = 1, 0
    try:
        while todo:
            todo -= 1
            seen += 1
            if seen > MAX_VALUES:
                raise FrameError("frame_too_large", f"frame holds more than {MAX_VALUES} msgpack values")
            head = body[walker.tell()]
            if head in _ARRAYS:
                todo += walker.read_array_header()
            elif head in _MAPS:
                todo += 2 * walker.read_map_header()
            else:
                walker.skip()
    except FrameError:
        raise
    except Exception:
        return  # not valid msgpack: unpackb says how


def decode_body(body: bytes) -> dict[str, Any]:
    _check_values(body)
    try:
        value = msgpack.unpackb(body, raw=False, strict_map_key=True, ext_hook=_no_ext, timestamp=0)
    except FrameError:
        raise
    except msgpack.ExtraData:
        raise FrameError("bad_frame", "frame holds more than one msgpack value") from None
    except msgpack.StackError:
        raise FrameError("bad_frame", "msgpack value nested too deeply") from None
    except UnicodeDecodeError:
        raise FrameError("bad_frame", "msgpack str is not valid UTF-8") from None
    except (ValueError, msgpack.FormatError, msgpack.UnpackException) as e:
        raise FrameError("bad_frame", f"not valid msgpack: {e or type(e).__name__}") from None
    if isinstance(value, msgpack.Timestamp):
        raise FrameError("bad_frame", "msgpack timestamps are not used by this protocol")
    if not isinstance(value, dict):
        raise FrameError("bad_frame", f"frame must hold a msgpack map, not {type(value).__name__}")
    if not all(isinstance(k, str) for k in value):
        raise FrameError("bad_frame", "map keys must be msgpack str")
    return value


async def read_frame(reader: asyncio.StreamReader, max_frame: int, idle_timeout: float | None = None,
                     frame_timeout: float | None = None) -> dict[str, Any] | None:
    """The next message, or None on a clean end of stream between frames.

    idle_timeout bounds the wait for a frame to start, frame_timeout the wait
    for the rest of a started one (a client stalled mid-frame is cut off)."""
    try:
        async with asyncio.timeout(idle_timeout):
            first = await reader.readexactly(1)
    except asyncio.IncompleteReadError:
        return None
    except TimeoutError:
        raise FrameError("bad_frame", f"nothing received for {idle_timeout:g} s; say hello first") from None
    # asyncio.timeout, not wait_for: no extra task per frame
    try:
        async with asyncio.timeout(frame_timeout):
            header = first + await reader.readexactly(HEADER.size - 1)
            (length,) = HEADER.unpack(header)
            if length == 0:
                raise FrameError("bad_frame", "frame length is 0")
            if length > max_frame:
                raise FrameError("frame_too_large", f"frame of {length} bytes exceeds max_frame {max_frame}")
            body = await reader.readexactly(length)
    except asyncio.IncompleteReadError:
        raise FrameError("bad_frame", "stream ended inside a frame") from None
    except TimeoutError:
        raise FrameError("bad_frame", f"frame incomplete after {frame_timeout:g} s") from None
    return decode_body(body)
