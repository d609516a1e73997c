"""The peer consumer: FastStream's RabbitMQ broker + pydantic + Chargebee's official Python SDK.

What a team would write for the same job (SPEC §4, the happy path) without payrelay, following
each library's documentation. Per message, in this order:

1. FastStream takes a delivery from payrelay's work queue `{prefix}.record-payment` (a quorum
   queue declared by payrelay's topology; connected to passively, `declare=False`), with
   `PEER_PREFETCH` unacknowledged messages on the channel (payrelay's default, 64). aio-pika runs
   one task per delivery, so up to that many handlers are in flight at once.
2. The body (`application/cloudevents+json`, which FastStream's own decoder leaves as bytes: it
   only decodes `application/json`) is decoded as JSON, and FastStream validates it into the
   pydantic `CloudEvent` below (from the handler's annotation, through fast-depends).
3. The decimal amount becomes integer minor units by the currency's ISO 4217 exponent.
4. `Invoice.record_payment(invoice_id, {"transaction": {...}})` through the SDK (API v2, form
   encoded, HTTP Basic), with `chargebee-idempotency-key` set to the event id as the SDK's
   README shows, so a redelivery within Chargebee's idempotency window is not recorded twice.
5. A `payment.recorded` JSON goes to the topic exchange `{prefix}.confirmations` (FastStream's
   publisher on the handler's return value: persistent, publisher-confirmed), then FastStream
   acks (its default ack policy: ack after the handler, reject on an exception, which this
   queue dead-letters).

No ledger, no invoice lookup, no retry tiers, no rate limit: naive, but correct for a stream of
good events. FastStream logs each message at INFO, as it does by default.

Sync or async: the brief expected a synchronous SDK. Since 3.9.0 the SDK documents an async
HTTP client (`Chargebee(..., use_async_client=True)`: every call returns a coroutine; httpx
underneath), so the handler is a plain `async def` awaiting it, which is what its README
suggests for asyncio code, with no thread pool. The SDK opens a new `httpx.AsyncClient` for
every request (chargebee/http_request.py), so no connection is reused, and each new client loads
a CA bundle (over http httpx's default, certifi's; over https the SDK's own, as large): CPU spent
per call whichever protocol. That is the SDK's own behaviour, left as it is.

Pointing the SDK at the sandbox: the SDK builds `{protocol}://{site}.{chargebee_domain}/api/v2`
and has no base-URL option, so `PEER_CHARGEBEE_URL` (`http://127.0.0.1:<port>`) is split at its
host's first dot into `site="127"` and `chargebee_domain="0.0.1:<port>"`, with `protocol="http"`.
`update_protocol("http")` sets `verify_ca_certs = False` on the instance, but the request path
reads the class attribute (`Chargebee.verify_ca_certs` in http_request.py) and forces `https`
while it is true, so this module also sets that class attribute to False: one assignment, no
patched code. Against the real Chargebee neither is needed (`Chargebee(api_key, site)`).

Run by the end-to-end benchmark as a process, configured by environment variables:

    PEER_AMQP_URL=amqp://... PEER_PREFIX=bench1a2b3c PEER_CHARGEBEE_URL=http://127.0.0.1:8123 \\
    PEER_API_KEY=... PEER_PREFETCH=64 python -m tests.benchmarks.peers.faststream_consumer

It prints `peer ready` once FastStream has started its subscriber.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal
from urllib.parse import urlsplit

from chargebee import Chargebee
from faststream import FastStream
from faststream.rabbit import Channel, ExchangeType, RabbitBroker, RabbitExchange, RabbitMessage, RabbitQueue
from pydantic import BaseModel, Field

READY = "peer ready"
EXPONENTS = {"BHD": 3, "JOD": 3, "KWD": 3, "OMR": 3, "TND": 3, "JPY": 0, "KRW": 0, "CLP": 0, "VND": 0}


class Deposit(BaseModel):
    amount: Decimal = Field(gt=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    booked_at: datetime
    bank_reference: str = Field(min_length=1, max_length=100)
    invoice_id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,50}$")
    remittance_information: str | None = Field(default=None, max_length=2000)


class CloudEvent(BaseModel):
    specversion: Literal["1.0"]
    id: str = Field(min_length=1, max_length=255)
    source: str = Field(min_length=1, max_length=255)
    type: Literal["bank.deposit"]
    time: datetime | None = None
    data: Deposit


@dataclass(frozen=True, slots=True)
class PeerSettings:
    amqp_url: str
    prefix: str
    chargebee_url: str
    api_key: str
    prefetch: int

    @classmethod
    def from_env(cls) -> PeerSettings:
        return cls(
            amqp_url=os.environ.get("PEER_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/"),
            prefix=os.environ.get("PEER_PREFIX", "payrelay"),
            chargebee_url=os.environ["PEER_CHARGEBEE_URL"],
            api_key=os.environ["PEER_API_KEY"],
            prefetch=int(os.environ.get("PEER_PREFETCH", "64")),
        )


def minor_units(amount: Decimal, currency: str) -> int:
    """Exact integer minor units; more decimals than the currency has is an error, never rounded."""
    scaled = amount.scaleb(EXPONENTS.get(currency, 2))
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{amount} has more decimals than {currency} allows")
    return int(scaled)


def chargebee_client(url: str, api_key: str) -> Chargebee:
    """The SDK's async client aimed at `url` (see the module docstring for why it is split so)."""
    parts = urlsplit(url)
    site, _, domain = parts.netloc.partition(".")
    if parts.scheme == "http":
        Chargebee.verify_ca_certs = False  # what update_protocol("http") means to do
    return Chargebee(
        api_key=api_key, site=site, chargebee_domain=domain, protocol=parts.scheme, use_async_client=True
    )


