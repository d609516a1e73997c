"""Review items and the payer map in the ledger database (SPEC §10). One code path for both databases.

An item is stored once per event (`add` is insert-or-keep); a decision is one transaction: the
item moves from `open` only if it still is (`UPDATE … WHERE state = 'open'`, so of two operators
deciding at once exactly one wins), and with it the event's plan, how it was matched, the audit
row and what the payer map learns. The plan is written only if the event has none: a plan already
stored (from the event's references) must be the one decided, or the decision is refused.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.ledger.review_tables import MATCHES, PAYERS, REVIEWS
from service.ledger.tables import AUDIT, PLANS, utc
from service.messages import EventKey
from service.review.model import Allocation, Conflict, NewReview, Refused, ReviewItem, Suggestion

Transaction = Callable[[], AbstractAsyncContextManager[AsyncConnection]]
InsertInto = Callable[[sa.Table], Any]
Grouped = Callable[[Callable[[sa.Connection], Any]], Awaitable[Any]]

REVIEW_PREFIX: Final = "rv-"
PAYER_KINDS: Final = ("fingerprint", "name")
_EVENT = ("origin", "source", "event_id")


def review_id(number: int) -> str:
    return f"{REVIEW_PREFIX}{number}"


def review_number(text: str) -> int | None:
    digits = text.strip().removeprefix(REVIEW_PREFIX)
    return int(digits) if digits.isascii() and digits.isdigit() and len(digits) <= 18 else None


def _event_where(table: sa.Table, key: EventKey) -> sa.ColumnElement[bool]:
    return sa.and_(*(table.c[name] == value for name, value in zip(_EVENT, key, strict=True)))


def _pairs(value: Any) -> tuple[Allocation, ...]:
    return tuple(Allocation(str(i), int(a)) for i, a in value or [])


def to_item(row: sa.Row[Any]) -> ReviewItem:
    return ReviewItem(
        id=review_id(row.id),
        key=(row.origin, row.source, row.event_id),
        event=row.event,
        headers=row.headers,
        amount=row.amount,
        currency=row.currency,
        why=row.why,
        suggestions=tuple(Suggestion.from_json(s) for s in row.suggestions),
        customer_id=row.customer_id,
        payer=row.payer,
        named=_pairs(row.named),
        state=row.state,
        created_at=row.created_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        decision=row.decision,
        problem=row.problem,
        queued_at=row.queued_at,
        version=row.version,
        teach=tuple((str(kind), str(value)) for kind, value in row.teach),
    )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a person decided, as the ledger stores it."""

    state: str  # accepted | assigned | rejected
    actor: str
    allocations: tuple[Allocation, ...] = ()  # empty for a rejection
    match: dict[str, Any] | None = None
    allow_excess: bool = False
    customer_id: str | None = None  # the customer the invoices belong to: the payer map learns it
    note: str | None = None


