"""RabbitMQ topology as data, and the one function that declares it.

```
receiver ─▶ {p}.events (topic) ──bank.deposit, check.scan──▶ {p}.record-payment (quorum)
                                                                 │ nack/limit ▶ {p}.dead-letter
consumer ─▶ "" ─▶ {p}.retry.5s … {p}.retry.30m (quorum, TTL) ─expire─▶ "" ─▶ {p}.record-payment
consumer ─▶ {p}.dead-letter (fanout) ─▶ {p}.dead-letter (quorum)
consumer ─▶ {p}.confirmations (topic): payment.recorded, invoice.paid
```

Every queue is a quorum queue. The work queue sets `x-delivery-limit` explicitly (RabbitMQ 4
defaults it to 20, 3.x to unlimited) and dead-letters at-least-once, so a message the broker
gives up on still lands in the dead-letter queue. Retry tiers dead-letter back to the work queue
through the default exchange, at-least-once; they never rely on `x-death`, which RabbitMQ 4
ignores on republish — the consumer counts attempts in `x-payrelay-attempts` itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel

from service.events import EVENT_TYPES

DEAD_LETTER_DELIVERY_LIMIT = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    kind: aio_pika.ExchangeType


@dataclass(frozen=True, slots=True)
class Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Binding:
    queue: str
    exchange: str
    routing_key: str


@dataclass(frozen=True, slots=True)
class RetryTier:
    queue: str
    delay_seconds: int


@dataclass(frozen=True, slots=True)
class Topology:
    """Names and shapes of everything payrelay declares, for one prefix."""

    prefix: str
    events: str
    work_queue: str
    dead_letter: str  # the exchange and the queue share this name
    confirmations: str
    retry_tiers: tuple[RetryTier, ...]
    exchanges: tuple[Exchange, ...]
    queues: tuple[Queue, ...]
    bindings: tuple[Binding, ...]


def _tier_name(prefix: str, seconds: int) -> str:
    if seconds % 60 == 0:
        return f"{prefix}.retry.{seconds // 60}m"
    return f"{prefix}.retry.{seconds}s"


def build(prefix: str, retry_delays: list[int] | tuple[int, ...], delivery_limit: int) -> Topology:
    """The topology for a prefix: pure data, declared by `declare`."""
    events, work, dead, confirmations = (
        f"{prefix}.events",
        f"{prefix}.record-payment",
        f"{prefix}.dead-letter",
        f"{prefix}.confirmations",
    )
    quorum = {"x-queue-type": "quorum"}
    # At-least-once dead-lettering needs reject-publish overflow (a RabbitMQ requirement).
    safe_dlx = {"x-dead-letter-strategy": "at-least-once", "x-overflow": "reject-publish"}
    tiers = tuple(RetryTier(_tier_name(prefix, d), d) for d in retry_delays)
    queues = (
        Queue(
            work,
            {**quorum, **safe_dlx, "x-delivery-limit": delivery_limit, "x-dead-letter-exchange": dead},
        ),
        # Browsing returns messages unacked, which counts as a delivery: a dead-letter queue must
        # never drop a message because an operator looked at it (RabbitMQ 4 defaults to 20).
        Queue(dead, {**quorum, "x-delivery-limit": DEAD_LETTER_DELIVERY_LIMIT}),
        *(
            Queue(
                tier.queue,
                {
                    **quorum,
                    **safe_dlx,
                    "x-message-ttl": tier.delay_seconds * 1000,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": work,
                },
            )
            for tier in tiers
        ),
    )
    return Topology(
        prefix=prefix,
        events=events,
        work_queue=work,
        dead_letter=dead,
        confirmations=confirmations,
        retry_tiers=tiers,
        exchanges=(
            Exchange(events, aio_pika.ExchangeType.TOPIC),
            Exchange(dead, aio_pika.ExchangeType.FANOUT),
            Exchange(confirmations, aio_pika.ExchangeType.TOPIC),
        ),
        queues=queues,
        bindings=(
            *(Binding(work, events, event_type) for event_type in EVENT_TYPES),
            Binding(dead, dead, ""),
        ),
    )


async def declare(channel: AbstractChannel, topology: Topology) -> None:
    """Declare every exchange, queue and binding; safe to run any number of times."""
    exchanges = {}
    for exchange in topology.exchanges:
        exchanges[exchange.name] = await channel.declare_exchange(exchange.name, exchange.kind, durable=True)
    queues = {}
    for queue in topology.queues:
        queues[queue.name] = await channel.declare_queue(queue.name, durable=True, arguments=queue.arguments)
    for binding in topology.bindings:
        await queues[binding.queue].bind(exchanges[binding.exchange], routing_key=binding.routing_key)


async def check(channel: AbstractChannel, topology: Topology) -> None:
    """Check, without declaring, that every exchange and queue exists (passive declarations).

    For roles whose broker user may not configure anything (`amqp_declare = "check"`): the
    topology job declares, they only look. Raises aiormq's ChannelNotFoundEntity for the first
    one missing; bindings cannot be checked this way, and are the topology job's to make.
    """
    for exchange in topology.exchanges:
        await channel.declare_exchange(exchange.name, exchange.kind, durable=True, passive=True)
    for queue in topology.queues:
        await channel.declare_queue(queue.name, durable=True, passive=True)
