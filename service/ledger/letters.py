"""Dead letters in the ledger database (SPEC §6): kept once, selected by `Filter`, settled with the audit.

The keeper hands in what it takes off `payrelay.dead-letter`; a letter taken in twice (a crash
between the commit and the ack) is one row, by the digest of the message. Looking at letters
never changes them: only a replay or a purge settles one, and it writes its audit row in the
same transaction. One code path for SQLite and PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.dead_letters import Filter, Letter, decode, jsonable
from service.ledger.tables import AUDIT, LETTERS, utc
from service.messages import rfc3339

Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
States = tuple[str, ...]

_LETTER_ID: Final = re.compile(r"dl-([0-9]{1,18})", re.ASCII)
# Headers that differ between two takes of one letter: RabbitMQ counts each delivery.
_UNSTABLE: Final = frozenset({"x-delivery-count"})


def letter_id(number: int) -> str:
    return f"dl-{number}"


def letter_number(text: str) -> int | None:
    """The row id of a letter id (`dl-17` → 17); None for anything else (an event id, say)."""
    match = _LETTER_ID.fullmatch(text)
    return int(match.group(1)) if match else None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A dead letter as the keeper took it off the queue, before it has an id."""

    message_id: str | None
    headers: dict[str, Any]
    body: bytes
    content_type: str | None = None
    message_type: str | None = None

    def digest(self) -> str:
        """The same for every take of one message, different for each time an event is dead-lettered.

        A second dead-lettering of one event differs at least in `x-payrelay-failed-at`.
        """
        stable = {k: v for k, v in jsonable(self.headers).items() if k not in _UNSTABLE}
        parts = orjson.dumps([self.message_id, stable], option=orjson.OPT_SORT_KEYS) + b"\0" + self.body
        return hashlib.sha256(parts).hexdigest()

    def row(self, queue: str, now: datetime) -> dict[str, Any]:
        letter = decode(self.message_id, self.headers, self.body)
        return {
            "queue": queue,
            "digest": self.digest(),
            "event_id": letter.event_id,
            "origin": letter.origin,
            "source": letter.source,
            "type": letter.type,
            "reason": letter.reason,
            "invoice_id": letter.invoice_id,
            "failed_at": _parse_time(letter.failed_at),
            "headers": jsonable(self.headers),
            "body": self.body,
            "content_type": self.content_type,
            "message_type": self.message_type,
            "stored_at": now,
            "state": "dead",
        }


@dataclass(frozen=True, slots=True)
class Stored:
    """A letter with the message it carries, for a replay to publish again."""

    letter: Letter
    number: int
    headers: dict[str, Any]
    body: bytes
    content_type: str | None
    message_type: str | None


