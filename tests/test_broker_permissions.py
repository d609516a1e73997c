"""A receiver whose broker user may publish to `payrelay.events` and nothing else.

The review's finding: every role used the administrator user, so a compromised receiver could
publish straight into the work queue, unsigned. With `amqp_declare = "check"` a role only checks
that the topology exists (passive declarations), so its user needs no configure rights; these
tests create such a user through RabbitMQ's management API and run the real receiver with it.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from urllib.parse import quote

import aio_pika
import aiohttp
import pytest

from service.broker import TopologyMissing, declare_once
from service.receiver import create_app
from service.sender import post_signed
from tests.conftest import AMQP_URL, SECRET, make_settings, serve
from tests.factories import new_deposit

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

MANAGEMENT = "http://127.0.0.1:15672/api"
ADMIN = {"Authorization": aiohttp.encode_basic_auth("guest", "guest")}


@pytest.fixture
async def receiver_user(prefix: str) -> AsyncIterator[str]:
    """A user that may write to `{prefix}.events` only: configure nothing, read nothing."""
    name, password = f"receiver-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    permissions = {"configure": "^$", "write": rf"^{prefix}\.events$", "read": "^$"}
    async with aiohttp.ClientSession(headers=ADMIN) as http:
        async with http.put(f"{MANAGEMENT}/users/{name}", json={"password": password, "tags": ""}) as r:
            assert r.status in (201, 204), await r.text()
        async with http.put(f"{MANAGEMENT}/permissions/%2F/{quote(name)}", json=permissions) as r:
            assert r.status in (201, 204), await r.text()
        try:
            yield f"amqp://{name}:{password}@127.0.0.1:5672/"
        finally:
            async with http.delete(f"{MANAGEMENT}/users/{name}") as r:
                assert r.status in (204, 404)


async def test_a_receiver_that_only_checks_the_topology_runs_with_a_publish_only_user(
    prefix: str, receiver_user: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Declaring would be refused (no configure right); checking is not, and a signed event is
    accepted, confirmed and routed to the work queue as ever."""
    topology = make_settings(prefix).broker.topology()
    with pytest.raises(Exception, match="ACCESS_REFUSED"):
        await declare_once(receiver_user, topology)  # what every role did before
    await declare_once(AMQP_URL, topology)  # the topology job, with its own user
    await declare_once(receiver_user, topology, declares=False)
    settings = make_settings(prefix, amqp_url=receiver_user, amqp_declare="check")
    async with serve(create_app(settings)) as url, aiohttp.ClientSession() as http:
        event = new_deposit("INV-1001")
        status, body = await post_signed(http, url, "acme-bank", SECRET, event)
        assert status == 202, body
    channel = await amqp.channel()
    queue = await channel.get_queue(f"{prefix}.record-payment", ensure=False)
    message = await queue.get(fail=False, no_ack=True)
    assert message is not None and message.message_id == event["id"]


async def test_the_publish_only_user_cannot_reach_the_work_queue_itself(
    prefix: str, receiver_user: str
) -> None:
    """What a compromised receiver would try: publish unsigned into the work queue. Refused."""
    await declare_once(AMQP_URL, make_settings(prefix).broker.topology())
    connection = await aio_pika.connect(receiver_user)
    try:
        channel = await connection.channel(publisher_confirms=True)
        with pytest.raises(Exception, match="ACCESS_REFUSED"):
            await channel.default_exchange.publish(
                aio_pika.Message(b"{}"), routing_key=f"{prefix}.record-payment"
            )
    finally:
        await connection.close()


async def test_a_role_that_only_checks_says_when_the_topology_is_missing(prefix: str) -> None:
    with pytest.raises(TopologyMissing, match=r"payrelay topology declare"):
        await declare_once(AMQP_URL, make_settings(prefix).broker.topology(), declares=False)
