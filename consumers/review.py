"""The review item the worker keeps for a payment cash application sent to a person (SPEC §10)."""

from __future__ import annotations

from typing import Any

import orjson
from aio_pika.abc import AbstractIncomingMessage

from consumers.errors import NeedsReview
from consumers.matching.matcher import teach_of
from service import events, messages
from service.ledger import EventKey
from service.review.model import NewReview

# What the re-queued event needs again: where it came in, its replay generation, its trace.
KEPT_HEADERS = (messages.SOURCE, messages.GENERATION, messages.TRACEPARENT)


def review_of(
    message: AbstractIncomingMessage, headers: dict[str, Any], key: EventKey, error: NeedsReview
) -> NewReview:
    """The review item for a payment cash application sent to a person."""
    raw = orjson.loads(message.body)
    payment = events.validate(raw).payment
    kept = {name: headers[name] for name in KEPT_HEADERS if name in headers}
    return NewReview(
        key=key,
        event=raw,
        headers={k: v.decode() if isinstance(v, bytes) else v for k, v in kept.items()},
        amount=payment.amount,
        currency=payment.currency,
        why=error.why,
        suggestions=error.suggestions,
        customer_id=error.customer_id,
        payer=payment.payer_name,
        named=error.named,
        teach=teach_of(payment),
    )
