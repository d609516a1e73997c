"""The dead-letter queue for operators: list, show, replay (with edits) and purge, with an audit.

Shared by `payrelay dlq` and the ops app. RabbitMQ cannot browse a queue, so every operation
takes up to a snapshot's worth of messages unacked (`basic.get`), acts on those that match, and
returns the others by closing the channel: a quorum queue hands returned messages back in their
original order. A replay publishes to the work queue with confirms *before* it acks the dead
letter, so a crash in between leaves a duplicate (harmless: the ledger), never a loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from service import events
from service.broker import Broker, Outgoing
from service.ledger import Ledger
from service.topology import Topology

Progress = Callable[[int, int], None]
RETURN_WAIT_SECONDS = 2.0

# Fields an operator may correct with --set, all under the event's `data`.
EDITABLE = (
    "invoice_id",
    "amount",
    "currency",
    "memo",
    "remittance_information",
    "bank_reference",
    "check_number",
    "booked_at",
    "scanned_at",
)
# Headers the broker or an earlier failure wrote; a replayed message starts without them.
_CLEARED = (
    "x-payrelay-reason",
    "x-payrelay-error",
    "x-payrelay-attempts",
    "x-payrelay-failed-at",
    "x-payrelay-chargebee-error",
    "x-payrelay-last-error",
    "x-delivery-count",
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
)


_AGE = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*\Z")
_AGE_UNITS = {"s": "seconds", "": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta:
    """`90s`, `30m`, `2h`, `7d` (or plain seconds), as the age filters take them; ValueError otherwise."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not an age such as 90s, 30m, 2h or 7d")
    return timedelta(**{_AGE_UNITS[match.group(2)]: int(match.group(1))})


