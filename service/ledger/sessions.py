"""Ops sessions in the ledger database: any replica of the ops app serves any signed-in operator."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.ledger.letters import Transaction
from service.ledger.tables import SESSIONS, utc


class SessionTable:
    """Sessions by the SHA-256 of their id; `ledger.sessions` is one."""

    def __init__(self, engine: AsyncEngine, transaction: Transaction) -> None:
        self._engine = engine
        self._transaction = transaction

    async def put(self, digest: str, name: str, csrf: str, expires_at: datetime, now: datetime) -> None:
        """Keep a new session, and forget the ones that have expired."""
        async with self._transaction() as conn:
            await conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.expires_at <= utc(now)))
            await conn.execute(
                SESSIONS.insert().values(digest=digest, name=name, csrf=csrf, expires_at=utc(expires_at))
            )

    async def get(self, digest: str, now: datetime) -> tuple[str, str] | None:
        """(name, CSRF token) of a session that has not expired, else None."""
        query = sa.select(SESSIONS.c.name, SESSIONS.c.csrf).where(
            SESSIONS.c.digest == digest, SESSIONS.c.expires_at > utc(now)
        )
        async with self._engine.connect() as conn:
            row = (await conn.execute(query)).first()
        return None if row is None else (row.name, row.csrf)

    async def drop(self, digest: str) -> None:
        async with self._transaction() as conn:
            await conn.execute(sa.delete(SESSIONS).where(SESSIONS.c.digest == digest))
