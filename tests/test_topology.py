"""The topology as data, and its declaration on the real RabbitMQ (idempotent, quorum, limits)."""

import aio_pika
import pytest

from service.broker import declare_once
from service.topology import build
from tests.conftest import AMQP_URL

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


def test_names_follow_the_prefix() -> None:
    """SPEC §3 names, under a configurable prefix."""
    t = build("acme", [5, 30, 120, 600, 1800], 20)
    assert (t.events, t.work_queue, t.dead_letter, t.confirmations) == (
        "acme.events",
        "acme.record-payment",
        "acme.dead-letter",
        "acme.confirmations",
    )
    assert [tier.queue for tier in t.retry_tiers] == [
        "acme.retry.5s",
        "acme.retry.30s",
        "acme.retry.2m",
        "acme.retry.10m",
        "acme.retry.30m",
    ]


def test_work_queue_arguments_are_explicit() -> None:
    """Quorum, an explicit delivery limit, at-least-once dead-lettering to the dead-letter exchange."""
    t = build("p", [5], 7)
    work = next(q for q in t.queues if q.name == "p.record-payment")
    assert work.arguments == {
        "x-queue-type": "quorum",
        "x-delivery-limit": 7,
        "x-dead-letter-exchange": "p.dead-letter",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }
    tier = next(q for q in t.queues if q.name == "p.retry.5s")
    assert tier.arguments["x-message-ttl"] == 5000
    assert tier.arguments["x-dead-letter-exchange"] == ""
    assert tier.arguments["x-dead-letter-routing-key"] == "p.record-payment"


async def test_declare_is_idempotent_and_routes(prefix: str, amqp: aio_pika.abc.AbstractConnection) -> None:
    """Declaring twice works; an event published to the events exchange lands in the work queue."""
    topology = build(prefix, [1], 20)
    await declare_once(AMQP_URL, topology)
    names = await declare_once(AMQP_URL, topology)
    assert f"{prefix}.record-payment" in names
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{prefix}.events")
    await exchange.publish(aio_pika.Message(b"{}", message_id="x"), routing_key="check.scan", mandatory=True)
    queue = await channel.get_queue(f"{prefix}.record-payment")
    assert (await queue.get(timeout=5)).message_id == "x"


async def test_retry_tier_returns_to_the_work_queue(
    prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """A message in a retry tier comes back to the work queue when its TTL expires."""
    topology = build(prefix, [1], 20)
    await declare_once(AMQP_URL, topology)
    channel = await amqp.channel(publisher_confirms=True)
    await channel.default_exchange.publish(
        aio_pika.Message(b"{}", message_id="later", headers={"x-payrelay-attempts": 1}),
        routing_key=f"{prefix}.retry.1s",
        mandatory=True,
    )
    queue = await channel.get_queue(f"{prefix}.record-payment")
    import asyncio

    for _ in range(60):
        message = await queue.get(fail=False)
        if message is not None:
            assert message.message_id == "later"
            assert message.headers["x-payrelay-attempts"] == 1
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the message never came back from the retry tier")
