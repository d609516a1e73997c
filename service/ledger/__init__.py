"""The payment ledger (each payment's Chargebee outcome, keyed by its event and part) and the audit.

The consumer claims a payment here before calling Chargebee, so a duplicate delivered days later
— a bank retry, a redelivery, a replay — finds it recorded and calls nothing (SPEC §4). An event
recorded on one invoice is one payment (part ""); one split over several invoices is a payment
per invoice (part = the invoice id), each claimed and recorded on its own. The ledger also keeps
what reconciliation needs (did an earlier attempt perhaps reach Chargebee? when was this
idempotency key first sent?), each split event's plan, and the outbox of confirmations not yet
confirmed by the broker. Replays and purges are appended to the audit (SPEC §6).

One SQLAlchemy Core code path serves SQLite (aiosqlite, the embedded default) and PostgreSQL
(asyncpg, several consumer replicas); the only dialect branches are connection setup, the
dialect's `INSERT … ON CONFLICT` construct, a lock that keeps replicas from creating the tables
twice at start, and one index rename in the migration from version 1.

A claim is one `INSERT … ON CONFLICT DO UPDATE … WHERE <takeable> RETURNING` statement: atomic on
both databases, so exactly one of any number of concurrent claimers across processes wins.
Leases compare the claimers' wall clocks; keep them synchronised and leases much longer than skew.

Modules: `tables` (schema, column types, upserts), `records` (what the ledger hands out),
`engine` (URLs and connection setup), `migrations` (older schemas), `writer` (group commit),
`reads` (the queries), `store` (`Ledger`).
"""

from service.ledger.engine import async_url
from service.ledger.records import (
    WHOLE,
    AuditRecord,
    Claim,
    Entry,
    History,
    Provenance,
    Recorded,
    Unconfirmed,
)
from service.ledger.store import Ledger
from service.messages import EventKey

__all__ = [
    "WHOLE",
    "AuditRecord",
    "Claim",
    "Entry",
    "EventKey",
    "History",
    "Ledger",
    "Provenance",
    "Recorded",
    "Unconfirmed",
    "async_url",
]
