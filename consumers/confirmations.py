"""`payment.recorded` and `invoice.paid`: the CloudEvents payrelay sends downstream (SPEC §5).

Ids are UUIDv5 of the inbound identity (and, for a payment split over several invoices, the
invoice) and the type, so a duplicate or a replay republishes the very same confirmation and
downstream deduplicates by `id`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import orjson

from consumers.chargebee import RecordResult
from service.broker import Outgoing
from service.events import Event
from service.ledger import WHOLE, EventKey
from service.messages import rfc3339

_NAMESPACE = uuid.UUID("6f1c7a52-2b0e-4d55-9a53-5d0f4a3f2b61")


def confirmation_id(key: EventKey, event_type: str, part: str = WHOLE) -> str:
    # JSON keeps the parts apart whatever characters they hold.
    named = [*key, event_type] if part == WHOLE else [*key, part, event_type]
    return str(uuid.uuid5(_NAMESPACE, orjson.dumps(named).decode()))


def build(
    key: EventKey,
    event: Event,
    invoice_id: str,
    recorded: RecordResult,
    at: datetime,
    *,
    part: str = WHOLE,
    amount: int | None = None,
    match: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The confirmations for one recorded payment: always payment.recorded, invoice.paid if paid.

    `part` and `amount` name one invoice's share of a split payment (default: the whole event);
    `match` says how cash application or a person found the invoice (SPEC §10).
    """
    payment = event.payment
    data: dict[str, Any] = {
        "invoice_id": invoice_id,
        "transaction_id": recorded.transaction_id,
        "amount": payment.amount if amount is None else amount,
        "currency": payment.currency,
        "payment_method": payment.method,
        "reference_number": payment.reference_number,
        "invoice_status": recorded.invoice_status,
        "amount_due": recorded.amount_due,
        "paid_at": rfc3339(payment.paid_at),
        "origin": key[0],
        "cause": {"source": event.source, "id": event.id, "type": event.type},
    }
    if recorded.excess:
        data["excess"] = recorded.excess  # SPEC §4: Chargebee put it in the customer's excess payments
    if match is not None:
        data["match"] = {name: match.get(name) for name in ("method", "score", "reasons")}
    types = ["payment.recorded"] + (["invoice.paid"] if recorded.invoice_status == "paid" else [])
    return [
        {
            "specversion": "1.0",
            "id": confirmation_id(key, event_type, part),
            "source": "payrelay",
            "type": event_type,
            "subject": invoice_id,
            "time": rfc3339(at),
            "datacontenttype": "application/json",
            "data": data,
        }
        for event_type in types
    ]


def encode(confirmations: list[dict[str, Any]]) -> bytes:
    """What the ledger stores, so a duplicate republishes byte-identical confirmations."""
    return orjson.dumps(confirmations)


def outgoing(exchange: str, stored: bytes, headers: dict[str, Any]) -> list[Outgoing]:
    return [
        Outgoing(
            exchange=exchange,
            routing_key=event["type"],
            body=orjson.dumps(event),
            message_id=event["id"],
            headers=headers,
            type=event["type"],
            # Downstream binds its own queues; with none bound, nobody is waiting to be told.
            mandatory=False,
        )
        for event in orjson.loads(stored)
    ]
