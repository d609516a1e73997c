"""The AMQP vocabulary payrelay's processes share: the event identity, `x-payrelay-*` headers, readers. Pure.

An event's identity is (configured source it came in through, CloudEvent `source`, CloudEvent
`id`), SPEC §2: the receiver deduplicates quick repeats by it, the ledger keys payments by it,
confirmations and idempotency keys are derived from it.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final

EventKey = tuple[str, str, str]  # (configured source, CloudEvent source, CloudEvent id)


def identity(origin: str, source: str, event_id: str) -> EventKey:
    """The identity of an event that came in through `origin` (a configured source)."""
    return (origin, source, event_id)


SOURCE: Final = "x-payrelay-source"  # the configured source an event came in through
ATTEMPTS: Final = "x-payrelay-attempts"  # Chargebee attempts made for this message so far
GENERATION: Final = "x-payrelay-generation"  # replays so far: part of the idempotency key
LAST_ERROR: Final = "x-payrelay-last-error"
REASON: Final = "x-payrelay-reason"
ERROR: Final = "x-payrelay-error"
FAILED_AT: Final = "x-payrelay-failed-at"
CHARGEBEE_ERROR: Final = "x-payrelay-chargebee-error"
# The invoice a dead-lettered payment was for, when the event did not name it (found in the
# remittance text, or a share of a split payment): people and `--invoice` filters see it.
INVOICE: Final = "x-payrelay-invoice"
# Stamped by a replay (SPEC §6).
REPLAYED_AT: Final = "x-payrelay-replayed-at"
REPLAYED_BY: Final = "x-payrelay-replayed-by"
PREVIOUS_REASON: Final = "x-payrelay-previous-reason"
EDITS: Final = "x-payrelay-edits"
ORIGINAL: Final = "x-payrelay-original"
TRACEPARENT: Final = "traceparent"

# Every value of x-payrelay-reason (SPEC §6): the consumer's, and RabbitMQ's own.
DEAD_LETTER_REASONS: Final = (
    "invalid_event",
    "unmatched_invoice",
    "invoice_not_found",
    "invoice_not_payable",
    "currency_mismatch",
    "overpayment",  # no longer made (overpayment = "review" goes to review); letters kept may have it
    "rejected_by_chargebee",
    "retries_exhausted",
    "outcome_unknown",
    "delivery_limit_exceeded",
)


def text(headers: dict[str, Any], name: str) -> str | None:
    """A header as text (AMQP tables carry long strings as bytes), or None."""
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def count(headers: dict[str, Any], name: str) -> int:
    """A non-negative counter header; missing or malformed is 0."""
    try:
        return max(0, int(text(headers, name) or 0))
    except ValueError:
        return 0


def rfc3339(moment: datetime) -> str:
    """An aware time as RFC 3339 in UTC with a `Z`."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
