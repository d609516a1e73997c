"""The ledger's tables and column types, and the dialect's upsert statements built once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Dialect

SCHEMA_VERSION = 4


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
EVENT_COLUMNS = ("origin", "source", "event_id")
# One row per payment: an event recorded on one invoice has part "", an event split over several
# invoices (SPEC §4 allocations) has one row per invoice, its part being the invoice id.
KEY_COLUMNS = (*EVENT_COLUMNS, "part")
# Where a payment came from, kept from the first claim that knew it (version 3): the reference
# number it carried and, for an event made from a bank file (SPEC §9), the file, format and entry.
PROVENANCE_COLUMNS = ("reference_number", "file_id", "file_format", "file_entry")

LEDGER = sa.Table(
    "payrelay_ledger",
    METADATA,
    sa.Column("origin", sa.Text, primary_key=True),  # the configured source it came in through
    sa.Column("source", sa.Text, primary_key=True),  # CloudEvent source
    sa.Column("event_id", sa.Text, primary_key=True),  # CloudEvent id
    sa.Column("part", sa.Text, primary_key=True, server_default=""),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.Text),
    sa.Column("lease_until", UTCDateTime()),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    # When this generation's idempotency key was first sent: Chargebee forgets it after 30 minutes.
    sa.Column("key_first_used_at", UTCDateTime()),
    # An earlier attempt may have been recorded by Chargebee (its answer was lost, a 5xx, a crash
    # mid-call, or this is a replay): look for the payment there before calling again.
    sa.Column("reconcile", sa.Boolean, nullable=False, server_default=sa.false()),
    # Chargebee answered 200 and payrelay could not read it: not finding the payment is a puzzle
    # for a person (outcome_unknown), not a reason to send it again.
    sa.Column("unreadable_200", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("invoice_id", sa.Text),
    sa.Column("transaction_id", sa.Text),
    sa.Column("invoice_status", sa.Text),
    sa.Column("amount_due", sa.BigInteger),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("recorded_at", UTCDateTime()),
    sa.Column("confirmation", sa.LargeBinary),
    # The outbox: set once the confirmations of a recorded payment are confirmed by the broker.
    sa.Column("confirmed_at", UTCDateTime()),
    sa.Column("last_error", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    *(sa.Column(name, sa.Text) for name in PROVENANCE_COLUMNS),
    sa.CheckConstraint(
        "state IN ('in_progress', 'recorded', 'failed', 'dead_lettered')", name="ck_payrelay_ledger_state"
    ),
    sa.Index("ix_payrelay_ledger_updated_at", "updated_at"),
    sa.Index("ix_payrelay_ledger_invoice_id", "invoice_id"),
    sa.Index("ix_payrelay_ledger_event_id", "event_id"),
    sa.Index("ix_payrelay_ledger_transaction_id", "transaction_id"),
    sa.Index("ix_payrelay_ledger_reference_number", "reference_number"),
    sa.Index("ix_payrelay_ledger_file_id", "file_id"),
    # Only unconfirmed payments are in this index, so the outbox drainer's scan stays small.
    sa.Index(
        "ix_payrelay_ledger_unconfirmed",
        "updated_at",
        sqlite_where=sa.text("state = 'recorded' AND confirmed_at IS NULL"),
        postgresql_where=sa.text("state = 'recorded' AND confirmed_at IS NULL"),
    ),
)

# How an event that names no invoice itself is shared among invoices, decided once (from the
# invoices as they were then) and kept, so that a retry never splits it differently.
PLANS = sa.Table(
    "payrelay_plans",
    METADATA,
    sa.Column("origin", sa.Text, primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("event_id", sa.Text, primary_key=True),
    sa.Column("plan", sa.JSON, nullable=False),  # [[invoice_id, amount], ...]
    sa.Column("created_at", UTCDateTime(), nullable=False),
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

# Dead letters, kept here by the keeper (SPEC §6): the queue only carries them. A letter is never
# changed but for its state; `digest` (of the AMQP message as the consumer wrote it) makes a letter
# taken in twice, after a crash between commit and ack, one row. `queue` is the dead-letter queue
# it came from: deployments (prefixes) sharing a database each see and replay their own.
LETTERS = sa.Table(
    "payrelay_dead_letters",
    METADATA,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("queue", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("origin", sa.Text),
    sa.Column("source", sa.Text),
    sa.Column("type", sa.Text),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("invoice_id", sa.Text),
    sa.Column("failed_at", UTCDateTime()),  # None when the header is missing or unreadable
    sa.Column("headers", sa.JSON, nullable=False),
    sa.Column("body", sa.LargeBinary),  # removed once a purged letter is past the retention period
    sa.Column("content_type", sa.Text),
    sa.Column("message_type", sa.Text),
    sa.Column("stored_at", UTCDateTime(), nullable=False),
    sa.Column("state", sa.String(16), nullable=False, server_default="dead"),
    sa.Column("settled_at", UTCDateTime()),
    sa.Column("settled_by", sa.Text),
    sa.Column("audit_id", sa.Integer),
    sa.UniqueConstraint("queue", "digest", name="uq_payrelay_dead_letters_digest"),
    sa.CheckConstraint("state IN ('dead', 'replayed', 'purged')", name="ck_payrelay_dead_letters_state"),
    sa.Index("ix_payrelay_dead_letters_reason", "queue", "state", "reason"),
    sa.Index("ix_payrelay_dead_letters_origin", "queue", "state", "origin"),
    sa.Index("ix_payrelay_dead_letters_failed_at", "queue", "state", "failed_at"),
    sa.Index("ix_payrelay_dead_letters_invoice_id", "invoice_id"),
    sa.Index("ix_payrelay_dead_letters_event_id", "event_id"),
)

# Signed-in ops sessions, so that any replica of the ops app serves any operator. The session id
# itself is never stored: only its SHA-256, as the cookie's value is a bearer credential.
SESSIONS = sa.Table(
    "payrelay_ops_sessions",
    METADATA,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("csrf", sa.Text, nullable=False),
    sa.Column("expires_at", UTCDateTime(), nullable=False),
    sa.Index("ix_payrelay_ops_sessions_expires_at", "expires_at"),
)

SCHEMA = sa.Table("payrelay_schema", METADATA, sa.Column("version", sa.Integer, primary_key=True))

# Statements are built once and executed with parameters, so SQLAlchemy compiles each only once.
_KEY = sa.and_(*(LEDGER.c[name] == sa.bindparam(name) for name in KEY_COLUMNS))
ROW = sa.select(LEDGER).where(_KEY)
TRANSACTION_ID = sa.select(LEDGER.c.transaction_id).where(_KEY)
# An UPDATE may not bind parameters named like its columns: its key parameters are `k_<column>`.
_UPDATE_KEY = sa.and_(*(LEDGER.c[name] == sa.bindparam(f"k_{name}") for name in KEY_COLUMNS))
RENEW = (
    sa.update(LEDGER)
    .where(_UPDATE_KEY, LEDGER.c.state == "in_progress", LEDGER.c.owner == sa.bindparam("holder"))
    .values(lease_until=sa.bindparam("until"), updated_at=sa.bindparam("now"))
)
CONFIRMED = (
    sa.update(LEDGER)
    .where(_UPDATE_KEY, LEDGER.c.state == "recorded", LEDGER.c.confirmed_at.is_(None))
    .values(confirmed_at=sa.bindparam("now"))
)
_PLAN_KEY = sa.and_(*(PLANS.c[name] == sa.bindparam(name) for name in EVENT_COLUMNS))
PLAN = sa.select(PLANS.c.plan).where(_PLAN_KEY)
_CLAIM_SETS = ("state", "owner", "lease_until", "generation", "updated_at")
_SUCCESS_SETS = (
    "state", "owner", "lease_until", "invoice_id", "transaction_id", "invoice_status",
    "amount_due", "amount", "currency", "recorded_at", "confirmation", "confirmed_at", "updated_at",
)  # fmt: skip
_FAILURE_SETS = ("state", "owner", "lease_until", "last_error", "reason", "updated_at")
CLAIM_RETURNS = ("attempts", "reconcile", "unreadable_200", "key_first_used_at")

Insert = postgresql.Insert | sqlite.Insert


@dataclass(frozen=True, slots=True)
class Upserts:
    """The `INSERT … ON CONFLICT` statements, in one dialect's construct.

    Each inserts the row if it is new, else updates it only where the WHERE allows, and returns a
    row exactly when it wrote: atomic on both databases, whatever runs concurrently.
    """

    claim: sa.Executable
    success: sa.Executable
    failure: sa.Executable
    plan: sa.Executable
    letter: sa.Executable

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
        same_key = t.c.generation == new.generation
        claim_sets = {
            **{name: new[name] for name in _CLAIM_SETS},
            "attempts": t.c.attempts + 1,
            "invoice_id": sa.func.coalesce(new.invoice_id, t.c.invoice_id),  # a replay may correct it
            # The first claim's story stays: the same transaction in a later file is the same payment.
            **{name: sa.func.coalesce(t.c[name], new[name]) for name in PROVENANCE_COLUMNS},
            # Taking over a lapsed lease: its holder may have called Chargebee and died. A new
            # generation is a replay: what happened before it is not known here.
            "reconcile": sa.or_(
                t.c.reconcile,
                sa.and_(t.c.state == "in_progress", t.c.owner != new.owner),
                sa.and_(new.generation > 0, sa.not_(same_key)),
            ),
            "key_first_used_at": sa.case(
                (same_key, sa.func.coalesce(t.c.key_first_used_at, new.key_first_used_at)),
                else_=new.key_first_used_at,
            ),
            # A replay is a person's decision after outcome_unknown: not finding it then means send.
            "unreadable_200": sa.and_(t.c.unreadable_200, same_key),
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
        failure_sets = {
            **_excluded(failure, _FAILURE_SETS),
            "reconcile": sa.or_(t.c.reconcile, failure.excluded.reconcile),
            "unreadable_200": sa.or_(t.c.unreadable_200, failure.excluded.unreadable_200),
        }
        success = insert_into(t)
        plan = insert_into(PLANS).on_conflict_do_nothing(index_elements=list(EVENT_COLUMNS))
        letter = insert_into(LETTERS).on_conflict_do_nothing(index_elements=["queue", "digest"])
        return cls(
            claim=_upsert(claim, claim_sets, takeable, *(t.c[name] for name in CLAIM_RETURNS)),
            success=_upsert(success, _excluded(success, _SUCCESS_SETS), t.c.state != "recorded", t.c.state),
            failure=_upsert(failure, failure_sets, reported, t.c.state),
            plan=plan,
            letter=letter,
        )


def _excluded(insert: Insert, names: tuple[str, ...]) -> dict[str, Any]:
    return {name: insert.excluded[name] for name in names}


def _upsert(
    insert: Insert, sets: dict[str, Any], where: sa.ColumnElement[bool], *returning: sa.Column[Any]
) -> sa.Executable:
    return insert.on_conflict_do_update(index_elements=list(KEY_COLUMNS), set_=sets, where=where).returning(
        *returning
    )


def utc(value: datetime) -> datetime:
    """Callers' times as aware UTC; a naive one is ambiguous, so it is refused, not guessed."""
    if value.tzinfo is None:
        raise ValueError(f"naive datetime {value.isoformat()}: the ledger needs timezone-aware times")
    return value.astimezone(UTC)
