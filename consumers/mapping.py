"""Inbound event -> Chargebee `record_payment` requests: which invoices, how much each, the forms. Pure.

An event is recorded as one or more parts, each one `record_payment` on one invoice with its own
ledger entry and idempotency key (SPEC §4): the whole payment on the invoice it names (or that
`invoice_pattern` finds in its text), or one part per allocation, or the amount shared among the
invoices its references name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import orjson

from service.event_data import INVOICE_ID, Payment
from service.ledger import WHOLE, EventKey
from service.settings import Settings

_MEMO_LIMIT = 300


@dataclass(frozen=True, slots=True)
class RecordPayment:
    """One `record_payment` call, independent of the API version."""

    invoice_id: str
    amount: int
    payment_method: str
    reference_number: str
    paid_at: int  # Unix seconds
    memo: str | None
    idempotency_key: str
    headers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Part:
    """One `record_payment` of an event: its ledger part, the invoice and the amount (minor units)."""

    name: str  # WHOLE for an event recorded on one invoice, else the invoice id
    invoice_id: str
    amount: int


Share = tuple[str, int]  # (invoice id, amount in minor units)


def parts_of(shares: Sequence[Share]) -> list[Part]:
    """One share is the whole event; several are parts named by their invoices."""
    if len(shares) == 1:
        invoice_id, amount = shares[0]
        return [Part(WHOLE, invoice_id, amount)]
    return [Part(invoice_id, invoice_id, amount) for invoice_id, amount in shares]


def named_shares(payment: Payment, pattern: str) -> list[Share] | None:
    """What the event itself says: its invoice_id, its allocations, or the pattern's match in its text.

    None when only its references (or nothing) could tell, which needs Chargebee's invoices.
    """
    if payment.allocations:
        return [(a.invoice_id, a.amount) for a in payment.allocations]
    if payment.invoice_id or not payment.references:
        invoice_id = find_invoice(payment, pattern)
        return None if invoice_id is None else [(invoice_id, payment.amount)]
    return None


def reference_ids(payment: Payment, limit: int = 10) -> list[str]:
    """The references that could be invoice ids, each once, in the order the remitter gave them."""
    seen: dict[str, None] = {}
    for reference in payment.references:
        candidate = reference.strip()
        if INVOICE_ID.match(candidate):
            seen.setdefault(candidate, None)
    return list(seen)[:limit]


def share(amount: int, candidates: Sequence[Share]) -> list[Share]:
    """Share `amount` among payable invoices (id, amount_due) in the order given (SPEC §4).

    Each takes up to its amount due; the last takes any remainder (an overpayment). Invoices the
    money does not reach get no share.
    """
    shares: list[Share] = []
    left = amount
    for index, (invoice_id, due) in enumerate(candidates):
        last = index == len(candidates) - 1
        taken = left if last else min(left, due)
        if taken > 0:
            shares.append((invoice_id, taken))
        left -= taken
    return shares


@lru_cache(maxsize=64)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def find_invoice(payment: Payment, pattern: str) -> str | None:
    """`invoice_id` if given, else the pattern's first group (or whole match) in remittance, then memo."""
    if payment.invoice_id:
        return payment.invoice_id
    regex = _compiled(pattern)
    for text in (payment.remittance_information, payment.memo):
        if not text:
            continue
        match = regex.search(text)
        if match:
            found = (match.group(1) if regex.groups else match.group(0)) or ""
            # A configured pattern may capture anything; only a well-formed id goes in a URL.
            if INVOICE_ID.match(found.strip()):
                return found.strip()
    return None


def idempotency_key(key: EventKey, generation: int, part: str = WHOLE) -> str:
    """Stable per payment (identity and part) and replay generation; Chargebee allows 100 chars."""
    # JSON keeps the parts apart whatever characters they hold; a whole event keeps the key it
    # has always had.
    named = list(key) if part == WHOLE else [*key, part]
    digest = hashlib.sha256(orjson.dumps(named)).hexdigest()[:48]
    return f"payrelay-{digest}-g{generation}"


def to_request(
    settings: Settings,
    key: EventKey,
    payment: Payment,
    invoice_id: str,
    generation: int,
    *,
    part: str = WHOLE,
    amount: int | None = None,
) -> RecordPayment:
    """The call for one part of an event (`amount` defaults to the whole payment)."""
    memo = payment.memo or payment.remittance_information
    return RecordPayment(
        invoice_id=invoice_id,
        amount=payment.amount if amount is None else amount,
        payment_method=payment.method,
        reference_number=payment.reference_number,
        paid_at=int(payment.paid_at.timestamp()),
        memo=memo[:_MEMO_LIMIT] if memo else None,
        idempotency_key=idempotency_key(key, generation, part),
        headers=settings.source(key[0]).skip_headers(),
    )


def form_fields(request: RecordPayment, api_version: str) -> dict[str, str]:
    """The form body: v1 (`amount`, `paid_at`, `memo`...) or v2 (`transaction[...]`, `comment`)."""
    if api_version == "v2":
        fields = {
            "transaction[amount]": str(request.amount),
            "transaction[payment_method]": request.payment_method,
            "transaction[reference_number]": request.reference_number,
            "transaction[date]": str(request.paid_at),
        }
        if request.memo:
            fields["comment"] = request.memo
        return fields
    fields = {
        "amount": str(request.amount),
        "payment_method": request.payment_method,
        "reference_number": request.reference_number,
        "paid_at": str(request.paid_at),
    }
    if request.memo:
        fields["memo"] = request.memo
    return fields
