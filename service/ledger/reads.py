"""The ledger's queries: entries, the outbox, plans, outcomes and the audit, as `Ledger` reads them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.records import (
    WHOLE,
    AuditRecord,
    Entry,
    Unconfirmed,
    event_values,
    key_values,
    to_audit_record,
    to_entry,
)
from service.ledger.review_tables import MATCHES
from service.ledger.tables import AUDIT, KEY_COLUMNS, LEDGER, PLAN, ROW, utc
from service.messages import EventKey


class Reads:
    """What `Ledger` reads, each on a connection of its own, outside the group writer."""

    _engine: AsyncEngine

    async def get(self, key: EventKey, part: str = WHOLE) -> Entry | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(ROW, key_values(key, part))).first()
        return None if row is None else to_entry(row)

    async def unconfirmed(self, *, older_than: float, limit: int = 500) -> list[Unconfirmed]:
        """Recorded payments whose confirmations are still to be sent, stored `older_than` seconds ago."""
        cutoff = datetime.now(UTC) - timedelta(seconds=older_than)
        query = (
            sa.select(*(LEDGER.c[n] for n in KEY_COLUMNS), LEDGER.c.confirmation)
            .where(LEDGER.c.state == "recorded", LEDGER.c.confirmed_at.is_(None))
            .where(LEDGER.c.updated_at <= cutoff)
            .order_by(LEDGER.c.updated_at)
            .limit(limit)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Unconfirmed((r.origin, r.source, r.event_id), r.part, r.confirmation) for r in rows]

    async def owned_elsewhere(self, transaction_ids: list[str], key: EventKey, part: str = WHOLE) -> set[str]:
        """Those of the Chargebee transactions that other payments of the ledger already hold."""
        if not transaction_ids:
            return set()
        mine = sa.and_(*(LEDGER.c[n] == v for n, v in key_values(key, part).items()))
        query = sa.select(LEDGER.c.transaction_id).where(
            LEDGER.c.transaction_id.in_(transaction_ids), sa.not_(mine)
        )
        async with self._engine.connect() as conn:
            return set((await conn.scalars(query)).all())

    async def stored_plan(self, key: EventKey) -> list[tuple[str, int]] | None:
        async with self._engine.connect() as conn:
            stored = await conn.scalar(PLAN, event_values(key))
        return None if stored is None else [(str(invoice), int(amount)) for invoice, amount in stored]

    async def stored_match(self, key: EventKey) -> tuple[dict[str, Any], bool] | None:
        """How the event's plan was matched (SPEC §10), and whether a person allowed an overpayment."""
        query = sa.select(MATCHES.c.match, MATCHES.c.allow_excess).where(
            *(MATCHES.c[name] == value for name, value in event_values(key).items())
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (dict(row.match), bool(row.allow_excess))

    async def find(
        self,
        *,
        invoice_id: str | None = None,
        event_id: str | None = None,
        reference_number: str | None = None,
        file_id: str | None = None,
        limit: int = 50,
    ) -> list[Entry]:
        """Entries matching every filter given, newest updated first (no filter: the most recent)."""
        filters = {
            "invoice_id": invoice_id,
            "event_id": event_id,
            "reference_number": reference_number,
            "file_id": file_id,
        }
        query = sa.select(LEDGER).where(
            *(LEDGER.c[name] == v for name, v in filters.items() if v is not None)
        )
        return await self._entries(query, limit)

    async def recent(self, limit: int = 50) -> list[Entry]:
        """The most recently updated entries, newest first."""
        return await self._entries(sa.select(LEDGER), limit)

    async def _entries(self, query: sa.Select[Any], limit: int) -> list[Entry]:
        ordered = query.order_by(LEDGER.c.updated_at.desc(), *(LEDGER.c[n] for n in KEY_COLUMNS)).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(ordered)).all()
        return [to_entry(row) for row in rows]

    async def outcomes_since(self, since: datetime) -> dict[tuple[str, str | None], int]:
        """(state, reason) → how many entries were last updated at or after `since`."""
        query = (
            sa.select(LEDGER.c.state, LEDGER.c.reason, sa.func.count())
            .where(LEDGER.c.updated_at >= utc(since))
            .group_by(LEDGER.c.state, LEDGER.c.reason)
        )
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return {(state, reason): count for state, reason, count in rows}

    async def audit(self, limit: int = 100) -> list[AuditRecord]:
        """The latest audit records, newest first."""
        query = sa.select(AUDIT).order_by(AUDIT.c.id.desc()).limit(limit)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [to_audit_record(row) for row in rows]