class EditError(ValueError):
    """A --set that cannot be applied (unknown field, or the edited event is invalid)."""


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def _int(value: Any) -> int:
    try:
        return int(_text(value) or 0)
    except ValueError:
        return 0


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead-lettered message, decoded for people and filters."""

    id: str
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
            "replays": _int(self.headers.get("x-payrelay-generation")),
        }

    def detail(self) -> dict[str, Any]:
        """Everything, for `dlq show` and the ops detail view."""
        headers = {k: _jsonable(v) for k, v in self.headers.items()}
        return {
            **self.summary(),
            "chargebee_error": self.chargebee_error,
            "headers": headers,
            "event": self.event,
            "body": None if self.event is not None else self.body,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def _broker_reason(headers: dict[str, Any]) -> str:
    """A message RabbitMQ dead-lettered itself (no payrelay headers): say why, in our vocabulary."""
    reason = _text(headers.get("x-first-death-reason")) or _text(headers.get("x-last-death-reason"))
    return {"delivery_limit": "delivery_limit_exceeded", "expired": "expired", "rejected": "rejected"}.get(
        reason or "", reason or "unknown"
    )


def decode(message_id: str | None, headers: dict[str, Any], body: bytes) -> Letter:
    """A dead letter from its AMQP parts. Pure; never raises on a malformed body."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        parsed = None
    event = parsed if isinstance(parsed, dict) else None
    data = event.get("data") if event is not None else None
    data = data if isinstance(data, dict) else {}
    chargebee = None
    if (raw_error := _text(headers.get("x-payrelay-chargebee-error"))) is not None:
        with contextlib.suppress(orjson.JSONDecodeError):
            chargebee = orjson.loads(raw_error)
    reason = _text(headers.get("x-payrelay-reason"))
    return Letter(
        id=message_id or (str(event.get("id")) if event else ""),
        reason=reason or _broker_reason(headers),
        error=_text(headers.get("x-payrelay-error"))
        or ("dead-lettered by RabbitMQ" if reason is None else ""),
        attempts=_int(headers.get("x-payrelay-attempts")) or _int(headers.get("x-delivery-count")),
        failed_at=_text(headers.get("x-payrelay-failed-at")),
        origin=_text(headers.get("x-payrelay-source")),
        source=_text(event.get("source")) if event else None,
        type=_text(event.get("type")) if event else None,
        invoice_id=_text(data.get("invoice_id")),
        amount=_text(data.get("amount")),
        currency=_text(data.get("currency")),
        chargebee_error=chargebee,
        headers=headers,
        event=event,
        body=body.decode(errors="replace")[:10_000],
    )


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

    @property
    def empty(self) -> bool:
        return not (
            self.ids
            or self.reason
            or self.source
            or self.type
            or self.invoice
            or self.older_than
            or self.newer_than
        )

    def matches(self, letter: Letter, now: datetime) -> bool:
        if self.empty:
            return self.everything
        if self.ids and letter.id not in self.ids:
            return False
        if self.reason and letter.reason != self.reason:
            return False
        if self.source and self.source not in (letter.origin, letter.source):
            return False
        if self.type and letter.type != self.type:
            return False
        if self.invoice and letter.invoice_id != self.invoice:
            return False
        return self._age_matches(letter, now)

    def _age_matches(self, letter: Letter, now: datetime) -> bool:
        if self.older_than is None and self.newer_than is None:
            return True
        try:
            failed = datetime.fromisoformat((letter.failed_at or "").replace("Z", "+00:00"))
        except ValueError:
            return False
        age = now - failed
        if self.older_than is not None and age < self.older_than:
            return False
        return not (self.newer_than is not None and age > self.newer_than)

    def describe(self) -> str:
        if self.empty:
            return "all" if self.everything else "nothing"
        parts = [f"id={i}" for i in self.ids]
        for name in ("reason", "source", "type", "invoice", "older_than", "newer_than"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        return " ".join(parts)


def apply_edits(event: dict[str, Any], edits: dict[str, str]) -> dict[str, Any]:
    """The event with `data` fields replaced; raises EditError if a field is unknown or the result invalid."""
    unknown = sorted(set(edits) - set(EDITABLE))
    if unknown:
        raise EditError(f"cannot --set {', '.join(unknown)}; editable fields: {', '.join(EDITABLE)}")
    data = dict(event.get("data") or {})
    data.update(edits)
    edited = {**event, "data": data}
    try:
        events.validate(edited)
    except events.ContractError as exc:
        raise EditError(f"the edited event is invalid: {exc}") from None
    return edited


def replay_headers(
    headers: dict[str, Any], *, actor: str, at: datetime, edits: dict[str, str] | None, original: bytes | None
) -> dict[str, Any]:
    """Headers for a replayed message: failure headers cleared, generation bumped, who/when stamped."""
    replayed = {k: v for k, v in headers.items() if k not in _CLEARED}
    replayed["x-payrelay-generation"] = _int(headers.get("x-payrelay-generation")) + 1
    replayed["x-payrelay-replayed-at"] = at.isoformat().replace("+00:00", "Z")
    replayed["x-payrelay-replayed-by"] = actor
    replayed["x-payrelay-previous-reason"] = _text(headers.get("x-payrelay-reason")) or _broker_reason(
        headers
    )
    if edits:
        replayed["x-payrelay-edits"] = orjson.dumps(edits).decode()
        if original is not None and "x-payrelay-original" not in headers:
            replayed["x-payrelay-original"] = original.decode(errors="replace")
    return replayed


@dataclass
class Taken:
    """Messages taken from the dead-letter queue, and how many of them were acked (removed)."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    acked: int = 0


@dataclass
class Outcome:
    """What an operation did (or, for a dry run, would do)."""

    matched: list[Letter] = field(default_factory=list)
    moved: int = 0
    scanned: int = 0
    dry_run: bool = False


class DeadLetterQueue:
    """Operations on one prefix's dead-letter queue, over a connection the caller owns."""

    def __init__(
        self, connection: AbstractConnection, broker: Broker, topology: Topology, ledger: Ledger | None = None
    ) -> None:
        self.connection = connection
        self.broker = broker
        self.topology = topology
        self.ledger = ledger

    @contextlib.asynccontextmanager
    async def _taken(self, limit: int | None) -> AsyncIterator[Taken]:
        """Up to `limit` messages taken unacked; whatever is not acked goes back, in order, on exit."""
        channel = await self.connection.channel()
        taken = Taken()
        available = 0
        try:
            queue = await channel.declare_queue(self.topology.dead_letter, passive=True)
            available = queue.declaration_result.message_count or 0
            count = available if limit is None else min(available, limit)
            for _ in range(count):
                message = await queue.get(fail=False, no_ack=False)
                if message is None:
                    break
                taken.messages.append(message)
            yield taken
        finally:
            await channel.close()
            await self._settled(available - taken.acked)

    async def _settled(self, expected: int, within: float = RETURN_WAIT_SECONDS) -> None:
        """Wait (bounded) until the messages handed back are ready again.

        A quorum queue applies the return of a closed channel's messages asynchronously: without
        this, a browse straight after another could find the queue short, even empty.
        """
        if expected <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                # Polling is the only way: the broker does not announce returned messages.
                while await self.count() < expected:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)

    async def count(self) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.topology.dead_letter, passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await channel.close()

    async def list(self, selector: Filter | None = None, limit: int | None = 1000) -> list[Letter]:
        """Dead letters matching `selector` (all when None), oldest first; the queue is left as it was."""
        now = datetime.now(UTC)
        async with self._taken(limit) as taken:
            letters = [decode(m.message_id, dict(m.headers or {}), m.body) for m in taken.messages]
        if selector is None:
            return letters
        return [letter for letter in letters if selector.matches(letter, now)]

    async def replay(
        self,
        selector: Filter,
        *,
        actor: str,
        edits: dict[str, str] | None = None,
        dry_run: bool = False,
        rate: float | None = None,
        progress: Progress | None = None,
    ) -> Outcome:
        """Move matching dead letters back to the work queue; nothing else is touched."""
        check = (lambda letter: check_edits(letter, edits)) if edits else None
        outcome = await self._each(selector, dry_run, progress, self._replay_one(actor, edits, rate), check)
        if not dry_run and self.ledger is not None and outcome.moved:
            await self.ledger.append_audit(
                actor=actor,
                action="edit-replay" if edits else "replay",
                selector=selector.describe(),
                count=outcome.moved,
                details={"ids": [m.id for m in outcome.matched][:1000], "edits": edits or {}},
            )
        return outcome

    async def purge(
        self, selector: Filter, *, actor: str, dry_run: bool = False, progress: Progress | None = None
    ) -> Outcome:
        """Delete matching dead letters for good."""

        async def drop(message: AbstractIncomingMessage, letter: Letter) -> None:
            await message.ack()

        outcome = await self._each(selector, dry_run, progress, drop)
        if not dry_run and self.ledger is not None and outcome.moved:
            await self.ledger.append_audit(
                actor=actor,
                action="purge",
                selector=selector.describe(),
                count=outcome.moved,
                details={"ids": [m.id for m in outcome.matched][:1000]},
            )
        return outcome

    def _replay_one(
        self, actor: str, edits: dict[str, str] | None, rate: float | None
    ) -> Callable[[AbstractIncomingMessage, Letter], Any]:
        interval = 1.0 / rate if rate else 0.0

        async def replay(message: AbstractIncomingMessage, letter: Letter) -> None:
            body = message.body
            if edits and letter.event is not None:  # checked for every letter before the first move
                body = orjson.dumps(apply_edits(letter.event, edits))
            headers = replay_headers(
                dict(message.headers or {}),
                actor=actor,
                at=datetime.now(UTC),
                edits=edits,
                original=message.body,
            )
            await self.broker.publish(
                [
                    Outgoing(
                        exchange="",
                        routing_key=self.topology.work_queue,
                        body=body,
                        message_id=message.message_id or letter.id,
                        headers=headers,
                        content_type=message.content_type or "application/cloudevents+json",
                        type=message.type,
                    )
                ]
            )
            await message.ack()  # only after the broker confirmed the copy in the work queue
            if interval:
                await asyncio.sleep(interval)

        return replay

    async def _each(
        self,
        selector: Filter,
        dry_run: bool,
        progress: Progress | None,
        act: Callable[[AbstractIncomingMessage, Letter], Any],
        check: Callable[[Letter], None] | None = None,
    ) -> Outcome:
        outcome = Outcome(dry_run=dry_run)
        now = datetime.now(UTC)
        async with self._taken(None) as taken:
            outcome.scanned = len(taken.messages)
            chosen = []
            for message in taken.messages:
                letter = decode(message.message_id, dict(message.headers or {}), message.body)
                if selector.matches(letter, now):
                    chosen.append((message, letter))
            outcome.matched = [letter for _, letter in chosen]
            if check is not None:
                for _, letter in chosen:  # all or nothing: every edit is checked before anything moves
                    check(letter)
            for done, (message, letter) in enumerate(chosen, start=1):
                if not dry_run:
                    await act(message, letter)
                    outcome.moved += 1
                    taken.acked += 1
                if progress is not None:
                    progress(done, len(chosen))
        return outcome


def check_edits(letter: Letter, edits: dict[str, str]) -> None:
    """Raise EditError, naming the dead letter, if `edits` cannot be applied to it."""
    if letter.event is None:
        raise EditError(f"{letter.id}: the body is not a JSON event; it cannot be edited")
    try:
        apply_edits(letter.event, edits)
    except EditError as exc:
        raise EditError(f"{letter.id}: {exc}") from None
