"""Inbound event -> Chargebee `record_payment` request: invoice matching and form fields. Pure."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from functools import lru_cache

import orjson

from service.events import INVOICE_ID, Payment
from service.ledger import EventKey
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


def idempotency_key(key: EventKey, generation: int) -> str:
    """Stable per event identity and replay generation; Chargebee keys are at most 100 chars."""
    # JSON keeps the three parts apart whatever characters they hold.
    digest = hashlib.sha256(orjson.dumps(list(key))).hexdigest()[:48]
    return f"payrelay-{digest}-g{generation}"


def skip_headers(settings: Settings, origin: str) -> dict[str, str]:
    """The chargebee-event-* headers, from the global settings overridden per source."""
    source = settings.sources.get(origin)
    flags = {
        "chargebee-event-email": settings.skip_emails,
        "chargebee-event-webhook": settings.skip_webhooks,
        "chargebee-event-actions": settings.skip_actions,
    }
    if source is not None:
        overrides = {
            "chargebee-event-email": source.skip_emails,
            "chargebee-event-webhook": source.skip_webhooks,
            "chargebee-event-actions": source.skip_actions,
        }
        flags |= {k: v for k, v in overrides.items() if v is not None}
    return {header: "all-disabled" for header, on in flags.items() if on}


def invoice_pattern(settings: Settings, origin: str) -> str:
    source = settings.sources.get(origin)
    return (
        source.invoice_pattern if source is not None and source.invoice_pattern else settings.invoice_pattern
    )


def to_request(
    settings: Settings, key: EventKey, payment: Payment, invoice_id: str, generation: int
) -> RecordPayment:
    memo = payment.memo or payment.remittance_information
    return RecordPayment(
        invoice_id=invoice_id,
        amount=payment.amount,
        payment_method=payment.method,
        reference_number=payment.reference_number,
        paid_at=int(payment.paid_at.timestamp()),
        memo=memo[:_MEMO_LIMIT] if memo else None,
        idempotency_key=idempotency_key(key, generation),
        headers=skip_headers(settings, key[0]),
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
