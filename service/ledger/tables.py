"""The ledger's tables and column types, and the dialect's upsert statements built once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

SCHEMA_VERSION = 1


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Aware UTC in and out: PostgreSQL keeps timestamptz, SQLite keeps UTC text and returns it naive."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


METADATA = sa.MetaData()
KEY_COLUMNS = ("origin", "source", "event_id")

LEDGER = sa.Table(
    "payrelay_ledger",
    METADATA,
    sa.Column("origin", sa.Text, primary_key=True),  # the configured source it came in through
    sa.Column("source", sa.Text, primary_key=True),  # CloudEvent source
    sa.Column("event_id", sa.Text, primary_key=True),  # CloudEvent id
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.Text),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("invoice_id", sa.Text),
    sa.Column("transaction_id", sa.Text),
    sa.Column("invoice_status", sa.Text),
    sa.Column("amount_due", sa.BigInteger),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("recorded_at", UTCDateTime()),
    sa.Column("confirmation", sa.LargeBinary),
    sa.Column("last_error", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.CheckConstraint(
        "state IN ('in_progress', 'recorded', 'failed', 'dead_lettered')", name="ck_payrelay_ledger_state"
    ),
    sa.Index("ix_payrelay_ledger_updated_at", "updated_at"),
    sa.Index("ix_payrelay_ledger_invoice_id", "invoice_id"),
    sa.Index("ix_payrelay_ledger_event_id", "event_id"),
)

AUDIT = sa.Table(
    "payrelay_audit",
    METADATA,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime(), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("selector", sa.Text, nullable=False),
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
)

SCHEMA = sa.Table("payrelay_schema", METADATA, sa.Column("version", sa.Integer, primary_key=True))

# Statements are built once and executed with parameters, so SQLAlchemy compiles each only once.
_KEY = sa.and_(*(LEDGER.c[name] == sa.bindparam(name) for name in KEY_COLUMNS))
ROW = sa.select(LEDGER).where(_KEY)
TRANSACTION_ID = sa.select(LEDGER.c.transaction_id).where(_KEY)
_CLAIM_SETS = ("state", "owner", "lease_until", "generation", "updated_at")
_SUCCESS_SETS = (
    "state", "owner", "lease_until", "invoice_id", "transaction_id", "invoice_status",
    "amount_due", "amount", "currency", "recorded_at", "confirmation", "updated_at",
)  # fmt: skip
_FAILURE_SETS = ("state", "owner", "lease_until", "last_error", "reason", "updated_at")

Insert = postgresql.Insert | sqlite.Insert


@dataclass(frozen=True, slots=True)
class Upserts:
    """The `INSERT … ON CONFLICT DO UPDATE … WHERE` statements, in one dialect's construct.

    Each inserts the event if it is new, else updates it only where the WHERE allows, and
    returns a row exactly when it wrote: atomic on both databases, whatever runs concurrently.
    """

    claim: sa.Executable
    success: sa.Executable
    failure: sa.Executable

    @classmethod
    def build(cls, insert_into: Callable[[sa.Table], Insert]) -> Upserts:
        t = LEDGER
        claim = insert_into(t)
        new = claim.excluded
        takeable = sa.and_(
            t.c.state != "recorded",
            sa.or_(
                t.c.lease_until <= new.updated_at,
                t.c.owner == new.owner,
                t.c.state.in_(("failed", "dead_lettered")),
            ),
        )
        claim_sets = {
            **{name: new[name] for name in _CLAIM_SETS},
            "attempts": t.c.attempts + 1,
            "invoice_id": sa.func.coalesce(new.invoice_id, t.c.invoice_id),  # a replay may correct it
        }
        failure = insert_into(t)
        reported = sa.and_(
            t.c.state != "recorded",
            sa.or_(
                t.c.state != "in_progress",
                t.c.owner == sa.bindparam("reporter", type_=sa.Text),
                t.c.lease_until <= failure.excluded.updated_at,
            ),
        )
        success = insert_into(t)
        return cls(
            claim=_upsert(claim, claim_sets, takeable, t.c.attempts),
            success=_upsert(success, _excluded(success, _SUCCESS_SETS), t.c.state != "recorded", t.c.state),
            failure=_upsert(failure, _excluded(failure, _FAILURE_SETS), reported, t.c.state),
        )


def _excluded(insert: Insert, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: insert.excluded[name] for name in names}


def _upsert(
    insert: Insert, sets: dict[str, Any], where: sa.ColumnElement[bool], returning: sa.Column[Any]
) -> sa.Executable:
    return insert.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=sets, where=where).returning(
        returning
    )


def utc(value: datetime) -> datetime:
    """Callers' times as aware UTC; a naive one is ambiguous, so it is refused, not guessed."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the ledger needs timezone-aware times")
    return value.astimezone(UTC)
