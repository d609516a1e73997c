"""The receiver's HTTP contract, in-process: statuses, problem+json, signatures, batches, metrics.

The app runs through httpx's ASGI transport with a `MemoryPublisher` in place of the broker, so
these need neither uvicorn nor RabbitMQ; durability and outages are tests/test_receiver.py's, on
the real broker.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest
from starlette.applications import Starlette

from service.broker import MemoryPublisher, Outgoing
from service.receiver import create_app, create_metrics_app
from service.sender import example_event, signed_headers
from service.settings import Settings
from tests.conftest import LOCKBOX_SECRET, OLD_SECRET, SECRET, make_settings
from tests.factories import new_deposit


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
async def client(settings: Settings, publisher: MemoryPublisher) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, publisher=publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as c:
        yield c


async def post(
    client: httpx.AsyncClient,
    payload: Any,
    *,
    source: str = "acme-bank",
    secret: str = SECRET,
    content_type: str | None = None,
    raw: bytes | None = None,
) -> httpx.Response:
    body = raw if raw is not None else orjson.dumps(payload)
    if content_type is None:
        batch = isinstance(payload, list)
        content_type = "application/cloudevents-batch+json" if batch else "application/cloudevents+json"
    return await client.post(
        f"/v1/ingest/{source}", content=body, headers=signed_headers(secret, body, content_type)
    )


def ids(published: list[Outgoing]) -> list[str]:
    return [m.message_id for m in published]


async def test_an_accepted_event_is_handed_over_whole(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """202 with the counts; the body, id, type and x-payrelay-source go to the events exchange."""
    event = new_deposit("INV-1001", "1250.00")
    response = await post(client, event)
    assert response.status_code == 202
    assert response.json() == {"accepted": 1, "published": 1, "ids": [event["id"]]}
    [message] = publisher.published
    assert (message.routing_key, message.message_id, message.type) == (
        "bank.deposit",
        event["id"],
        "bank.deposit",
    )
    assert orjson.loads(message.body) == event
    assert message.headers["x-payrelay-source"] == "acme-bank"


async def test_rotated_secret_still_accepted(client: httpx.AsyncClient) -> None:
    """During rotation a request signed with the old secret is accepted."""
    assert (await post(client, new_deposit("INV-1001", "1250.00"), secret=OLD_SECRET)).status_code == 202


async def test_a_batch_is_handed_over_as_one_message_per_event(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    events = [example_event(t, amount="10.00", currency="USD") for t in ("bank.deposit", "check.scan") * 3]
    response = await post(client, events, source="lockbox", secret=LOCKBOX_SECRET)
    assert response.status_code == 202
    assert ids(publisher.published) == [e["id"] for e in events]


async def test_invalid_batch_publishes_nothing(client: httpx.AsyncClient, publisher: MemoryPublisher) -> None:
    """One bad event fails the whole batch with its index, and nothing is published."""
    events = [
        new_deposit("INV-1001", "1250.00"),
        new_deposit("INV-1001", "1250.00"),
        {**new_deposit("INV-1001", "1250.00"), "specversion": "0.3"},
        new_deposit("INV-1001", "1250.00"),
    ]
    events[1]["data"]["amount"] = "1.001"
    response = await post(client, events)
    assert response.status_code == 422
    assert response.headers["Content-Type"] == "application/problem+json"
    body = response.json()
    assert body["invalid_indexes"] == [1, 2]
    assert {(e["index"], e["field"]) for e in body["errors"]} == {(1, "data.amount"), (2, "specversion")}
    assert publisher.published == []


async def test_batch_with_an_overlong_id_publishes_nothing(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """An id of 256 UTF-8 bytes (86 characters) at index 3 fails the batch with a 422; none is published."""
    events = [new_deposit("INV-1001", "1250.00") for _ in range(5)]
    events[3]["id"] = "中" * 85 + "j"
    response = await post(client, events)
    assert response.status_code == 422
    assert response.json()["invalid_indexes"] == [3]
    assert response.json()["errors"] == [
        {"field": "id", "message": "must be at most 255 bytes in UTF-8; this one is 256", "index": 3}
    ]
    assert publisher.published == []


async def test_batch_over_the_event_limit(prefix: str, publisher: MemoryPublisher) -> None:
    """More events than max_batch_events is a 422 naming the limit."""
    app = create_app(make_settings(prefix, max_batch_events=3), publisher=publisher)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver"
    ) as client:
        response = await post(client, [new_deposit("INV-1001", "1250.00") for _ in range(4)])
    assert response.status_code == 422
    assert "1 to 3 events" in response.json()["detail"]


async def test_repeat_identity_is_not_republished(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """A sender's retry of an identity just published is answered 202 and not published again."""
    event = new_deposit("INV-1001", "1250.00")
    assert (await post(client, event)).status_code == 202
    again = await post(client, event)
    assert (again.status_code, again.json()["published"]) == (202, 0)
    assert len(publisher.published) == 1


