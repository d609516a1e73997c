"""Inbound events for tests: fixed ones for pure unit tests, fresh ones for the running pipeline."""

from __future__ import annotations

from typing import Any

from service.sender import example_event


def deposit(*, id: str = "evt-1", source: str = "urn:acme:core", **data: Any) -> dict[str, Any]:
    """A fixed bank.deposit, 1,250.00 USD booked 2026-11-25 10:00Z, reference BR-778; `data` overrides."""
    body = {
        "amount": "1250.00",
        "currency": "USD",
        "booked_at": "2026-11-25T10:00:00Z",
        "bank_reference": "BR-778",
    }
    return {"specversion": "1.0", "id": id, "source": source, "type": "bank.deposit", "data": body | data}


def check(*, id: str = "evt-2", source: str = "urn:acme:lockbox", **data: Any) -> dict[str, Any]:
    """A fixed check.scan of 80.00 USD scanned 2026-11-25T10:00:00Z, check 10442; `data` overrides."""
    body = {
        "amount": "80.00",
        "currency": "USD",
        "scanned_at": "2026-11-25T10:00:00Z",
        "check_number": "10442",
    }
    return {"specversion": "1.0", "id": id, "source": source, "type": "check.scan", "data": body | data}


def new_deposit(
    invoice: str | None = "INV-1001",
    amount: str = "25.00",
    currency: str = "USD",
    *,
    remittance: str | None = None,
    reference: str | None = None,
    **data: Any,
) -> dict[str, Any]:
    """A bank.deposit with a fresh id (and reference unless given), booked now; `data` adds fields."""
    event = example_event(
        "bank.deposit",
        amount=amount,
        currency=currency,
        invoice_id=invoice,
        remittance=remittance,
        reference=reference,
    )
    event["data"] |= data
    return event
