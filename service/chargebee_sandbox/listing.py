"""Chargebee list operations (pure): `limit`/`offset` paging, `sort_by[...]`, `field[operator]` filters.

A `ListSpec` says what one list endpoint accepts; `parse_query` turns its query string into a
`Query` or raises `ParamError` for the first parameter it cannot honour, and `run` answers one page.
Anything the spec does not name is refused rather than ignored, so a client's typo never passes.

Operators (REF list operations and each list's "Filter Params"): strings and enums `is`, `in`
(`["a","b"]`); numbers `is`, `is_not`, `lt`, `lte`, `gt`, `gte`, `between`; timestamps (unix
seconds) `after`, `before`, `between`. `between` takes `[low,high]` and includes both ends, `after`
and `before` exclude the instant itself ([?] REF names the operators, not their bounds). Documented
operators the sandbox lacks (string `is_not`, `starts_with`, `not_in`, `is_present`, timestamp `on`,
whose day and time zone REF does not define) are refused, saying so.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Generic, Literal, TypeVar

import orjson

from service.chargebee_sandbox.payments import parse_integer
from service.chargebee_sandbox.replies import ParamError

T = TypeVar("T")
Value = str | int | None
Kind = Literal["string", "enum", "number", "timestamp"]

DEFAULT_LIMIT: Final = 10
MAX_LIMIT: Final = 100
_MAX_OFFSET = 1000  # characters, as documented for `offset`
_FILTER = re.compile(r"(?P<name>[a-z_]+)\[(?P<operator>[a-z_]+)\]")
# Of the operators Chargebee documents for each kind of field, the ones the sandbox answers.
_IMPLEMENTED: Final[Mapping[Kind, frozenset[str]]] = {
    "string": frozenset({"is", "in"}),
    "enum": frozenset({"is", "in"}),
    "number": frozenset({"is", "is_not", "lt", "lte", "gt", "gte", "between"}),
    "timestamp": frozenset({"after", "before", "between"}),
}
_MATCHES: Final = frozenset({"is", "in"})  # the operators that compare with a set of values
_COMPARE: Final[Mapping[str, Callable[[int, tuple[int, ...]], bool]]] = {
    "is_not": lambda value, bounds: value != bounds[0],
    "lt": lambda value, bounds: value < bounds[0],
    "lte": lambda value, bounds: value <= bounds[0],
    "gt": lambda value, bounds: value > bounds[0],
    "gte": lambda value, bounds: value >= bounds[0],
    "before": lambda value, bounds: value < bounds[0],
    "after": lambda value, bounds: value > bounds[0],
    "between": lambda value, bounds: bounds[0] <= value <= bounds[1],
}


@dataclass(frozen=True)
class Field(Generic[T]):
    """One filterable attribute: how to read it and which operators Chargebee documents for it."""

    get: Callable[[T], Value]
    operators: frozenset[str]
    kind: Kind = "string"
    values: frozenset[str] = frozenset()  # the enum, for kind "enum"


@dataclass(frozen=True)
class ListSpec(Generic[T]):
    fields: Mapping[str, Field[T]] = field(default_factory=dict)
    sorts: Mapping[str, Callable[[T], int]] = field(default_factory=dict)
    timestamps: frozenset[str] = frozenset()  # plain parameters taking unix seconds (v1 paid_on_after)
    flags: frozenset[str] = frozenset()  # plain boolean parameters (include_deleted)
    note: str = ""  # why a filter is refused, added to the error message


@dataclass(frozen=True, slots=True)
class Filter:
    name: str
    operator: str
    values: frozenset[Value] = frozenset()  # `is` and `in`
    bounds: tuple[int, ...] = ()  # every other operator: numbers and timestamps

    def holds(self, value: Value) -> bool:
        if self.operator in _MATCHES:
            return value in self.values
        return isinstance(value, int) and _COMPARE[self.operator](value, self.bounds)


@dataclass(frozen=True)
class Query:
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    filters: tuple[Filter, ...] = ()
    sort: tuple[str, bool] | None = None  # (attribute, descending)
    timestamps: Mapping[str, int] = field(default_factory=dict)


def _limit(text: str) -> int:
    value = parse_integer(text)
    if value is None or not 1 <= value <= MAX_LIMIT:
        raise ParamError("limit", f"should be between 1 and {MAX_LIMIT}")
    return value


def _offset(text: str) -> int:
    # The sandbox's next_offset is a position; Chargebee's is opaque, so clients only echo it back.
    if not text:
        return 0
    value = parse_integer(text) if len(text) <= _MAX_OFFSET else None
    if value is None or value < 0:
        raise ParamError("offset", "invalid value")
    return value


def _list_value(key: str, text: str) -> list[str]:
    """`["a","b"]` as Chargebee takes an `in` value; `[a,b]` without quotes too."""
    if not (text.startswith("[") and text.endswith("]")):
        raise ParamError(key, 'should be a list such as ["a","b"]')
    try:
        items = orjson.loads(text)
    except orjson.JSONDecodeError:
        items = [item.strip().strip('"') for item in text[1:-1].split(",")]
    if not (isinstance(items, list) and items and all(isinstance(i, str | int) for i in items)):
        raise ParamError(key, 'should be a non-empty list such as ["a","b"]')
    return [str(item) for item in items]


def _integer(key: str, spec: Field[T], text: str) -> int:
    value = parse_integer(text)
    if value is None:
        what = "timestamp" if spec.kind == "timestamp" else "integer value"
        raise ParamError(key, f"invalid {what} '{text}'")
    return value


def _typed(key: str, spec: Field[T], text: str) -> Value:
    if spec.kind in ("number", "timestamp"):
        return _integer(key, spec, text)
    if spec.kind == "enum" and text not in spec.values:
        raise ParamError(key, f"invalid value '{text}'")
    return text


def _filter(key: str, name: str, operator: str, text: str, spec: ListSpec[T]) -> Filter:
    found = spec.fields.get(name)
    if found is None:
        raise ParamError(key, f"is not a filter of this list operation{spec.note}")
    if operator not in found.operators:
        raise ParamError(key, f"operator '{operator}' is not supported for {name}")
    if operator not in _IMPLEMENTED[found.kind]:
        raise ParamError(key, f"the sandbox does not implement the '{operator}' operator")
    if operator in _MATCHES:
        texts = _list_value(key, text) if operator == "in" else [text]
        return Filter(name, operator, values=frozenset(_typed(key, found, t) for t in texts))
    if operator != "between":
        return Filter(name, operator, bounds=(_integer(key, found, text),))
    bounds = _list_value(key, text)
    if len(bounds) != 2:
        raise ParamError(key, "between takes two values, such as [1000,2000]")
    return Filter(name, operator, bounds=tuple(_integer(key, found, b) for b in bounds))


def _sort(key: str, order: str, attribute: str, spec: ListSpec[T]) -> tuple[str, bool]:
    if order not in ("asc", "desc"):
        raise ParamError(key, "the sort order should be asc or desc")
    if attribute not in spec.sorts:
        raise ParamError(key, f"cannot sort by '{attribute}'{spec.note}")
    return attribute, order == "desc"


def _plain(key: str, text: str, spec: ListSpec[T], timestamps: dict[str, int]) -> None:
    if key in spec.flags:
        if text not in ("true", "false"):
            raise ParamError(key, "should be true or false")
    elif key in spec.timestamps:
        value = parse_integer(text)
        if value is None:
            raise ParamError(key, f"invalid timestamp '{text}'")
        timestamps[key] = value
    else:
        raise ParamError(key, f"is not a parameter of this list operation{spec.note}")


def parse_query(items: Iterable[tuple[str, str]], spec: ListSpec[T]) -> Query:
    """The query a list call asks for, or `ParamError` naming the first parameter it cannot honour."""
    limit, offset, sort = DEFAULT_LIMIT, 0, None
    filters: list[Filter] = []
    timestamps: dict[str, int] = {}
    for key, text in items:
        match = _FILTER.fullmatch(key)
        if key == "limit":
            limit = _limit(text)
        elif key == "offset":
            offset = _offset(text)
        elif match is None:
            _plain(key, text, spec, timestamps)
        elif match["name"] == "sort_by":
            sort = _sort(key, match["operator"], text, spec)
        else:
            filters.append(_filter(key, match["name"], match["operator"], text, spec))
    return Query(limit, offset, tuple(filters), sort, timestamps)


def run(query: Query, spec: ListSpec[T], items: Sequence[T]) -> tuple[list[T], str | None]:
    """One page of `items` (in creation order unless sorted) and the next_offset, if more remain."""
    chosen = [i for i in items if all(f.holds(spec.fields[f.name].get(i)) for f in query.filters)]
    if query.sort is not None:
        attribute, descending = query.sort
        chosen.sort(key=spec.sorts[attribute], reverse=descending)  # stable either way
    end = query.offset + query.limit
    return chosen[query.offset : end], str(end) if end < len(chosen) else None
