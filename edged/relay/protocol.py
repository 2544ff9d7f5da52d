"""Protocol vocabulary shared by server and client: version, error codes, access levels, message shapes."""
from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

PROTOCOL_VERSION = 1

# How a part announces an event: the daemon's publish hands it to the watchers of its topic and
# returns how many it reached (most callers ignore that).
Publish = Callable[[dict[str, Any]], int]

# Error codes of PROTOCOL.md (a client may see any of these).
BAD_FRAME = "bad_frame"
FRAME_TOO_LARGE = "frame_too_large"
HELLO_REQUIRED = "hello_required"
UNSUPPORTED_PROTOCOL = "unsupported_protocol"
UNKNOWN_OP = "unknown_op"
BAD_REQUEST = "bad_request"
NOT_PERMITTED = "not_permitted"
NOT_FOUND = "not_found"
DEVICE_UNAVAILABLE = "device_unavailable"
BUSY = "busy"
INTERNAL = "internal"


class Level(enum.StrEnum):
    """Who may call an op (PROTOCOL.md, "Who may do what")."""
    ANY = "any"                # anyone who can open the socket
    PRIVILEGED = "privileged"  # root, edged's own user, daemon.privileged_users / privileged_groups
    DAEMON = "daemon"          # root and edged's own user only


class RequestError(Exception):
    """Raised by an op handler: answered as {"ok": false, "error": {code, message}}."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def shown(value: Any, limit: int = 64) -> str:
    """repr() of a client-supplied value for an error message, cut short if long."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def ok(req_id: int | None, result: dict[str, Any]) -> dict[str, Any]:
    return {"id": req_id, "ok": True, "result": result}


def error(req_id: int | None, code: str, message: str) -> dict[str, Any]:
    return {"id": req_id, "ok": False, "error": {"code": code, "message": message}}


def param(params: dict[str, Any], name: str, kind: type | tuple[type, ...], *,
          required: bool = True, default: Any = None) -> Any:
    """One request parameter, type-checked; a wrong one is a bad_request naming it."""
    if name not in params:
        if required:
            raise RequestError(BAD_REQUEST, f"missing parameter {name!r}")
        return default
    value = params[name]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise RequestError(BAD_REQUEST, f"parameter {name!r} must be {names}, got {type(value).__name__}")
    return value


def named(params: dict[str, Any], key: str, known: dict[str, Any], what: str) -> str:
    """The configured device a request names by `key`; may be left out when there is just one."""
    name = param(params, key, str, required=False)
    if name is None:
        if len(known) != 1:
            raise RequestError(BAD_REQUEST, f"name the {what} with {key!r} "
                                                f"({', '.join(known) or f'no {what}s configured'})")
        return next(iter(known))
    if name not in known:
        raise RequestError(NOT_FOUND, f"no {what} {name!r} (configured: {', '.join(known) or 'none'})")
    return name
