"""What the ledger hands out: frozen records of its rows and audit, and the row conversions."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from service.ledger.tables import EVENT_COLUMNS
from service.messages import EventKey, rfc3339

WHOLE = ""  # the part of an event recorded on one invoice; a split event's parts are invoice ids


@dataclass(frozen=True, slots=True)
class Recorded:
    """What Chargebee answered when it recorded the payment."""

    transaction_id: str
    invoice_id: str
    invoice_status: str
    amount_due: int
    amount: int
    currency: str
    recorded_at: datetime  # aware UTC
    confirmation: bytes  # the consumer's confirmations payload, republished for duplicates


@dataclass(frozen=True, slots=True)
class History:
    """What the ledger knows of a claimed payment's earlier attempts."""

    reconcile: bool  # an earlier attempt may have been recorded: look in Chargebee first
    unreadable_200: bool  # Chargebee said 200 to an earlier attempt and the answer was unreadable
    key_first_used_at: datetime  # when this generation's idempotency key was first sent


@dataclass(frozen=True, slots=True)
class Claim:
    status: Literal["claimed", "recorded", "busy"]
    attempts: int  # attempts so far, this one included when claimed
    recorded: Recorded | None = None  # set when status == "recorded"
    history: History | None = field(default=None, compare=False)  # set when status == "claimed"


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a payment came from, stored by its first claim and never changed by a later one.

    The reference number its event carried (`bank_reference`, `check_number`) and, for an event
    made from a bank file (SPEC §9), the file's id, its format and where in it the entry was.
    """

    reference_number: str | None = None
    file_id: str | None = None
    file_format: str | None = None
    file_entry: str | None = None


NO_PROVENANCE = Provenance()


@dataclass(frozen=True, slots=True)
class Entry:
    """A ledger row, for the ops app and the CLI."""

    key: EventKey
    part: str
    state: str
    invoice_id: str | None
    attempts: int
    transaction_id: str | None
    invoice_status: str | None
    last_error: str | None
    reason: str | None
    created_at: datetime
    updated_at: datetime
    generation: int
    reconcile: bool
    confirmed_at: datetime | None
    amount: int | None = None  # minor units, once Chargebee has recorded it
    currency: str | None = None
    reference_number: str | None = None  # the Provenance, None for rows older than schema v3
    file_id: str | None = None
    file_format: str | None = None
    file_entry: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON of the ops API's ledger rows (the overview's recent outcomes, an event's story)."""
        origin, source, event_id = self.key
        return {
            "origin": origin,
            "source": source,
            "event_id": event_id,
            "state": self.state,
            "invoice_id": self.invoice_id,
            "attempts": self.attempts,
            "transaction_id": self.transaction_id,
            "invoice_status": self.invoice_status,
            "last_error": self.last_error,
            "reason": self.reason,
            "generation": self.generation,
            "amount": self.amount,
            "currency": self.currency,
            "created_at": rfc3339(self.created_at),
            "updated_at": rfc3339(self.updated_at),
            "reference_number": self.reference_number,
            "file": None
            if self.file_id is None
            else {"id": self.file_id, "format": self.file_format, "entry": self.file_entry},
        }


@dataclass(frozen=True, slots=True)
class Unconfirmed:
    """A recorded payment whose confirmations the broker has not confirmed yet (the outbox)."""

    key: EventKey
    part: str
    confirmation: bytes


@dataclass(frozen=True, slots=True)
class AuditRecord:
    id: int
    at: datetime
    actor: str
    action: str
    selector: str
    count: int
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `dlq audit --json` and of the ops API's audit."""
        return {
            "id": self.id,
            "at": rfc3339(self.at),
            "actor": self.actor,
            "action": self.action,
            "selector": self.selector,
            "count": self.count,
            "details": self.details,
        }


def key_values(key: EventKey, part: str = WHOLE) -> dict[str, str]:
    return {**dict(zip(EVENT_COLUMNS, key, strict=True)), "part": part}


def update_key_values(key: EventKey, part: str = WHOLE) -> dict[str, str]:
    """The key as an UPDATE's parameters (`k_<column>`: an UPDATE may not reuse column names)."""
    return {f"k_{name}": value for name, value in key_values(key, part).items()}


def event_values(key: EventKey) -> dict[str, str]:
    return dict(zip(EVENT_COLUMNS, key, strict=True))


def to_entry(row: sa.Row[Any]) -> Entry:
    columns = row._mapping
    key = (row.origin, row.source, row.event_id)
    return Entry(key=key, **{f.name: columns[f.name] for f in fields(Entry) if f.name != "key"})


def to_recorded(row: sa.Row[Any]) -> Recorded:
    return Recorded(**{f.name: row._mapping[f.name] for f in fields(Recorded)})


def to_audit_record(row: sa.Row[Any]) -> AuditRecord:
    return AuditRecord(**row._mapping)
