"""Shapes of decoded msgpack values: what edged's own records and state files must look like.

Everything edged reads back was written by edged, but a disk, a bug or an older
edged (one that let clients write these kinds) may have left anything there.
A shape says what a value must be; `problem` names the first place where it is
not, or None. Pure, so every reader and the tests share one description.
"""
from __future__ import annotations

import datetime
from collections.abc import Sized
from dataclasses import dataclass, field
from typing import Any, cast


class Shape:
    def problem(self, value: Any, where: str) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError


def _type_name(value: Any) -> str:
    return "nil" if value is None else type(value).__name__


@dataclass(frozen=True)
class Int(Shape):
    low: int | None = None

    def problem(self, value: Any, where: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{where} is {_type_name(value)}, not an integer"
        if self.low is not None and value < self.low:
            return f"{where} is {value}, below {self.low}"
        return None


@dataclass(frozen=True)
class Num(Shape):
    def problem(self, value: Any, where: str) -> str | None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{where} is {_type_name(value)}, not a number"
        return None


@dataclass(frozen=True)
class Of(Shape):
    """A value of one of these Python types (str, bytes, bool, ...), optionally of a fixed length."""
    types: tuple[type, ...]
    size: int | None = None

    def problem(self, value: Any, where: str) -> str | None:
        if isinstance(value, bool) and bool not in self.types or not isinstance(value, self.types):
            return f"{where} is {_type_name(value)}, not {' or '.join(t.__name__ for t in self.types)}"
        if self.size is not None and len(cast(Sized, value)) != self.size:  # self.types are sized then
            return f"{where} has length {len(cast(Sized, value))}, not {self.size}"
        return None


@dataclass(frozen=True)
class Date(Shape):
    """A business day: "YYYY-MM-DD", a real date."""

    def problem(self, value: Any, where: str) -> str | None:
        try:
            if isinstance(value, str) and len(value) == 10 and datetime.date.fromisoformat(value):
                return None
        except ValueError:
            pass
        return f"{where} is {_shown(value)}, not a date as YYYY-MM-DD"


@dataclass(frozen=True)
class Choice(Shape):
    values: tuple[Any, ...]

    def problem(self, value: Any, where: str) -> str | None:
        if isinstance(value, (str, int)) and not isinstance(value, bool) and value in self.values:
            return None
        return f"{where} is {_shown(value)}, not one of {', '.join(map(str, self.values))}"


@dataclass(frozen=True)
class Maybe(Shape):
    """nil, or the shape."""
    inner: Shape

    def problem(self, value: Any, where: str) -> str | None:
        return None if value is None else self.inner.problem(value, where)


@dataclass(frozen=True)
class Map(Shape):
    """A map with these str keys (and maybe others: later versions add fields)."""
    required: dict[str, Shape]
    optional: dict[str, Shape] = field(default_factory=dict)

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, dict):
            return f"{where} is {_type_name(value)}, not a map"
        for key, shape in self.required.items():
            if key not in value:
                return f"{where}.{key} is missing"
            if (why := shape.problem(value[key], f"{where}.{key}")) is not None:
                return why
        for key, shape in self.optional.items():
            if key in value and (why := shape.problem(value[key], f"{where}.{key}")) is not None:
                return why
        return None


@dataclass(frozen=True)
class MapOf(Shape):
    """A map whose every key and value have these shapes."""
    key: Shape
    value: Shape

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, dict):
            return f"{where} is {_type_name(value)}, not a map"
        for k, v in value.items():
            if (why := self.key.problem(k, f"{where} key {_shown(k)}")) is not None:
                return why
            if (why := self.value.problem(v, f"{where}[{_shown(k)}]")) is not None:
                return why
        return None


@dataclass(frozen=True)
class ListOf(Shape):
    item: Shape
    size: int | None = None

    def problem(self, value: Any, where: str) -> str | None:
        if not isinstance(value, (list, tuple)):
            return f"{where} is {_type_name(value)}, not a list"
        if self.size is not None and len(value) != self.size:
            return f"{where} has {len(value)} items, not {self.size}"
        for i, item in enumerate(value):
            if (why := self.item.problem(item, f"{where}[{i}]")) is not None:
                return why
        return None


def _shown(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


STR, BYTES, BOOL, NUM, DATE = Of((str,)), Of((bytes,)), Of((bool,)), Num(), Date()
SEQ = Int(0)  # 0: "nothing yet" where a seq is a cursor
CHAIN = Of((bytes,), 32)
