"""The receiver over real HTTP (uvicorn) against the real RabbitMQ: durability, outages, streaming.

The HTTP contract itself (statuses, signatures, problem+json) is tests/test_receiver_http.py's, in-process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from service.receiver import create_app
from service.sender import example_event, signed_headers
from service.settings import Settings
from tests.conftest import LOCKBOX_SECRET, SECRET, get_all, serve
from tests.factories import new_deposit

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


@pytest.fixture
async def receiver(settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def post(
    http: aiohttp.ClientSession,
    url: str,
    payload: Any,
    *,
    source: str = "acme-bank",
    secret: str = SECRET,
    content_type: str | None = None,
    raw: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, Any], Any]:
    body = raw if raw is not None else orjson.dumps(payload)
    if content_type is None:
        content_type = (
            "application/cloudevents-batch+json"
            if isinstance(payload, list)
            else "application/cloudevents+json"
        )
    sent = signed_headers(secret, body, content_type) | (headers or {})
    async with http.post(f"{url}/v1/ingest/{source}", data=body, headers=sent) as response:
        return response.status, dict(response.headers), await response.json(content_type=None)


async def test_accepted_event_is_in_the_queue(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """After a 202 the event is in the work queue: persistent, with id, type and source headers."""
    event = new_deposit("INV-1001", "1250.00")
    status, _, body = await post(http, receiver, event)
    assert status == 202, body
    assert body["accepted"] == 1
    [message] = await get_all(amqp, f"{prefix}.record-payment", 1)
    assert orjson.loads(message.body) == event
    assert message.message_id == event["id"]
    assert message.content_type == "application/cloudevents+json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers["x-payrelay-source"] == "acme-bank"


async def test_batch_all_published(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """A batch is published whole; each event becomes its own message."""
    events = [example_event(t, amount="10.00", currency="USD") for t in ("bank.deposit", "check.scan") * 5]
    status, _, body = await post(http, receiver, events, source="lockbox", secret=LOCKBOX_SECRET)
    assert status == 202, body
    messages = await get_all(amqp, f"{prefix}.record-payment", 10)
    assert sorted(m.message_id for m in messages) == sorted(e["id"] for e in events)  # type: ignore[type-var]


async def test_an_id_of_255_utf8_bytes_is_the_message_id(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """The longest id allowed (85 × "中", 255 bytes) fits the AMQP message_id exactly."""
    event = {**new_deposit("INV-1001", "1250.00"), "id": "中" * 85}
    status, _, body = await post(http, receiver, event)
    assert status == 202, body
    [message] = await get_all(amqp, f"{prefix}.record-payment", 1)
    assert message.message_id == event["id"]


async def test_oversized_chunked_body_is_413_while_streaming(receiver: str) -> None:
    """A chunked body (no Content-Length) is cut off at the limit, not read whole."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(64):  # 64 MiB if the server read it all
            sent += 1
            yield b" " * (1024 * 1024)

    async with aiohttp.ClientSession() as session:
        headers = {
            "content-type": "application/json",
            "webhook-id": "m",
            "webhook-timestamp": "1",
            "webhook-signature": "v1,x",
        }
        try:
            async with session.post(
                f"{receiver}/v1/ingest/acme-bank", data=chunks(), headers=headers
            ) as response:
                assert response.status == 413
        except aiohttp.ClientError:
            pass  # the server may close the connection as soon as it answers
    assert sent < 64


async def test_unroutable_publish_is_503(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """If the work queue's binding is gone, the publish is unroutable: 503, not 202."""
    from tests.conftest import make_settings

    settings = make_settings(prefix)
    async with serve(create_app(settings)) as url:
        channel = await amqp.channel()
        queue = await channel.get_queue(f"{prefix}.record-payment")
        await queue.unbind(f"{prefix}.events", "bank.deposit")
        status, headers, body = await post(http, url, new_deposit("INV-1001", "1250.00"))
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert body["status"] == 503


async def test_broker_unreachable_is_503(prefix: str, http: aiohttp.ClientSession) -> None:
    """With no broker at all the receiver answers 503 with Retry-After, quickly, and is not ready."""
    from tests.conftest import free_port, make_settings

    settings = make_settings(prefix, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    async with serve(create_app(settings)) as url:
        started = time.monotonic()
        status, headers, _ = await post(http, url, new_deposit("INV-1001", "1250.00"))
        assert status == 503
        assert "Retry-After" in headers
        assert time.monotonic() - started < 2
        async with http.get(f"{url}/readyz") as response:
            assert response.status == 503
        async with http.get(f"{url}/healthz") as response:
            assert response.status == 200


async def test_outage_and_recovery_within_5s(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """Broker gone: 503. Broker back: 202 again within 5 s, without a restart."""
    from tests.conftest import make_settings
    from tests.proxy import TcpProxy

    proxy = TcpProxy()
    await proxy.start()
    settings = make_settings(prefix, amqp_url=proxy.url)
    async with serve(create_app(settings)) as url:
        assert (await post(http, url, new_deposit("INV-1001", "1250.00")))[0] == 202
        await proxy.cut()
        await asyncio.sleep(0.2)
        assert (await post(http, url, new_deposit("INV-1001", "1250.00")))[0] == 503
        await proxy.restore()
        restored = time.monotonic()
        while (await post(http, url, new_deposit("INV-1001", "1250.00")))[0] != 202:
            assert time.monotonic() - restored < 5, "not accepting 5 s after the broker came back"
            await asyncio.sleep(0.1)
    await proxy.cut()


async def test_slow_broker_is_bounded(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """A broker that stops answering mid-connection yields 503 within the publish timeout."""
    from tests.conftest import make_settings
    from tests.proxy import TcpProxy

    proxy = TcpProxy()
    await proxy.start()
    settings = make_settings(prefix, amqp_url=proxy.url, publish_timeout_seconds=0.5)
    async with serve(create_app(settings)) as url:
        assert (await post(http, url, new_deposit("INV-1001", "1250.00")))[0] == 202
        proxy.freeze()
        started = time.monotonic()
        status, headers, _ = await post(http, url, new_deposit("INV-1001", "1250.00"))
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert time.monotonic() - started < 1.5
        proxy.thaw()
    await proxy.cut()