async def test_a_refused_publish_is_503_with_retry_after(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """The broker not confirming (down, slow, nack, unroutable) is a 503 the sender retries."""
    publisher.refuse = "the broker did not confirm in time"
    response = await post(client, new_deposit("INV-1001", "1250.00"))
    assert (response.status_code, response.headers["Retry-After"]) == (503, "5")
    assert response.headers["Content-Type"] == "application/problem+json"
    publisher.refuse = None
    assert (
        await post(client, new_deposit("INV-1001", "1250.00"))
    ).status_code == 202  # nothing was remembered as published


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda h: h.pop("webhook-signature"), "missing"),
        (lambda h: h.update({"webhook-signature": "v1,Zm9v"}), "well-formed"),
        (lambda h: h.update({"webhook-signature": "v1,%%%"}), "well-formed"),
        (lambda h: h.update({"webhook-timestamp": str(int(time.time()) - 1000)}), "tolerance"),
        (lambda h: h.update({"webhook-timestamp": "soon"}), "timestamp"),
        (lambda h: h.update({"webhook-id": "other"}), "no signature matches"),
    ],
)
async def test_signature_failures_are_401(client: httpx.AsyncClient, mutate: Any, needle: str) -> None:
    """Missing, malformed, stale or non-matching signatures are 401 problem+json, never 500."""
    body = orjson.dumps(new_deposit("INV-1001", "1250.00"))
    headers = signed_headers(SECRET, body, "application/cloudevents+json")
    mutate(headers)
    response = await client.post("/v1/ingest/acme-bank", content=body, headers=headers)
    assert response.status_code == 401
    assert response.headers["Content-Type"] == "application/problem+json"
    assert needle in response.json()["detail"]


async def test_a_request_replayed_to_another_source_is_401(client: httpx.AsyncClient) -> None:
    """Sources have their own secrets, so a request signed for acme-bank is refused by lockbox."""
    body = orjson.dumps(new_deposit("INV-1001", "1250.00"))
    headers = signed_headers(SECRET, body, "application/cloudevents+json")
    assert (await client.post("/v1/ingest/lockbox", content=body, headers=headers)).status_code == 401
    assert (await client.post("/v1/ingest/acme-bank", content=body, headers=headers)).status_code == 202


async def test_unknown_source_is_404(client: httpx.AsyncClient) -> None:
    response = await post(client, new_deposit("INV-1001", "1250.00"), source="nobody")
    assert (response.status_code, response.json()["status"]) == (404, 404)


async def test_type_not_allowed_for_source_is_422(client: httpx.AsyncClient) -> None:
    """acme-bank only sends bank.deposit; a check.scan from it is refused with the reason."""
    response = await post(client, example_event("check.scan", amount="5.00", currency="USD"))
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "type", "message": "check.scan is not accepted from this source"}
    ]


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
async def test_body_errors(client: httpx.AsyncClient, raw: bytes, content_type: str, status: int) -> None:
    """Non-JSON is 400, the wrong media type 415, an invalid event 422 — all problem+json."""
    response = await post(client, None, raw=raw, content_type=content_type)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json()["status"] == status


