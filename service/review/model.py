"""What a review item is (SPEC §10): a payment waiting for a person, with its suggestions. Pure.

An item is made by the consumer when cash application cannot apply a payment on its own (no
payer, no amount that fits, rivals too close, a score under `auto_threshold`, or an overpayment
with `overpayment = "review"`), kept in the ledger database until someone decides, and decided
once: `accept` a suggestion, `assign` invoices and amounts by hand, or `reject` it to the
dead-letter queue as `unmatched_invoice`. The decision is stored with the event's plan in one
transaction, then the event goes back to the work queue (or, rejected, to the dead letters).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from service.messages import EventKey, rfc3339
from service.money import to_major_string

STATES: Final = ("open", "accepted", "assigned", "rejected")
DECIDED: Final = frozenset({"accepted", "assigned", "rejected"})
MAX_SUGGESTIONS: Final = 3

# Why an item is in review, for people and for the `why` filter.
WHY: Final = {
    "no_payer": "no Chargebee customer could be found for the payer",
    "no_invoices": "the customer has no open invoice in the payment's currency",
    "no_amount": "no open invoice or set of invoices adds up to the amount",
    "low_score": "the best suggestion scores under matching.auto_threshold",
    "rivals": "two suggestions are too close to tell apart",
    "overpayment": 'the payment is more than the invoice\'s amount due (overpayment = "review")',
    "changed": "the invoices changed while the payment was being matched",
}


@dataclass(frozen=True, slots=True)
class Allocation:
    invoice_id: str
    amount: int  # minor units

    def as_json(self, currency: str) -> dict[str, str]:
        return {"invoice_id": self.invoice_id, "amount": to_major_string(self.amount, currency)}


@dataclass(frozen=True, slots=True)
class Suggestion:
    """Where the money could go, how sure payrelay is (0-1), and why."""

    allocations: tuple[Allocation, ...]
    score: float
    reasons: tuple[str, ...]
    method: str  # exact_amount, sum_of_N, short_payment, over_payment, overpayment, ...

    def as_json(self, currency: str) -> dict[str, Any]:
        return {
            "allocations": [a.as_json(currency) for a in self.allocations],
            "score": self.score,
            "reasons": list(self.reasons),
            "method": self.method,
        }

    def match(self) -> dict[str, Any]:
        """What confirmations carry as `match` (SPEC §5)."""
        return {"method": self.method, "score": self.score, "reasons": list(self.reasons)}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> Suggestion:
        """From the ledger's stored form (minor units), see `stored`."""
        return cls(
            allocations=tuple(Allocation(str(i), int(a)) for i, a in value["allocations"]),
            score=float(value["score"]),
            reasons=tuple(str(r) for r in value["reasons"]),
            method=str(value["method"]),
        )

    def stored(self) -> dict[str, Any]:
        return {
            "allocations": [[a.invoice_id, a.amount] for a in self.allocations],
            "score": self.score,
            "reasons": list(self.reasons),
            "method": self.method,
        }


@dataclass(frozen=True, slots=True)
class NewReview:
    """What the consumer hands the ledger: the event, its message headers and the suggestions."""

    key: EventKey
    event: dict[str, Any]  # the inbound CloudEvent as received
    headers: dict[str, Any]  # the message's x-payrelay-* and traceparent headers, for the re-queue
    amount: int
    currency: str
    why: str  # a key of WHY
    suggestions: tuple[Suggestion, ...]
    customer_id: str | None = None
    payer: str | None = None  # the payer's name as the bank gave it (never an account number)
    named: tuple[Allocation, ...] = ()  # the event's own invoices (an overpayment of named ones)
    teach: tuple[tuple[str, str], ...] = ()  # (kind, value) the payer map learns from a decision


@dataclass(frozen=True, slots=True)
class ReviewItem:
    id: str
    key: EventKey
    event: dict[str, Any]
    headers: dict[str, Any]
    amount: int
    currency: str
    why: str
    suggestions: tuple[Suggestion, ...]
    customer_id: str | None
    payer: str | None
    named: tuple[Allocation, ...]
    state: str
    created_at: datetime
    decided_at: datetime | None = None
    decided_by: str | None = None
    decision: dict[str, Any] | None = None  # {"allocations": [[id, minor]...], "match": {...}}
    problem: str | None = None  # why the last decision was refused (the item stays open)
    queued_at: datetime | None = None  # when the decided event went back to a queue
    version: int = 0
    teach: tuple[tuple[str, str], ...] = ()  # (kind, value) a decision teaches the payer map

    @property
    def origin(self) -> str:
        return self.key[0]

    @property
    def is_open(self) -> bool:
        return self.state == "open"

    def as_json(self) -> dict[str, Any]:
        """The item as SPEC §10 names it (amounts as decimal strings in major units)."""
        body: dict[str, Any] = {
            "id": self.id,
            "state": self.state,
            "origin": self.origin,
            "source": self.key[1],
            "event_id": self.key[2],
            "type": self.event.get("type"),
            "amount": to_major_string(self.amount, self.currency),
            "currency": self.currency,
            "created_at": rfc3339(self.created_at),
            "why": self.why,
            "why_text": WHY.get(self.why, self.why),
            "customer_id": self.customer_id,
            "payer": self.payer,
            "suggestions": [s.as_json(self.currency) for s in self.suggestions],
            "event": self.event,
            "decided_at": rfc3339(self.decided_at) if self.decided_at else None,
            "decided_by": self.decided_by,
            "decision": self._decision_json(),
            "problem": self.problem,
        }
        return body

    def _decision_json(self) -> dict[str, Any] | None:
        if self.decision is None:
            return None
        allocations = [
            {"invoice_id": i, "amount": to_major_string(int(a), self.currency)}
            for i, a in self.decision.get("allocations", [])
        ]
        return {**self.decision, "allocations": allocations}


class ReviewError(Exception):
    """Base of what a decision can be refused with; the message is one line for people."""

    status = 422


class NotFound(ReviewError):
    status = 404


class Conflict(ReviewError):
    """Someone else decided the item first; `item` is it as they left it."""

    status = 409

    def __init__(self, message: str, item: ReviewItem) -> None:
        super().__init__(message)
        self.item = item


class Refused(ReviewError):
    """The decision cannot be carried out (amounts, currency, an invoice paid meanwhile)."""

    status = 422


class Unavailable(ReviewError):
    """Chargebee or the broker cannot be reached now: nothing was decided, try again."""

    status = 503
