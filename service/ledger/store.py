"""`Ledger`: claims, outcomes, the outbox, plans and the audit, writes committed in groups."""

from __future__ import annotations

import logging
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.engine import engine_for, local_writer_for
from service.ledger.letters import LetterTable, forget_bodies
from service.ledger.migrations import migrate
from service.ledger.reads import Reads
from service.ledger.records import (
    NO_PROVENANCE,
    WHOLE,
    Claim,
    History,
    Provenance,
    Recorded,
    event_values,
    key_values,
    to_recorded,
    update_key_values,
)
from service.ledger.review_tables import MATCHES
from service.ledger.reviews import ReviewTable
from service.ledger.sessions import SessionTable
from service.ledger.tables import (
    AUDIT,
    CONFIRMED,
    EVENT_COLUMNS,
    LEDGER,
    METADATA,
    PLAN,
    PLANS,
    RENEW,
    ROW,
    SCHEMA,
    SCHEMA_VERSION,
    TRANSACTION_ID,
    Upserts,
    utc,
)
from service.ledger.writer import GroupWriter
from service.messages import EventKey

log = logging.getLogger("payrelay.ledger")


_DDL_LOCK_KEY = 0x70617972656C6179  # "payrelay": replicas starting together create the tables once
_CLAIM_TRIES = 3
_MAX_ERROR_CHARS = 4000
DEFAULT_STATEMENT_TIMEOUT = 10.0


def _now() -> datetime:
    return datetime.now(UTC)


def _columns(row: Recorded | Provenance) -> dict[str, Any]:
    """A record's fields as column values; `dataclasses.asdict` would deep-copy each of them."""
    return {field.name: getattr(row, field.name) for field in fields(row)}


