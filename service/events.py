"""Inbound CloudEvents: parse request bodies and validate `bank.deposit` / `check.scan` events.

Pure functions only. Validation is written out by hand rather than with pydantic models: it is
the receiver's hot path, and it reports every failing field by its JSON path in one pass, which
is what a sender needs to fix a batch (`data.amount`, `data.allocations[2].amount`, ...).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

import orjson

from service.event_data import FieldError, Payment, parse_time, payment_of

EventType = Literal["bank.deposit", "check.scan"]
EVENT_TYPES: tuple[EventType, ...] = get_args(EventType)
STRUCTURED = ("application/cloudevents+json", "application/json")
BATCH = "application/cloudevents-batch+json"
# `id` becomes the AMQP message_id, a short string of at most 255 bytes; `source` is kept to the
# same bound, since together they are the event's identity.
MAX_IDENTITY_BYTES = 255
# Extension attributes of an event made from a bank file (SPEC §9): the file's id, its format and
# where in it the entry was. Shown to operators, never acted on; anyone may send them, so they are
# read only as text and cut short.
FILE_ATTRIBUTES = ("payrelayfile", "payrelayformat", "payrelayentry")
MAX_ATTRIBUTE_CHARS = 200


class BodyError(ValueError):
    """The body is not JSON, or not the JSON shape its content type promises (a 400)."""


class ContractError(ValueError):
    """An event that breaks the contract (a 422); `errors` lists every failing field."""

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__("; ".join(f"{e.field}: {e.message}" for e in errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Event:
    """A validated inbound CloudEvent."""

    id: str
    source: str
    type: str
    payment: Payment
    raw: dict[str, Any]


def attribute_text(raw: dict[str, Any], name: str) -> str | None:
    """An extension attribute of an (untrusted) event as text of at most 200 characters, else None."""
    value = raw.get(name)
    return value[:MAX_ATTRIBUTE_CHARS] if isinstance(value, str) and value else None


def parse_body(body: bytes, content_type: str) -> tuple[list[Any], bool]:
    """Decode a request body into its events and whether it was a batch.

    `content_type` is the media type without parameters, lower-cased, and one of STRUCTURED or
    BATCH (the receiver answers 415 for anything else before calling this).
    """
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"body is not valid JSON: {exc}") from None
    if _has_duplicate_keys(body, parsed):
        # orjson keeps the last of two equal keys; a signed body must mean one thing to everyone.
        raise BodyError("an object in the body has the same key twice")
    if content_type == BATCH:
        if not isinstance(parsed, list):
            raise BodyError("a batch body must be a JSON array of events")
        return parsed, True
    if not isinstance(parsed, dict):
        raise BodyError(
            "a structured-mode body must be a JSON object (use application/cloudevents-batch+json for arrays)"
        )
    return [parsed], False


def _has_duplicate_keys(body: bytes, parsed: Any) -> bool:
    """Whether an object of `body` (which orjson parsed into `parsed`) repeats a key.

    Outside strings, `:` only ever follows a key, and orjson writes every `:` of a string as it is.
    So unless a `\\u` escape could have spelled a colon differently, the body has one
    `:` more than orjson's own rendering of `parsed` for every pair a repeated key dropped. Cheap
    (two C calls); bodies with `\\u` escapes take the slow, exact way.
    """
    if b"\\u" not in body:
        return body.count(b":") != orjson.dumps(parsed).count(b":")
    try:
        json.loads(body, object_pairs_hook=_unique_pairs)
    except _DuplicateKey:
        return True
    return False


class _DuplicateKey(ValueError):
    pass


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    unique = dict(pairs)
    if len(unique) != len(pairs):
        raise _DuplicateKey
    return unique


def _attributes(
    raw: dict[str, Any], allowed_types: tuple[str, ...] | list[str], errors: list[FieldError]
) -> None:
    if raw.get("specversion") != "1.0":
        errors.append(FieldError("specversion", 'must be "1.0"'))
    for key in ("id", "source"):
        value = raw.get(key)
        if not isinstance(value, str) or not value:
            errors.append(FieldError(key, "is required: a non-empty string"))
        elif (size := len(value.encode("utf-8", "surrogatepass"))) > MAX_IDENTITY_BYTES:
            message = f"must be at most {MAX_IDENTITY_BYTES} bytes in UTF-8; this one is {size}"
            errors.append(FieldError(key, message))
    event_type = raw.get("type")
    if event_type not in EVENT_TYPES:
        errors.append(FieldError("type", f"must be one of {', '.join(EVENT_TYPES)}"))
    elif event_type not in allowed_types:
        errors.append(FieldError("type", f"{event_type} is not accepted from this source"))
    if "time" in raw:
        try:
            parse_time(raw["time"])
        except ValueError as exc:
            errors.append(FieldError("time", str(exc)))
    content_type = raw.get("datacontenttype")
    if content_type is not None and content_type not in ("application/json", "text/json"):
        errors.append(FieldError("datacontenttype", "must be application/json when present"))
    if "data_base64" in raw:
        errors.append(FieldError("data_base64", "is not supported; send data as a JSON object"))


def validate(raw: Any, allowed_types: tuple[str, ...] | list[str] = EVENT_TYPES) -> Event:
    """Check one decoded CloudEvent against the contract; raises `ContractError` with every error."""
    if not isinstance(raw, dict):
        raise ContractError([FieldError("(event)", "must be a JSON object")])
    errors: list[FieldError] = []
    _attributes(raw, allowed_types, errors)
    data = raw.get("data")
    payment = None
    if not isinstance(data, dict):
        errors.append(FieldError("data", "is required: a JSON object"))
    elif raw.get("type") in EVENT_TYPES:
        payment = payment_of(raw["type"], data, errors)
    if errors or payment is None:
        raise ContractError(errors)
    return Event(id=raw["id"], source=raw["source"], type=raw["type"], payment=payment, raw=raw)


def validate_batch(items: list[Any], allowed_types: tuple[str, ...] | list[str]) -> list[Event]:
    """Validate every event of a request; one failure fails all, with each failing index named."""
    events: list[Event] = []
    errors: list[FieldError] = []
    for index, raw in enumerate(items):
        try:
            events.append(validate(raw, allowed_types))
        except ContractError as exc:
            errors.extend(FieldError(e.field, e.message, index) for e in exc.errors)
    if errors:
        raise ContractError(errors)
    return events