class ReviewTable:
    def __init__(
        self, write: Transaction, read: Transaction, insert_into: InsertInto, grouped: Grouped
    ) -> None:
        self._write = write
        self._read = read
        self._add = insert_into(REVIEWS).on_conflict_do_nothing(index_elements=list(_EVENT))
        self._plan = insert_into(PLANS).on_conflict_do_nothing(index_elements=list(_EVENT))
        self._payers = PayerMap(write, read, insert_into, grouped)

    async def add(self, new: NewReview, now: datetime | None = None) -> ReviewItem:
        """Store the item if the event has none yet; returns the stored one (new or earlier)."""
        at = utc(now or datetime.now(UTC))
        row = {
            **dict(zip(_EVENT, new.key, strict=True)),
            "state": "open",
            "why": new.why,
            "amount": new.amount,
            "currency": new.currency,
            "customer_id": new.customer_id,
            "payer": new.payer,
            "teach": [list(pair) for pair in new.teach],
            "event": new.event,
            "headers": new.headers,
            "suggestions": [s.stored() for s in new.suggestions],
            "named": [[a.invoice_id, a.amount] for a in new.named],
            "created_at": at,
            "updated_at": at,
            "version": 0,
        }
        async with self._write() as conn:
            await conn.execute(self._add, row)
            stored = (await conn.execute(sa.select(REVIEWS).where(_event_where(REVIEWS, new.key)))).first()
        assert stored is not None
        return to_item(stored)

    async def get(self, wanted: str) -> ReviewItem | None:
        number = review_number(wanted)
        if number is None:
            return None
        async with self._read() as conn:
            row = (await conn.execute(sa.select(REVIEWS).where(REVIEWS.c.id == number))).first()
        return None if row is None else to_item(row)

    async def by_key(self, key: EventKey) -> ReviewItem | None:
        async with self._read() as conn:
            row = (await conn.execute(sa.select(REVIEWS).where(_event_where(REVIEWS, key)))).first()
        return None if row is None else to_item(row)

    async def select(self, state: str | None = "open", limit: int = 100, offset: int = 0) -> list[ReviewItem]:
        """Items oldest first (the order people work through them), of one state or all."""
        query = sa.select(REVIEWS).order_by(REVIEWS.c.created_at, REVIEWS.c.id).limit(limit).offset(offset)
        if state is not None:
            query = query.where(REVIEWS.c.state == state)
        async with self._read() as conn:
            return [to_item(row) for row in await conn.execute(query)]

    async def summary(self) -> tuple[int, datetime | None]:
        """How many items are open, and when the oldest of them came in."""
        query = sa.select(sa.func.count(), sa.func.min(REVIEWS.c.created_at)).where(REVIEWS.c.state == "open")
        async with self._read() as conn:
            count, oldest = (await conn.execute(query)).one()
        return int(count), None if oldest is None else utc(_aware(oldest))

    async def decide(self, wanted: str, decision: Decision, now: datetime | None = None) -> ReviewItem:
        """Decide an open item; Conflict if it is decided already (with it as it is), Refused if its
        event's stored plan differs from the decision's allocations."""
        number = review_number(wanted)
        at = utc(now or datetime.now(UTC))
        stored_decision: dict[str, Any] = {
            "allocations": [[a.invoice_id, a.amount] for a in decision.allocations],
            "match": decision.match,
            "allow_excess": decision.allow_excess,
            "customer_id": decision.customer_id,
            "note": decision.note,
        }
        async with self._write() as conn:
            moved = (
                await conn.execute(
                    sa.update(REVIEWS)
                    .where(REVIEWS.c.id == number, REVIEWS.c.state == "open")
                    .values(
                        state=decision.state,
                        decided_at=at,
                        decided_by=decision.actor,
                        decision=stored_decision,
                        problem=None,
                        updated_at=at,
                        version=REVIEWS.c.version + 1,
                    )
                    .returning(*REVIEWS.c)
                )
            ).first()
            if moved is None:
                current = (await conn.execute(sa.select(REVIEWS).where(REVIEWS.c.id == number))).first()
                if current is None:
                    raise LookupError(wanted)
                item = to_item(current)
                who = f" by {item.decided_by}" if item.decided_by else ""
                raise Conflict(f"review {item.id} is {item.state} already{who}", item)
            item = to_item(moved)
            if decision.allocations:
                await self._store_plan(conn, item, decision, at)
            if decision.customer_id is not None:
                await self._payers.learn_in(conn, item.teach, decision.customer_id, "review", at)
            await conn.execute(
                AUDIT.insert().values(
                    at=at,
                    actor=decision.actor,
                    action=f"review-{decision.state}",
                    selector=item.id,
                    count=1,
                    details={"event_id": item.key[2], "origin": item.origin, **stored_decision},
                )
            )
        return item

    async def _store_plan(
        self, conn: AsyncConnection, item: ReviewItem, decision: Decision, at: datetime
    ) -> None:
        plan = [[a.invoice_id, a.amount] for a in decision.allocations]
        values = {**dict(zip(_EVENT, item.key, strict=True)), "plan": plan, "created_at": at}
        await conn.execute(self._plan, values)
        stored = await conn.scalar(sa.select(PLANS.c.plan).where(_event_where(PLANS, item.key)))
        if [[str(i), int(a)] for i, a in stored or []] != plan:
            raise Refused(
                f"the event's payment was already planned as {stored} (from its references); "
                "accept that plan or reject the item"
            )
        match = {**dict(zip(_EVENT, item.key, strict=True)), "match": decision.match or {},
                 "allow_excess": decision.allow_excess, "created_at": at}  # fmt: skip
        await conn.execute(sa.delete(MATCHES).where(_event_where(MATCHES, item.key)))
        await conn.execute(MATCHES.insert().values(**match))

    async def note_problem(self, wanted: str, problem: str) -> None:
        """A decision was refused: the item stays open and says why."""
        number = review_number(wanted)
        async with self._write() as conn:
            await conn.execute(
                sa.update(REVIEWS)
                .where(REVIEWS.c.id == number, REVIEWS.c.state == "open")
                .values(problem=problem[:2000], updated_at=datetime.now(UTC), version=REVIEWS.c.version + 1)
            )

    async def mark_queued(self, wanted: str) -> None:
        number = review_number(wanted)
        async with self._write() as conn:
            await conn.execute(
                sa.update(REVIEWS).where(REVIEWS.c.id == number).values(queued_at=datetime.now(UTC))
            )

    async def unqueued(self, limit: int = 100) -> list[ReviewItem]:
        """Decided items whose event has not gone back to a queue yet (a broker outage at the time)."""
        query = (
            sa.select(REVIEWS)
            .where(REVIEWS.c.state != "open", REVIEWS.c.queued_at.is_(None))
            .order_by(REVIEWS.c.decided_at)
            .limit(limit)
        )
        async with self._read() as conn:
            return [to_item(row) for row in await conn.execute(query)]

    async def cleanup(self, conn: AsyncConnection, cutoff: datetime) -> None:
        """Decided items past retention go; open ones wait for a person however long it takes."""
        await conn.execute(
            sa.delete(REVIEWS).where(
                REVIEWS.c.state != "open", REVIEWS.c.queued_at.is_not(None), REVIEWS.c.updated_at < cutoff
            )
        )

    @property
    def payers(self) -> PayerMap:
        return self._payers