def _parse_time(value: str | None) -> datetime | None:
    try:
        parsed = datetime.fromisoformat((value or "").replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if parsed.tzinfo is None else utc(parsed)


def where(selection: Filter | None, now: datetime) -> sa.ColumnElement[bool]:
    """The SQL of a selection; None selects every letter. Empty without `everything`: none."""
    t = LETTERS.c
    if selection is None or (selection.empty and selection.everything):
        return sa.true()
    if selection.empty:
        return sa.false()
    clauses: list[sa.ColumnElement[bool]] = []
    if selection.ids:
        numbers = [n for n in map(letter_number, selection.ids) if n is not None]
        clauses.append(sa.or_(t.event_id.in_(selection.ids), t.id.in_(numbers)))
    if selection.reason:
        clauses.append(t.reason == selection.reason)
    if selection.source:
        clauses.append(sa.or_(t.origin == selection.source, t.source == selection.source))
    if selection.type:
        clauses.append(t.type == selection.type)
    if selection.invoice:
        clauses.append(t.invoice_id == selection.invoice)
    if selection.older_than is not None:  # failed at least that long ago
        clauses.append(t.failed_at <= now - selection.older_than)
    if selection.newer_than is not None:
        clauses.append(t.failed_at >= now - selection.newer_than)
    return sa.and_(*clauses)


def _letter(row: sa.Row[Any]) -> Letter:
    decoded = decode(row.event_id, dict(row.headers), row.body or b"")
    return dataclasses.replace(
        decoded,
        id=letter_id(row.id),
        event_id=row.event_id,
        state=row.state,
        stored_at=rfc3339(row.stored_at),
        # The row's own columns win over a re-decode: a purged letter's body may be gone.
        reason=row.reason,
        invoice_id=row.invoice_id if row.invoice_id is not None else decoded.invoice_id,
    )


class LetterTable:
    """The dead letters of one dead-letter queue; `ledger.letters(queue)` builds it."""

    def __init__(
        self, engine: AsyncEngine, transaction: Transaction, insert: sa.Executable, queue: str
    ) -> None:
        self._engine = engine
        self._transaction = transaction
        self._insert = insert  # INSERT … ON CONFLICT (queue, digest) DO NOTHING
        self.queue = queue
        self._mine = LETTERS.c.queue == queue

    async def keep(self, letters: Sequence[Incoming], now: datetime) -> int:
        """Store every letter not stored yet, in one transaction; returns how many were new."""
        if not letters:
            return 0
        rows = [letter.row(self.queue, utc(now)) for letter in letters]
        new = 0
        async with self._transaction() as conn:
            for row in rows:
                result = await conn.execute(self._insert, row)
                new += max(result.rowcount, 0)
        return new

    async def select(
        self, selection: Filter | None, *, now: datetime, limit: int | None = None, states: States = ("dead",)
    ) -> list[Letter]:
        """Letters matching `selection` in the given states, oldest first."""
        query = (
            sa.select(LETTERS)
            .where(self._mine, LETTERS.c.state.in_(states), where(selection, now))
            .order_by(LETTERS.c.id)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            return [_letter(row) for row in (await conn.execute(query)).all()]

    async def count(self, selection: Filter | None = None, *, now: datetime | None = None) -> int:
        """How many letters wait for an operator (and match `selection`)."""
        query = sa.select(sa.func.count()).where(
            self._mine, LETTERS.c.state == "dead", where(selection, now or datetime.now(UTC))
        )
        async with self._engine.connect() as conn:
            return int(await conn.scalar(query) or 0)

    async def stored(self, ids: Sequence[str]) -> list[Stored]:
        """The letters with these letter ids that still wait, with their messages, in id order."""
        numbers = [n for n in map(letter_number, ids) if n is not None]
        query = (
            sa.select(LETTERS)
            .where(self._mine, LETTERS.c.id.in_(numbers), LETTERS.c.state == "dead")
            .order_by(LETTERS.c.id)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [
            Stored(_letter(r), r.id, dict(r.headers), r.body or b"", r.content_type, r.message_type)
            for r in rows
        ]

    async def settle(
        self,
        numbers: Sequence[int],
        state: str,
        *,
        actor: str,
        action: str,
        selector: str,
        details: dict[str, Any],
        now: datetime,
    ) -> list[int]:
        """Mark waiting letters replayed or purged with their audit row, in one transaction.

        Returns the row ids settled now; a letter another operator settled first is left alone.
        """
        t = LETTERS.c
        async with self._transaction() as conn:
            settled = sorted(
                (
                    await conn.execute(
                        sa.update(LETTERS)
                        .where(self._mine, t.id.in_(list(numbers)), t.state == "dead")
                        .values(state=state, settled_at=utc(now), settled_by=actor)
                        .returning(t.id)
                    )
                ).scalars()
            )
            if not settled:
                return []
            audit_id = await conn.scalar(
                AUDIT.insert()
                .values(
                    at=utc(now),
                    actor=actor,
                    action=action,
                    selector=selector,
                    count=len(settled),
                    details={**details, "ids": [letter_id(n) for n in settled]},
                )
                .returning(AUDIT.c.id)
            )
            await conn.execute(sa.update(LETTERS).where(t.id.in_(settled)).values(audit_id=audit_id))
        return settled


async def forget_bodies(conn: AsyncConnection, cutoff: datetime) -> int:
    """Remove the bodies of letters purged before `cutoff` (the retention period), in every queue.

    The rows stay: the audit names them.
    """
    result = await conn.execute(
        sa.update(LETTERS)
        .where(LETTERS.c.state == "purged", LETTERS.c.settled_at < cutoff, LETTERS.c.body.is_not(None))
        .values(body=None)
    )
    return result.rowcount
