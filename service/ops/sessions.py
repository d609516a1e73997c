"""Where signed-in sessions are kept: the ledger database (any replica serves any operator), or
memory before the ledger is open and in tests.

A session id is a random 256-bit bearer credential sent as the cookie; only its SHA-256 is kept,
with the operator's name, a CSRF token and the expiry.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from service.ledger import Ledger

SESSION_LIFETIME = timedelta(hours=12)
MAX_MEMORY_SESSIONS = 1000


@dataclass(frozen=True, slots=True)
class Session:
    name: str
    csrf: str


def digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


class Sessions(Protocol):
    async def create(self, name: str) -> str: ...

    async def get(self, session_id: str) -> Session | None: ...

    async def drop(self, session_id: str) -> None: ...


class MemorySessions:
    """One process's sessions; a restart signs everyone out."""

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[Session, datetime]] = {}

    async def create(self, name: str) -> str:
        now = datetime.now(UTC)
        self._sessions = {k: v for k, v in self._sessions.items() if v[1] > now}
        while len(self._sessions) >= MAX_MEMORY_SESSIONS:  # oldest first: dicts keep insertion order
            del self._sessions[next(iter(self._sessions))]
        session_id = secrets.token_urlsafe(32)
        self._sessions[digest(session_id)] = (
            Session(name, secrets.token_urlsafe(32)),
            now + SESSION_LIFETIME,
        )
        return session_id

    async def get(self, session_id: str) -> Session | None:
        found = self._sessions.get(digest(session_id))
        if found is None or found[1] <= datetime.now(UTC):
            return None
        return found[0]

    async def drop(self, session_id: str) -> None:
        self._sessions.pop(digest(session_id), None)


class LedgerSessions:
    """Sessions in the ledger database, shared by every replica of the ops app."""

    def __init__(self, ledger: Ledger) -> None:
        self.table = ledger.sessions

    async def create(self, name: str) -> str:
        now = datetime.now(UTC)
        session_id = secrets.token_urlsafe(32)
        await self.table.put(digest(session_id), name, secrets.token_urlsafe(32), now + SESSION_LIFETIME, now)
        return session_id

    async def get(self, session_id: str) -> Session | None:
        found = await self.table.get(digest(session_id), datetime.now(UTC))
        return None if found is None else Session(*found)

    async def drop(self, session_id: str) -> None:
        await self.table.drop(digest(session_id))
