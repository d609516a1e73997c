"""Dead letters for operators, the pure half: decode, select, edit, stamp a replay. No I/O.

`payrelay dlq` and the ops app share it; the keeper (`service.dead_letter_queue`) stores letters
in the ledger (`service.ledger.letters`), and `service.dead_letter_store` acts on them.
A dead letter is decoded once into a `Letter`; a `Filter` says which letters an operation
touches (one field list, `SELECTORS`, for the CLI's flags, the API's query and body, and the
pages' form; the ledger turns it into SQL); edits are checked for every selected letter before
anything moves.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from service import events, messages
from service.messages import count, text
from service.money import AmountError, exponent, to_major_string

# Fields an operator may correct with --set, all under the event's `data`: where the money goes
# and how it is described, never how much arrived or in which currency (SPEC §6). A wrong amount is
# the bank's to correct: purge the letter and let the bank send the payment again.
EDITABLE: Final = (
    "invoice_id",
    "memo",
    "remittance_information",
    "bank_reference",
    "check_number",
    "booked_at",
    "scanned_at",
)
NEVER_EDITABLE: Final = ("amount", "currency")
# The fields that only one event type has (SPEC §2); the rest apply to both.
ONLY_FOR: Final = {
    "bank_reference": "bank.deposit",
    "booked_at": "bank.deposit",
    "check_number": "check.scan",
    "scanned_at": "check.scan",
}
# Headers the broker or an earlier failure wrote; a replayed message starts without them.
CLEARED: Final = (
    messages.REASON,
    messages.ERROR,
    messages.ATTEMPTS,
    messages.FAILED_AT,
    messages.CHARGEBEE_ERROR,
    messages.LAST_ERROR,
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)
# What a selection may name besides letter ids and "all": the CLI's flags, the API's query
# parameters and JSON body, and the dead-letter page's form all use these names.
SELECTORS: Final = ("reason", "source", "type", "invoice", "older_than", "newer_than")
AGES: Final = ("older_than", "newer_than")

MAX_AGE: Final = timedelta(days=36_500)  # a century: an age filter reaching before 1926 is a typo
_AGE = re.compile(r"^\s*([0-9]+)\s*([smhd]?)\s*\Z", re.ASCII)
_AGE_UNITS = {"s": "seconds", "": "seconds", "m": "minutes", "h": "hours", "d": "days"}
_RABBITMQ_REASONS = {
    "delivery_limit": "delivery_limit_exceeded",
    "expired": "expired",
    "rejected": "rejected",
}
# What `reason_of` may also say of a letter RabbitMQ dead-lettered itself, beyond the delivery limit.
BROKER_REASONS: Final = ("expired", "rejected", "unknown")


class FilterError(ValueError):
    """A selector value that cannot be read (an age such as `2 weeks`); the message says how."""


class EditError(ValueError):
    """A --set that cannot be applied (unknown field, or the edited event is invalid)."""


def check_reason(reason: str) -> str:
    """A reason a letter can have (SPEC §6, or RabbitMQ's own); another could only ever match nothing."""
    if reason not in messages.DEAD_LETTER_REASONS and reason not in BROKER_REASONS:
        raise FilterError(
            f"unknown reason {reason!r}; the reasons are: {', '.join(messages.DEAD_LETTER_REASONS)} "
            f"(and RabbitMQ's rarer {', '.join(BROKER_REASONS)})"
        )
    return reason


def parse_age(value: str | None) -> timedelta | None:
    """`90s`, `30m`, `2h`, `7d` (or plain seconds), as the age filters take them; "" is no filter."""
    if value is None or not value.strip():
        return None
    match = _AGE.match(value)
    if match is None:
        raise FilterError(f"{value!r} is not an age such as 90s, 30m, 2h or 7d")
    try:
        age = timedelta(**{_AGE_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        age = MAX_AGE * 2
    if age > MAX_AGE:
        raise FilterError(f"{value!r} is longer than any letter can be old (at most {MAX_AGE.days}d)")
    return age


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead-lettered message, decoded for people and filters.

    `id` is the letter's own id (`dl-17`), given when the keeper stores it ("" before); the event
    id is the message's, shared by every letter of one event.
    """

    id: str
    event_id: str
    state: str  # dead (waiting for an operator), replayed, purged
    stored_at: str | None
    reason: str
    error: str
    attempts: int
    failed_at: str | None
    origin: str | None
    source: str | None
    type: str | None
    invoice_id: str | None
    amount: str | None
    currency: str | None
    chargebee_error: dict[str, Any] | None
    headers: dict[str, Any]
    event: dict[str, Any] | None
    body: str

    def summary(self) -> dict[str, Any]:
        """The fields of `dlq list --json` (SPEC §6)."""
        return {
            "id": self.id,
            "event_id": self.event_id,
            "state": self.state,
            "reason": self.reason,
            "error": self.error,
            "attempts": self.attempts,
            "failed_at": self.failed_at,
            "origin": self.origin,
            "source": self.source,
            "type": self.type,
            "invoice_id": self.invoice_id,
            "amount": self.amount,
            "currency": self.currency,
            "replays": count(self.headers, messages.GENERATION),
        }

    def detail(self) -> dict[str, Any]:
        """Everything, for `dlq show` and the ops detail view."""
        return {
            **self.summary(),
            "stored_at": self.stored_at,
            "chargebee_error": self.chargebee_error,
            "headers": jsonable(self.headers),
            "event": self.event,
            "body": None if self.event is not None else self.body,
        }


def jsonable(value: Any) -> Any:
    """AMQP header values as JSON: bytes as text, timestamps as ISO 8601, tables and arrays inside."""
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


_PARENTHESISED = re.compile(r"\((\d{1,19})\)", re.ASCII)


def chargebee_figures(error: str, currency: object) -> str:
    """Chargebee's figures are minor units: `amount due (50000)` reads `amount due (50000 = 500.00 USD)`.

    For people (the CLI and the pages); JSON keeps Chargebee's own text.
    """
    if not error.startswith("Chargebee ") or not isinstance(currency, str):
        return error
    try:
        exponent(currency)
    except AmountError:
        return error
    return _PARENTHESISED.sub(
        lambda m: f"({m.group(1)} = {to_major_string(int(m.group(1)), currency)} {currency})", error
    )


def reason_of(headers: dict[str, Any]) -> str:
    """Why it was dead-lettered: payrelay's reason, else RabbitMQ's own in our vocabulary."""
    if (reason := text(headers, messages.REASON)) is not None:
        return reason
    broker = text(headers, "x-first-death-reason") or text(headers, "x-last-death-reason") or ""
    return _RABBITMQ_REASONS.get(broker, broker or "unknown")


def decode(message_id: str | None, headers: dict[str, Any], body: bytes) -> Letter:
    """A dead letter from its AMQP parts. Never raises on a malformed body or header."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    event = parsed if isinstance(parsed, dict) else None
    data = event.get("data") if event is not None else None
    data = data if isinstance(data, dict) else {}
    chargebee = None
    if (raw_error := text(headers, messages.CHARGEBEE_ERROR)) is not None:
        with contextlib.suppress(orjson.JSONDecodeError):
            chargebee = orjson.loads(raw_error)
    ours = text(headers, messages.REASON) is not None
    return Letter(
        id="",
        event_id=message_id or (str(event.get("id")) if event else ""),
        state="dead",
        stored_at=None,
        reason=reason_of(headers),
        error=text(headers, messages.ERROR) or ("" if ours else "dead-lettered by RabbitMQ"),
        attempts=count(headers, messages.ATTEMPTS) or count(headers, "x-delivery-count"),
        failed_at=text(headers, messages.FAILED_AT),
        origin=text(headers, messages.SOURCE),
        source=_str(event.get("source")) if event else None,
        type=_str(event.get("type")) if event else None,
        invoice_id=_str(data.get("invoice_id")) or text(headers, messages.INVOICE),
        amount=_str(data.get("amount")),
        currency=_str(data.get("currency")),
        chargebee_error=chargebee if isinstance(chargebee, dict) else None,
        headers=headers,
        event=event,
        body=body.decode(errors="replace")[:10_000],
    )


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


@dataclass(frozen=True, slots=True)
class Filter:
    """Which dead letters an operation touches. Empty matches nothing unless `everything`."""

    ids: tuple[str, ...] = ()
    reason: str | None = None
    source: str | None = None
    type: str | None = None
    invoice: str | None = None
    older_than: timedelta | None = None
    newer_than: timedelta | None = None
    everything: bool = False

    @classmethod
    def from_text(
        cls, values: Mapping[str, Any], *, ids: tuple[str, ...] = (), everything: bool = False
    ) -> Filter:
        """From text by `SELECTORS` name (a query string, a JSON body, a form); "" is no filter.

        Raises FilterError for an age it cannot read or a reason no letter can have.
        """
        chosen = {name: (values.get(name) or None) for name in SELECTORS}
        for name in AGES:
            chosen[name] = parse_age(chosen[name])
        if chosen["reason"] is not None:
            check_reason(chosen["reason"])
        return cls(ids=tuple(i for i in ids if i), everything=everything, **chosen)

    @property
    def empty(self) -> bool:
        return not (self.ids or any(getattr(self, name) for name in SELECTORS))

    def describe(self) -> str:
        """The selection in one line, for the audit: `reason=unmatched_invoice older_than=2:00:00`."""
        if self.empty:
            return "all" if self.everything else "nothing"
        parts = [f"id={i}" for i in self.ids]
        parts += [f"{name}={value}" for name in SELECTORS if (value := getattr(self, name))]
        return " ".join(parts)


def refusal(name: str) -> str | None:
    """Why `--set name=…` is refused whatever the event, or None when the field is editable."""
    if name in NEVER_EDITABLE:
        return (
            f"{name} is never editable: correct where money goes, not how much arrived "
            "(purge the letter and let the bank send the payment again)"
        )
    if name not in EDITABLE:
        return f"cannot --set {name}; editable fields: {', '.join(EDITABLE)}"
    return None


def apply_edits(event: dict[str, Any], edits: dict[str, str]) -> dict[str, Any]:
    """The event with `data` fields replaced; EditError if a field may not be set or the result is invalid."""
    refused = [why for name in sorted(edits) if (why := refusal(name)) is not None]
    if refused:
        raise EditError("; ".join(refused))
    kind = event.get("type")
    foreign = [name for name in sorted(edits) if ONLY_FOR.get(name, kind) != kind]
    if foreign:
        raise EditError(
            f"cannot --set {', '.join(foreign)} on a {kind} event: "
            f"{', '.join(f'{n} belongs to {ONLY_FOR[n]}' for n in foreign)}"
        )
    data = dict(event.get("data") or {})
    data.update(edits)
    edited = {**event, "data": data}
    try:
        events.validate(edited)
    except events.ContractError as exc:
        raise EditError(f"the edited event is invalid: {exc}") from None
    return edited


def check_edits(letter: Letter, edits: dict[str, str]) -> None:
    """Raise EditError, naming the dead letter, if `edits` cannot be applied to it."""
    name = letter.id or letter.event_id
    if letter.event is None:
        raise EditError(f"{name}: the body is not a JSON event; it cannot be edited")
    try:
        apply_edits(letter.event, edits)
    except EditError as exc:
        raise EditError(f"{name}: {exc}") from None


def replay_headers(
    headers: dict[str, Any], *, actor: str, at: datetime, edits: dict[str, str] | None, original: bytes | None
) -> dict[str, Any]:
    """Headers for a replayed message: failure headers cleared, generation bumped, who/when stamped."""
    replayed = {k: v for k, v in headers.items() if k not in CLEARED}
    replayed[messages.GENERATION] = count(headers, messages.GENERATION) + 1
    replayed[messages.REPLAYED_AT] = messages.rfc3339(at)
    replayed[messages.REPLAYED_BY] = actor
    replayed[messages.PREVIOUS_REASON] = reason_of(headers)
    if edits:
        replayed[messages.EDITS] = orjson.dumps(edits).decode()
        if original is not None and messages.ORIGINAL not in headers:
            replayed[messages.ORIGINAL] = original.decode(errors="replace")
    return replayed


@dataclass
class Outcome:
    """What an operation did (or, for a dry run, would do)."""

    matched: list[Letter] = field(default_factory=list)
    moved: int = 0
    scanned: int = 0  # dead letters waiting when the selection was made
    dry_run: bool = False
    # Letter ids previewed that another operator replayed or purged before this one acted.
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `dlq replay|purge --json` and of the API's replay and purge."""
        return {
            "matched": len(self.matched),
            "moved": self.moved,
            "dry_run": self.dry_run,
            "ids": [letter.id for letter in self.matched],
            "event_ids": [letter.event_id for letter in self.matched],
            "skipped": self.skipped,
        }