class Ledger(Reads):
    """Outcomes and audit on one database; build it with `await Ledger.open(url)`."""

    def __init__(self, engine: AsyncEngine, local: sa.Engine | None = None) -> None:
        self._engine = engine
        is_sqlite = engine.dialect.name == "sqlite"
        self._sql = Upserts.build(sqlite.insert if is_sqlite else postgresql.insert)
        self._writes = GroupWriter(engine, local)
        self._grouped = self._writes.run
        self._write = self._writes.transaction
        self.sessions = SessionTable(engine, self._write)
        insert_into = sqlite.insert if is_sqlite else postgresql.insert
        self._match = insert_into(MATCHES).on_conflict_do_nothing(index_elements=list(EVENT_COLUMNS))
        self.reviews = ReviewTable(self._write, engine.connect, insert_into, self._grouped)
        self.payers = self.reviews.payers

    @classmethod
    async def open(
        cls, url: str, *, schema: str | None = None, statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT
    ) -> Ledger:
        """Connect, create the tables if missing and migrate older ones.

        `schema` (PostgreSQL only) keeps the tables in that schema, creating it if needed; tests
        use a fresh one each, and deployments may use it to share a database. No statement waits
        longer than `statement_timeout` seconds: a hung database fails the write, and the message
        is retried later, instead of staying unacknowledged for ever.
        """
        ledger = cls(engine_for(url, schema, statement_timeout), local_writer_for(url, statement_timeout))
        try:
            await ledger._create_schema(schema)
        except BaseException:
            await ledger.close()
            raise
        return ledger

    def letters(self, queue: str) -> LetterTable:
        """The dead letters kept from `queue` (a topology's dead-letter queue)."""
        return LetterTable(self._engine, self._write, self._sql.letter, queue)

    async def close(self) -> None:
        await self._writes.close()
        await self._engine.dispose()

    async def _create_schema(self, schema: str | None) -> None:
        async with self._write() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_DDL_LOCK_KEY)))
                if schema:
                    await conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            version = await migrate(conn)
            await conn.run_sync(METADATA.create_all)
            if version is None:
                await conn.execute(SCHEMA.insert().values(version=SCHEMA_VERSION))

    async def claim(
        self,
        key: EventKey,
        *,
        owner: str,
        lease_seconds: float,
        invoice_id: str | None,
        generation: int = 0,
        part: str = WHOLE,
        provenance: Provenance = NO_PROVENANCE,
    ) -> Claim:
        """Take one payment of an event for one Chargebee attempt, or say why not ("recorded", "busy").

        Takeable: a new payment, an expired lease, the owner's own lease, a transient failure
        waiting for retry, or a dead-lettered payment being replayed. A claim that takes over a
        lapsed lease, or starts a replay's generation, marks the payment for reconciliation. The
        payment's `provenance` is stored by the first claim; a later one only fills in what is None.
        """
        attempts = 0
        for _ in range(_CLAIM_TRIES):
            now = _now()
            values = {
                **key_values(key, part),
                "state": "in_progress",
                "owner": owner,
                "lease_until": now + timedelta(seconds=lease_seconds),
                "attempts": 1,
                "generation": generation,
                "key_first_used_at": now,
                "reconcile": generation > 0,  # a replay of a row retention has already deleted
                "unreadable_200": False,
                "invoice_id": invoice_id,
                **_columns(provenance),
                "created_at": now,
                "updated_at": now,
            }

            def claim(conn: sa.Connection, values: dict[str, Any] = values) -> tuple[Any, Any]:
                claimed = conn.execute(self._sql.claim, values).first()
                row = None if claimed is not None else conn.execute(ROW, key_values(key, part)).first()
                return claimed, row

            claimed, row = await self._grouped(claim)
            if claimed is not None:
                history = History(claimed.reconcile, claimed.unreadable_200, claimed.key_first_used_at)
                return Claim("claimed", claimed.attempts, history=history)
            if row is None:
                continue  # deleted by cleanup between the two statements: claim again
            attempts = row.attempts
            if row.state == "recorded":
                return Claim("recorded", attempts, to_recorded(row))
            if row.state == "in_progress" and row.lease_until is not None and row.lease_until > now:
                return Claim("busy", attempts)
            # On PostgreSQL the row changed between the statements (say the holder failed): again.
        return Claim("busy", attempts)

    async def renew(self, key: EventKey, *, owner: str, lease_seconds: float, part: str = WHOLE) -> bool:
        """Extend `owner`'s lease; False if it no longer holds the payment (taken over, or settled)."""
        now = _now()
        values = {
            **update_key_values(key, part),
            "holder": owner,
            "until": now + timedelta(seconds=lease_seconds),
        }

        def renew(conn: sa.Connection) -> int:
            return conn.execute(RENEW, {**values, "now": now}).rowcount

        return await self._grouped(renew) == 1

    async def record_success(
        self, key: EventKey, recorded: Recorded, *, owner: str, part: str = WHOLE
    ) -> None:
        """Store Chargebee's answer, its confirmations not yet sent; a recorded payment keeps its first.

        Accepted from any owner, even one whose lease was taken over: the payment exists at
        Chargebee either way, and losing that fact is what would let it be recorded twice.
        """
        now = _now()
        values = {
            **key_values(key, part),
            **_columns(recorded),
            "recorded_at": utc(recorded.recorded_at),
            "state": "recorded",
            "owner": owner,
            "lease_until": None,
            "confirmed_at": None,
            "attempts": 1,  # only if it was never claimed
            "generation": 0,
            "created_at": now,
            "updated_at": now,
        }

        def success(conn: sa.Connection) -> Any:
            if conn.scalar(self._sql.success, values) is not None:
                return recorded.transaction_id
            return conn.scalar(TRANSACTION_ID, key_values(key, part))

        kept = await self._grouped(success)
        if kept != recorded.transaction_id:
            log.warning(
                "event %s was already recorded as transaction %s; kept it over %s",
                key,
                kept,
                recorded.transaction_id,
            )

    async def record_failure(
        self,
        key: EventKey,
        *,
        owner: str,
        error: str,
        reason: str | None,
        final: bool,
        part: str = WHOLE,
        maybe_recorded: bool = False,
        unreadable_200: bool = False,
    ) -> None:
        """Mark a failed attempt: `failed` waits for a retry, `dead_lettered` (final) for a replay.

        `maybe_recorded` says Chargebee may have recorded it all the same (the answer was lost, a
        5xx): every later attempt looks for the payment first. Ignored for a recorded event, and
        from an owner whose live lease another owner took over. An event that fails before it was
        ever claimed (say, invalid) is inserted with 0 attempts.
        """
        now = _now()
        values = {
            **key_values(key, part),
            "state": "dead_lettered" if final else "failed",
            "owner": None,
            "lease_until": None,
            "attempts": 0,
            "generation": 0,
            "last_error": error[:_MAX_ERROR_CHARS],
            "reason": reason,
            "reconcile": maybe_recorded,
            "unreadable_200": unreadable_200,
            "created_at": now,
            "updated_at": now,
            "reporter": owner,
        }

        def failure(conn: sa.Connection) -> Any:
            return conn.scalar(self._sql.failure, values)

        applied = await self._grouped(failure)
        if applied is None:
            log.info("ignored failure of %s from %s: recorded, or held by another owner", key, owner)

    async def mark_confirmed(self, key: EventKey, part: str = WHOLE) -> None:
        """The broker confirmed this payment's confirmations: take it out of the outbox."""
        values = {**update_key_values(key, part), "now": _now()}

        def confirmed(conn: sa.Connection) -> None:
            conn.execute(CONFIRMED, values)

        await self._grouped(confirmed)

    async def plan(
        self, key: EventKey, proposed: list[tuple[str, int]], match: dict[str, Any] | None = None
    ) -> list[tuple[str, int]]:
        """The event's allocation plan: `proposed` if it is the first, else the one stored before.

        Decided once, from the invoices as they were then, and kept: a retry after part of the
        plan was recorded must not share the payment differently. `match` (how cash application
        found it, SPEC §10) is kept with the first plan only.
        """
        now = _now()
        values = {**event_values(key), "plan": [list(p) for p in proposed], "created_at": now}
        matched = {**event_values(key), "match": match, "allow_excess": False, "created_at": now}

        def plan(conn: sa.Connection) -> Any:
            written = conn.execute(self._sql.plan, values).rowcount
            if written and match is not None:
                conn.execute(self._match, matched)
            return conn.scalar(PLAN, event_values(key))

        stored = await self._grouped(plan)
        return [(str(invoice), int(amount)) for invoice, amount in stored]

    async def cleanup(self, *, retention_days: int, now: datetime | None = None) -> int:
        """Delete entries of every state not updated for `retention_days`; returns how many went.

        An event's plan goes with the last of its entries; a purged dead letter keeps its row (the
        audit names it) but loses its body.
        """
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1: the ledger is what stops double payments")
        cutoff = utc(now or _now()) - timedelta(days=retention_days)
        entries = sa.select(LEDGER.c.event_id).where(
            *(LEDGER.c[name] == PLANS.c[name] for name in EVENT_COLUMNS)
        )
        async with self._write() as conn:
            result = await conn.execute(sa.delete(LEDGER).where(LEDGER.c.updated_at < cutoff))
            await conn.execute(sa.delete(PLANS).where(PLANS.c.created_at < cutoff, ~entries.exists()))
            plans = sa.select(PLANS.c.event_id).where(
                *(MATCHES.c[name] == PLANS.c[name] for name in EVENT_COLUMNS)
            )
            await conn.execute(sa.delete(MATCHES).where(MATCHES.c.created_at < cutoff, ~plans.exists()))
            await self.reviews.cleanup(conn, cutoff)
            await forget_bodies(conn, cutoff)
        return result.rowcount

    async def append_audit(
        self, *, actor: str, action: str, selector: str, count: int, details: dict[str, Any] | None = None
    ) -> None:
        """Append one operator action; audit rows are never updated or deleted through this class."""
        row = {
            "at": _now(),
            "actor": actor,
            "action": action,
            "selector": selector,
            "count": count,
            "details": details or {},
        }
        async with self._write() as conn:
            await conn.execute(AUDIT.insert().values(**row))
