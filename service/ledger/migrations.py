"""Bring a ledger created by an older payrelay up to this one's schema, in the caller's transaction.

Version 1 keyed the ledger by the event alone; version 2 keys it by (event, part), so one event
split over several invoices has a row per invoice, and adds the columns of reconciliation
(`reconcile`, `unreadable_200`, `key_first_used_at`) and of the outbox (`confirmed_at`). SQLite
cannot change a primary key in place, so the table is rebuilt on both databases: one path. The
rebuilt table is this payrelay's, so a version-1 ledger needs no later step.

Version 3 adds where each payment came from (`reference_number`, and `file_id`, `file_format`,
`file_entry` for an event made from a bank file), nullable and indexed for the ops lookup: added
in place (`ALTER TABLE … ADD COLUMN`, the same on both databases). Rows older than it have none.

Version 4 adds cash application's tables (reviews, matches, the payer map): new tables, which
`create_all` makes where they are missing; nothing older changes.
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service.ledger.tables import LEDGER, PROVENANCE_COLUMNS, SCHEMA, SCHEMA_VERSION

log = logging.getLogger("payrelay.ledger")

_V1_INDEXES = (
    "ix_payrelay_ledger_updated_at",
    "ix_payrelay_ledger_invoice_id",
    "ix_payrelay_ledger_event_id",
)
_V3_INDEXES = ("ix_payrelay_ledger_reference_number", "ix_payrelay_ledger_file_id")
_V1_COLUMNS = (
    "origin, source, event_id, state, owner, lease_until, attempts, generation, invoice_id, "
    "transaction_id, invoice_status, amount_due, amount, currency, recorded_at, confirmation, "
    "last_error, reason, created_at, updated_at"
)


async def migrate(conn: AsyncConnection) -> int | None:
    """Migrate to SCHEMA_VERSION; returns the version found, None for a database without a ledger."""
    exists = await conn.run_sync(lambda sync: sa.inspect(sync).has_table(SCHEMA.name))
    if not exists:
        return None
    version = await conn.scalar(sa.select(sa.func.max(SCHEMA.c.version)))
    if version is None:
        return None
    if version > SCHEMA_VERSION:
        raise RuntimeError(f"ledger schema is version {version}; this payrelay knows {SCHEMA_VERSION}")
    if version == 1:
        await _v1_to_v2(conn)  # rebuilt as LEDGER is now: version 3's columns included
    elif version == 2:
        await _v2_to_v3(conn)
    if version < SCHEMA_VERSION:
        await conn.execute(sa.update(SCHEMA).values(version=SCHEMA_VERSION))
        log.info("ledger schema migrated from version %d to %d", version, SCHEMA_VERSION)
    return int(version)


async def _v1_to_v2(conn: AsyncConnection) -> None:
    for index in _V1_INDEXES:
        await conn.execute(sa.text(f"DROP INDEX IF EXISTS {index}"))
    await conn.execute(sa.text("ALTER TABLE payrelay_ledger RENAME TO payrelay_ledger_v1"))
    if conn.dialect.name == "postgresql":
        # PostgreSQL names a primary key's index after its table, and index names are per schema.
        await conn.execute(
            sa.text("ALTER INDEX IF EXISTS payrelay_ledger_pkey RENAME TO payrelay_ledger_v1_pkey")
        )
    await conn.run_sync(LEDGER.create)
    # Rows not yet recorded have an unknown history (the key's first use was never stored): their
    # next attempt looks in Chargebee first. Recorded rows had their confirmations sent before
    # version 1 acknowledged the message.
    await conn.execute(
        sa.text(
            f"INSERT INTO payrelay_ledger ({_V1_COLUMNS}, part, reconcile, unreadable_200, confirmed_at) "
            f"SELECT {_V1_COLUMNS}, '', state <> 'recorded' AND attempts > 0, FALSE, "
            "CASE WHEN state = 'recorded' THEN recorded_at END FROM payrelay_ledger_v1"
        )
    )
    await conn.execute(sa.text("DROP TABLE payrelay_ledger_v1"))


async def _v2_to_v3(conn: AsyncConnection) -> None:
    for name in PROVENANCE_COLUMNS:
        await conn.execute(sa.text(f"ALTER TABLE payrelay_ledger ADD COLUMN {name} TEXT"))
    for index in LEDGER.indexes:
        if index.name in _V3_INDEXES:
            await conn.run_sync(index.create)