async def test_oversized_body_is_413(client: httpx.AsyncClient) -> None:
    """A body over max_body_bytes with a Content-Length is a 413."""
    body = b" " * (1024 * 1024 + 1)
    response = await client.post(
        "/v1/ingest/acme-bank", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 413


async def metrics_of(app: Starlette) -> str:
    """What Prometheus scrapes: /metrics of the receiver's metrics app (receiver_metrics_port)."""
    transport = httpx.ASGITransport(app=create_metrics_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://metrics") as scraper:
        return (await scraper.get("/metrics")).text


async def test_health_metrics_and_openapi(settings: Settings, publisher: MemoryPublisher) -> None:
    """healthz, readyz (the publisher's readiness), metrics with ingest counters, and the OpenAPI document."""
    app = create_app(settings, publisher=publisher)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        await post(client, new_deposit("INV-1001", "1250.00"))
        assert (await client.get("/readyz")).status_code == 200
        publisher.ready = False
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/healthz")).status_code == 200
        document = (await client.get("/openapi.json")).json()
    assert document["paths"]["/v1/ingest/{source}"]["post"]["responses"]["202"]
    text = await metrics_of(app)
    assert 'payrelay_ingest_events_total{source="acme-bank",status="202",type="bank.deposit"} 1.0' in text
    assert "payrelay_publish_duration_seconds_bucket" in text


class BrokenPublisher(MemoryPublisher):
    async def publish(self, messages: Any, within: float | None = None) -> None:
        raise RuntimeError("a bug, secret internals")


async def test_an_unexpected_error_is_a_counted_problem_json_500(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug in the handler is a problem+json 500 without a traceback, logged once, and in the metrics."""
    app = create_app(settings, publisher=BrokenPublisher())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://receiver"
    ) as client:
        response = await post(client, new_deposit("INV-1001", "1250.00"))
    metrics = await metrics_of(app)
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "application/problem+json"
    assert response.json() == {
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


async def test_method_not_allowed_is_problem_json(client: httpx.AsyncClient) -> None:
    """Routing errors also speak problem+json."""
    response = await client.get("/v1/ingest/acme-bank")
    assert (response.status_code, response.headers["Content-Type"]) == (405, "application/problem+json")


def test_unique_ids() -> None:
    """example_event gives every event its own id."""
    assert len({example_event("bank.deposit", amount="1.00", currency="USD")["id"] for _ in range(10)}) == 10
    assert uuid.UUID(example_event("check.scan", amount="1.00", currency="USD")["id"])


# -- Standard Webhooks conformance and strict bodies ------------------------------------------------


async def test_a_signed_body_with_a_repeated_key_is_400(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """A correctly signed body whose `data.amount` appears twice is refused: it means one thing only."""
    event = new_deposit("INV-1001", "1.00")
    body = orjson.dumps(event).replace(b'"amount":"1.00"', b'"amount":"1.00","amount":"1000000.00"')
    response = await post(client, None, raw=body, content_type="application/cloudevents+json")
    assert (response.status_code, response.headers["Content-Type"]) == (400, "application/problem+json")
    assert "same key twice" in response.json()["detail"]
    assert publisher.published == []


async def test_a_webhook_id_with_dots_is_401(client: httpx.AsyncClient, publisher: MemoryPublisher) -> None:
    """`webhook-id: a.b.c`, signed correctly over `a.b.c.{timestamp}.{body}`, is still a 401."""
    body = orjson.dumps(new_deposit("INV-1001", "1250.00"))
    headers = signed_headers(SECRET, body, "application/cloudevents+json", msg_id="a.b.c")
    response = await client.post("/v1/ingest/acme-bank", content=body, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"] == "malformed webhook-id header"
    assert publisher.published == []


async def test_a_content_length_of_other_digits_is_not_a_500(client: httpx.AsyncClient) -> None:
    """`Content-Length: ²` passes `str.isdigit()` but not int(): it is ignored, the body measured."""
    body = orjson.dumps(new_deposit("INV-1001", "1250.00"))
    signed = signed_headers(SECRET, body, "application/cloudevents+json")
    headers = [(k.encode(), v.encode()) for k, v in signed.items()]
    headers.append((b"content-length", "²".encode("latin-1")))
    request = client.build_request("POST", "/v1/ingest/acme-bank", content=body, headers=headers)
    assert (await client.send(request)).status_code == 202


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v1/ingest/", 404),  # no source
        ("POST", "/v1/ingest/acme-bank/extra", 404),  # two segments
        ("GET", "/v1/ingest/acme-bank", 405),  # the route exists for POST only
        ("POST", "/v1/ingest/nobody", 404),  # answered by the handler: an unknown source
    ],
)
async def test_the_ingest_fast_path_answers_as_the_route_would(
    client: httpx.AsyncClient, method: str, path: str, status: int
) -> None:
    """POST /v1/ingest/{source} skips Starlette's router (receiver.ReceiverApp); the paths next to
    it still get what the route table says."""
    response = await client.request(method, path, content=b"{}", headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json") or status == 405
