"""The socket's ops: each declared once, beside its handler, with its parameters and who may call it.

    @op("ack", Level.ANY, consumer=needs(str), seq=needs(int))
    async def op_ack(self, session, params): ...

The server gathers the decorated methods of the parts it serves into one
Registry (a name registered twice stops the daemon at startup), checks the
caller's access level, then the parameters, before the handler runs. The
same declarations drive the fuzzer and the test that holds PROTOCOL.md's op
table to them, so the wire contract, the checks and the docs cannot drift
apart.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import protocol as p
from .protocol import Level  # imported from here with op and needs by every part that declares ops

if TYPE_CHECKING:
    from .session import Session

Handler = Callable[["Session", dict[str, Any]], Awaitable[dict[str, Any]]]
_MARK = "_edged_op"


@dataclass(frozen=True)
class Param:
    kinds: tuple[type, ...]
    required: bool = False


def needs(*kinds: type) -> Param:
    return Param(kinds, True)


def may(*kinds: type) -> Param:
    return Param(kinds, False)


@dataclass(frozen=True)
class Spec:
    name: str
    level: Level
    params: dict[str, Param] = field(default_factory=dict)
    # The name of an attribute of the part that must be true for the op to be served (`simulated`).
    when: str | None = None

    def check(self, params: dict[str, Any]) -> None:
        """bad_request naming the first parameter missing or of the wrong type (p.param's words)."""
        for name, param in self.params.items():
            p.param(params, name, param.kinds if len(param.kinds) > 1 else param.kinds[0], required=param.required)


def op(name: str, level: Level = Level.ANY, *, when: str | None = None,
       **params: Param) -> Callable[[Callable], Callable]:
    """Declare the method below as the handler of op `name`. A parameter whose name is a Python
    keyword is given with a trailing underscore (`from_=needs(int, str)` declares `from`)."""
    spec = Spec(name, level, {k.removesuffix("_"): v for k, v in params.items()}, when)

    def mark(fn: Callable) -> Callable:
        setattr(fn, _MARK, spec)
        return fn
    return mark


@dataclass(frozen=True)
class Entry:
    spec: Spec
    handler: Handler
    owner: str  # the class that declared it, for the duplicate message


class DuplicateOp(Exception):
    """Two parts declare the same op name: a bug, found as the daemon starts."""


class Registry:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    @classmethod
    def of(cls, *parts: Any) -> Registry:
        return cls().include(*parts)

    def include(self, *parts: Any) -> Registry:
        """Add the ops every part declares (and serves: see `when`); a name taken twice raises."""
        for part in parts:
            for spec, handler in _declared(part):
                self._add(Entry(spec, handler, type(part).__qualname__))
        return self

    def merge(self, other: Registry) -> Registry:
        for entry in other.entries.values():
            self._add(entry)
        return self

    def _add(self, entry: Entry) -> None:
        known = self.entries.get(entry.spec.name)
        if known is not None:
            raise DuplicateOp(f"op {entry.spec.name!r} is declared twice: by {known.owner} and by {entry.owner}")
        self.entries[entry.spec.name] = entry

    def get(self, name: str) -> Entry | None:
        return self.entries.get(name)

    def levels(self) -> dict[str, Level]:
        return {name: e.spec.level for name, e in self.entries.items()}

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)


def _declared(part: Any) -> Iterator[tuple[Spec, Handler]]:
    for attr in dir(type(part)):
        spec = getattr(getattr(type(part), attr, None), _MARK, None)
        if spec is None:
            continue
        if spec.when is not None and not getattr(part, spec.when):
            continue
        yield spec, getattr(part, attr)