@dataclass(frozen=True, slots=True)
class PayerHit:
    kind: str
    customer_id: str


class PayerMap:
    """Payer -> customer. `lookup` tries the fingerprint, then the name; conflicted entries are skipped."""

    def __init__(
        self, write: Transaction, read: Transaction, insert_into: InsertInto, grouped: Grouped
    ) -> None:
        self._write = write
        self._read = read
        self._grouped = grouped
        insert = insert_into(PAYERS)
        new = insert.excluded
        by_review = new.taught_by == "review"
        self._learn = insert.on_conflict_do_update(
            index_elements=["kind", "value"],
            set_={
                "customer_id": sa.case((by_review, new.customer_id), else_=PAYERS.c.customer_id),
                "conflicted": sa.case(
                    (by_review, sa.false()),
                    (PAYERS.c.customer_id == new.customer_id, PAYERS.c.conflicted),
                    else_=sa.true(),
                ),
                "taught_by": sa.case((by_review, new.taught_by), else_=PAYERS.c.taught_by),
                "hits": PAYERS.c.hits + 1,
                "updated_at": new.updated_at,
            },
        )

    async def lookup(self, teach: Sequence[tuple[str, str]]) -> PayerHit | None:
        """The first of (kind, value) pairs, in the order given, that names one customer."""
        wanted = [pair for pair in teach if pair[0] in PAYER_KINDS]
        if not wanted:
            return None
        condition = sa.or_(*(sa.and_(PAYERS.c.kind == k, PAYERS.c.value == v) for k, v in wanted))
        query = sa.select(PAYERS.c.kind, PAYERS.c.value, PAYERS.c.customer_id).where(
            condition, PAYERS.c.conflicted.is_(False)
        )
        async with self._read() as conn:
            found = {(row.kind, row.value): row.customer_id for row in await conn.execute(query)}
        for pair in wanted:
            if pair in found:
                return PayerHit(pair[0], found[pair])
        return None

    async def learn(self, teach: Sequence[tuple[str, str]], customer_id: str, taught_by: str) -> None:
        """Committed with the ledger's other writes of the moment (each recorded payment teaches)."""
        at = datetime.now(UTC)

        rows = self._rows(teach, customer_id, taught_by, at)

        def learn(conn: sa.Connection) -> None:
            if rows:
                conn.execute(self._learn, rows)

        await self._grouped(learn)

    async def learn_in(
        self, conn: AsyncConnection, teach: Sequence[tuple[str, str]], customer_id: str, taught_by: str,
        at: datetime,
    ) -> None:  # fmt: skip
        if rows := self._rows(teach, customer_id, taught_by, at):
            await conn.execute(self._learn, rows)

    @staticmethod
    def _rows(
        teach: Sequence[tuple[str, str]], customer_id: str, taught_by: str, at: datetime
    ) -> list[dict[str, Any]]:
        return [
            {"kind": kind, "value": value, "customer_id": customer_id, "conflicted": False,
             "taught_by": taught_by, "hits": 1, "learned_at": at, "updated_at": at}
            for kind, value in teach
            if kind in PAYER_KINDS and value
        ]  # fmt: skip

    async def entries(self, limit: int = 1000) -> list[dict[str, Any]]:
        query = sa.select(PAYERS).order_by(PAYERS.c.updated_at.desc()).limit(limit)
        async with self._read() as conn:
            return [dict(row._mapping) for row in await conn.execute(query)]


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