async def decode(message: RabbitMessage) -> Any:
    """JSON bodies whatever their `+json` content type (CloudEvents structured mode)."""
    return json.loads(message.body)


def create_app(settings: PeerSettings) -> FastStream:
    broker = RabbitBroker(settings.amqp_url)
    chargebee = chargebee_client(settings.chargebee_url, settings.api_key)
    queue = RabbitQueue(f"{settings.prefix}.record-payment", declare=False)
    confirmations = RabbitExchange(f"{settings.prefix}.confirmations", type=ExchangeType.TOPIC, declare=False)
    publisher = broker.publisher(exchange=confirmations, routing_key="payment.recorded", persist=True)

    @broker.subscriber(queue, channel=Channel(prefetch_count=settings.prefetch), decoder=decode)
    @publisher
    async def record_payment(event: CloudEvent) -> dict[str, Any]:
        deposit = event.data
        amount = minor_units(deposit.amount, deposit.currency)
        transaction = {
            "amount": amount,
            "payment_method": "bank_transfer",
            "reference_number": deposit.bank_reference,
            "date": int(deposit.booked_at.timestamp()),
        }
        result = await chargebee.Invoice.record_payment(
            deposit.invoice_id, {"transaction": transaction}, {"chargebee-idempotency-key": event.id}
        )
        return {
            "specversion": "1.0",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{event.source}/{event.id}/payment.recorded")),
            "source": "faststream-peer",
            "type": "payment.recorded",
            "time": datetime.now(UTC).isoformat(),
            "data": {
                "invoice_id": deposit.invoice_id,
                "transaction_id": result.transaction.id,
                "amount": amount,
                "currency": deposit.currency,
                "payment_method": "bank_transfer",
                "reference_number": deposit.bank_reference,
                "invoice_status": result.invoice.status,
                "amount_due": result.invoice.amount_due,
                "cause": {"source": event.source, "id": event.id, "type": event.type},
            },
        }

    app = FastStream(broker)

    @app.after_startup
    async def ready() -> None:
        print(READY, flush=True)

    return app


if __name__ == "__main__":
    asyncio.run(create_app(PeerSettings.from_env()).run())
