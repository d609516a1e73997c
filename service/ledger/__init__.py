"""The payment ledger (each event's Chargebee outcome, keyed by its identity) and the append-only audit.

The consumer claims an event here before calling Chargebee, so a duplicate delivered days later
— a bank retry, a redelivery, a replay — finds it recorded and calls nothing (SPEC §4). Replays
and purges are appended to the audit (SPEC §6). One SQLAlchemy Core code path serves SQLite
(aiosqlite, the embedded default) and PostgreSQL (asyncpg, several consumer replicas); the only
dialect branches are connection setup, the dialect's `INSERT … ON CONFLICT` construct, and a lock
that keeps replicas from creating the tables twice at start.

A claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE <takeable> RETURNING` statement: atomic on
both databases, so exactly one of any number of concurrent claimers across processes wins.
Leases compare the claimers' wall clocks; keep them synchronised and leases much longer than skew.

Modules: `tables` (schema, column types, upserts), `records` (what the ledger hands out),
`engine` (URLs and connection setup), `store` (`Ledger`, with its group-commit writer).
"""

from service.ledger.engine import async_url
from service.ledger.records import AuditRecord, Claim, Entry, EventKey, Recorded
from service.ledger.store import Ledger

__all__ = [
    "AuditRecord",
    "Claim",
    "Entry",
    "EventKey",
    "Ledger",
    "Recorded",
    "async_url",
]
