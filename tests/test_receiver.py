"""The receiver over real HTTP (uvicorn) against the real RabbitMQ: statuses, durability, batches."""

from __future__ import annotations

import asyncio
import io
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from service.receiver import create_app
from service.sender import example_event, signed_headers
from service.settings import Settings
from tests.conftest import LOCKBOX_SECRET, OLD_SECRET, SECRET, get_all, serve

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


@pytest.fixture
async def receiver(settings: Settings, amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[str]:
    async with serve(create_app(settings)) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def deposit(**overrides: Any) -> dict[str, Any]:
    return example_event("bank.deposit", amount="1250.00", currency="USD", invoice_id="INV-1001", **overrides)


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
    event = deposit()
    status, _, body = await post(http, receiver, event)
    assert status == 202, body
    assert body["accepted"] == 1
    [message] = await get_all(amqp, f"{prefix}.record-payment", 1)
    assert orjson.loads(message.body) == event
    assert message.message_id == event["id"]
    assert message.content_type == "application/cloudevents+json"
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.headers["x-payrelay-source"] == "acme-bank"


async def test_rotated_secret_still_accepted(receiver: str, http: aiohttp.ClientSession) -> None:
    """During rotation a request signed with the old secret is accepted."""
    status, _, _ = await post(http, receiver, deposit(), secret=OLD_SECRET)
    assert status == 202


async def test_batch_all_published(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """A batch is published whole; each event becomes its own message."""
    events = [example_event(t, amount="10.00", currency="USD") for t in ("bank.deposit", "check.scan") * 5]
    status, _, body = await post(http, receiver, events, source="lockbox", secret=LOCKBOX_SECRET)
    assert status == 202, body
    messages = await get_all(amqp, f"{prefix}.record-payment", 10)
    assert sorted(m.message_id for m in messages) == sorted(e["id"] for e in events)  # type: ignore[type-var]


async def test_invalid_batch_publishes_nothing(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """One bad event fails the whole batch with its index, and nothing is published."""
    events = [deposit(), deposit(), {**deposit(), "specversion": "0.3"}, deposit()]
    events[1]["data"]["amount"] = "1.001"
    status, headers, body = await post(http, receiver, events)
    assert status == 422
    assert headers["Content-Type"] == "application/problem+json"
    assert body["invalid_indexes"] == [1, 2]
    assert {(e["index"], e["field"]) for e in body["errors"]} == {(1, "data.amount"), (2, "specversion")}
    assert await get_all(amqp, f"{prefix}.record-payment", 0, within=0.3) == []


async def test_batch_with_an_overlong_id_publishes_nothing(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """An id of 256 UTF-8 bytes (86 characters) at index 3 fails the batch with a 422; none is published."""
    events = [deposit() for _ in range(5)]
    events[3]["id"] = "中" * 85 + "j"
    status, headers, body = await post(http, receiver, events)
    assert status == 422, body
    assert headers["Content-Type"] == "application/problem+json"
    assert body["invalid_indexes"] == [3]
    assert body["errors"] == [
        {"field": "id", "message": "must be at most 255 bytes in UTF-8; this one is 256", "index": 3}
    ]
    # A later event is the only message: nothing of the batch reached the queue before or after it.
    sentinel = deposit()
    assert (await post(http, receiver, sentinel))[0] == 202
    messages = await get_all(amqp, f"{prefix}.record-payment", 1)
    assert [m.message_id for m in messages] == [sentinel["id"]]


async def test_an_id_of_255_utf8_bytes_is_the_message_id(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """The longest id allowed (85 × "中", 255 bytes) fits the AMQP message_id exactly."""
    event = {**deposit(), "id": "中" * 85}
    status, _, body = await post(http, receiver, event)
    assert status == 202, body
    [message] = await get_all(amqp, f"{prefix}.record-payment", 1)
    assert message.message_id == event["id"]


async def test_batch_over_the_event_limit(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """More events than max_batch_events is a 422 naming the limit."""
    from tests.conftest import make_settings

    async with serve(create_app(make_settings(prefix, max_batch_events=3))) as url:
        status, _, body = await post(http, url, [deposit() for _ in range(4)])
    assert status == 422
    assert "1 to 3 events" in body["detail"]


async def test_repeat_identity_is_not_republished(
    receiver: str, http: aiohttp.ClientSession, amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> None:
    """A sender's retry of an identity just published is answered 202 and not published again."""
    event = deposit()
    assert (await post(http, receiver, event))[0] == 202
    status, _, body = await post(http, receiver, event)
    assert (status, body["published"]) == (202, 0)
    assert len(await get_all(amqp, f"{prefix}.record-payment", 2, within=0.5)) == 1


@pytest.mark.parametrize(
    ("mutate", "status", "needle"),
    [
        (lambda h: h.pop("webhook-signature"), 401, "missing"),
        (lambda h: h.update({"webhook-signature": "v1,Zm9v"}), 401, "well-formed"),
        (lambda h: h.update({"webhook-signature": "v1,%%%"}), 401, "well-formed"),
        (lambda h: h.update({"webhook-timestamp": str(int(time.time()) - 1000)}), 401, "tolerance"),
        (lambda h: h.update({"webhook-timestamp": "soon"}), 401, "timestamp"),
        (lambda h: h.update({"webhook-id": "other"}), 401, "no signature matches"),
    ],
)
async def test_signature_failures_are_401(
    receiver: str, http: aiohttp.ClientSession, mutate: Any, status: int, needle: str
) -> None:
    """Missing, malformed, stale or non-matching signatures are 401 problem+json, never 500."""
    body = orjson.dumps(deposit())
    headers = signed_headers(SECRET, body, "application/cloudevents+json")
    mutate(headers)
    async with http.post(f"{receiver}/v1/ingest/acme-bank", data=body, headers=headers) as response:
        assert response.status == status
        assert response.headers["Content-Type"] == "application/problem+json"
        assert needle in (await response.json(content_type=None))["detail"]


async def test_a_request_replayed_to_another_source_is_401(
    receiver: str, http: aiohttp.ClientSession
) -> None:
    """Sources have their own secrets, so a request signed for acme-bank is refused by lockbox."""
    body = orjson.dumps(deposit())
    headers = signed_headers(SECRET, body, "application/cloudevents+json")
    async with http.post(f"{receiver}/v1/ingest/lockbox", data=body, headers=headers) as response:
        assert response.status == 401
    async with http.post(f"{receiver}/v1/ingest/acme-bank", data=body, headers=headers) as response:
        assert response.status == 202


async def test_unknown_source_is_404(receiver: str, http: aiohttp.ClientSession) -> None:
    """A source that is not configured is a 404."""
    status, _, body = await post(http, receiver, deposit(), source="nobody")
    assert (status, body["status"]) == (404, 404)


async def test_type_not_allowed_for_source_is_422(receiver: str, http: aiohttp.ClientSession) -> None:
    """acme-bank only sends bank.deposit; a check.scan from it is refused with the reason."""
    event = example_event("check.scan", amount="5.00", currency="USD")
    status, _, body = await post(http, receiver, event)
    assert status == 422
    assert body["errors"] == [{"field": "type", "message": "check.scan is not accepted from this source"}]


@pytest.mark.parametrize(
    ("raw", "content_type", "status"),
    [
        (b"{oops", "application/json", 400),
        (b'"a string"', "application/json", 400),
        (b"[]", "application/cloudevents+json", 400),
        (b"{}", "text/plain", 415),
        (b"{}", "application/xml", 415),
        (b'{"specversion": "1.0"}', "application/json", 422),
        (b"[]", "application/cloudevents-batch+json", 422),
    ],
)
async def test_body_errors(
    receiver: str, http: aiohttp.ClientSession, raw: bytes, content_type: str, status: int
) -> None:
    """Non-JSON is 400, the wrong media type 415, an invalid event 422 — all problem+json."""
    got, headers, body = await post(http, receiver, None, raw=raw, content_type=content_type)
    assert got == status
    assert headers["Content-Type"] == "application/problem+json"
    assert body["status"] == status


async def test_oversized_body_is_413(receiver: str, http: aiohttp.ClientSession) -> None:
    """A body over max_body_bytes with a Content-Length is a 413."""
    body = b" " * (1024 * 1024 + 1)
    headers = {"content-type": "application/json", "content-length": str(len(body))}
    async with http.post(
        f"{receiver}/v1/ingest/acme-bank", data=io.BytesIO(body), headers=headers
    ) as response:
        assert response.status == 413


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
        status, headers, body = await post(http, url, deposit())
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert body["status"] == 503


async def test_broker_unreachable_is_503(prefix: str, http: aiohttp.ClientSession) -> None:
    """With no broker at all the receiver answers 503 with Retry-After, quickly, and is not ready."""
    from tests.conftest import free_port, make_settings

    settings = make_settings(prefix, amqp_url=f"amqp://guest:guest@127.0.0.1:{free_port()}/")
    async with serve(create_app(settings)) as url:
        started = time.monotonic()
        status, headers, _ = await post(http, url, deposit())
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
        assert (await post(http, url, deposit()))[0] == 202
        await proxy.cut()
        await asyncio.sleep(0.2)
        assert (await post(http, url, deposit()))[0] == 503
        await proxy.restore()
        restored = time.monotonic()
        while (await post(http, url, deposit()))[0] != 202:
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
        assert (await post(http, url, deposit()))[0] == 202
        proxy.freeze()
        started = time.monotonic()
        status, headers, _ = await post(http, url, deposit())
        assert status == 503
        assert headers["Retry-After"] == "5"
        assert time.monotonic() - started < 1.5
        proxy.thaw()
    await proxy.cut()


async def test_health_metrics_and_openapi(receiver: str, http: aiohttp.ClientSession) -> None:
    """healthz, readyz, metrics with ingest counters, and the OpenAPI document are served."""
    await post(http, receiver, deposit())
    async with http.get(f"{receiver}/readyz") as response:
        assert response.status == 200
    async with http.get(f"{receiver}/metrics") as response:
        text = await response.text()
    assert 'payrelay_ingest_events_total{source="acme-bank",status="202",type="bank.deposit"} 1.0' in text
    assert "payrelay_publish_duration_seconds_bucket" in text
    async with http.get(f"{receiver}/openapi.json") as response:
        document = await response.json()
    assert document["paths"]["/v1/ingest/{source}"]["post"]["responses"]["202"]


async def test_an_unexpected_error_is_a_counted_problem_json_500(
    settings: Settings,
    amqp: aio_pika.abc.AbstractConnection,
    http: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A bug in the handler is a problem+json 500 without a traceback, logged once, and in the metrics."""

    async def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug, secret internals")

    app = create_app(settings)
    monkeypatch.setattr(app.state.broker, "publish", broken)
    uvicorn_logger = logging.getLogger("uvicorn")  # does not propagate to caplog's root handler
    uvicorn_logger.addHandler(caplog.handler)
    try:
        async with serve(app) as url:
            status, headers, body = await post(http, url, deposit())
            async with http.get(f"{url}/metrics") as response:
                metrics = await response.text()
    finally:
        uvicorn_logger.removeHandler(caplog.handler)
    assert status == 500
    assert headers["Content-Type"] == "application/problem+json"
    assert body == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "internal error in the receiver; retry the request",
    }
    assert 'payrelay_ingest_requests_total{source="acme-bank",status="500"} 1.0' in metrics
    assert 'payrelay_ingest_duration_seconds_count{source="acme-bank"} 1.0' in metrics
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(r.name, r.getMessage()) for r in errors] == [
        ("payrelay.receiver", "ingest from acme-bank failed unexpectedly")
    ]
    assert errors[0].exc_info is not None and "secret internals" in str(errors[0].exc_info[1])


async def test_method_not_allowed_is_problem_json(receiver: str, http: aiohttp.ClientSession) -> None:
    """Routing errors also speak problem+json."""
    async with http.get(f"{receiver}/v1/ingest/acme-bank") as response:
        assert response.status == 405
        assert response.headers["Content-Type"] == "application/problem+json"


def test_unique_ids() -> None:
    """example_event gives every event its own id."""
    assert len({example_event("bank.deposit", amount="1.00", currency="USD")["id"] for _ in range(10)}) == 10
    assert uuid.UUID(example_event("check.scan", amount="1.00", currency="USD")["id"])
