"""`Broker.publish` on aiormq's channel: confirmed, persistent, every property kept; a nack or an
unroutable message is `BrokerUnavailable`, never a silent success. Against the real RabbitMQ."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import pytest

from service.broker import Broker, BrokerUnavailable, Outgoing
from service.settings import Settings

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


@pytest.fixture
async def broker(settings: Settings) -> AsyncIterator[Broker]:
    started = settings.broker.broker("test-publish")
    await started.start(wait=5.0)
    try:
        yield started
    finally:
        await started.stop()


async def test_what_is_published_arrives_whole_and_persistent(
    broker: Broker, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    channel = await amqp.channel()
    queue = await channel.declare_queue(f"{prefix}.probe", durable=True)
    headers = {"x-payrelay-source": "acme-bank", "x-payrelay-attempts": 2, "nested": {"a": "b"}}
    one = Outgoing("", queue.name, b'{"id": "e-1"}', "e-1", headers, type="bank.deposit", expiration=2.5)
    two = Outgoing("", queue.name, b'{"id": "e-2"}', "e-2")
    await broker.publish([one])
    await broker.publish([two, two])  # several: pipelined
    got = [await queue.get(timeout=5, no_ack=True) for _ in range(3)]
    first = got[0]
    assert (first.body, first.message_id, first.type, first.expiration) == (
        b'{"id": "e-1"}',
        "e-1",
        "bank.deposit",
        2.5,
    )
    assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert first.content_type == "application/cloudevents+json"
    assert first.headers == headers
    assert [m.message_id for m in got[1:]] == ["e-2", "e-2"] and got[1].expiration is None


async def test_an_unroutable_message_is_refused(broker: Broker, prefix: str) -> None:
    with pytest.raises(BrokerUnavailable, match="unroutable"):
        await broker.publish([Outgoing("", f"{prefix}.nowhere", b"{}", "e-3")])
    await broker.publish([Outgoing("", f"{prefix}.nowhere", b"{}", "e-4", mandatory=False)])  # dropped: fine


async def test_a_nacked_message_is_refused(
    broker: Broker, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """A full queue that rejects publishes: RabbitMQ nacks, and the caller hears of it."""
    channel = await amqp.channel()
    full = await channel.declare_queue(
        f"{prefix}.full", durable=True, arguments={"x-max-length": 0, "x-overflow": "reject-publish"}
    )
    with pytest.raises(BrokerUnavailable, match="nacked"):
        await broker.publish([Outgoing("", full.name, b"{}", "e-5")])
    await broker.publish([Outgoing("", f"{prefix}.nowhere", b"{}", "e-6", mandatory=False)])  # still usable
