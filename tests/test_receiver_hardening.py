"""The receiver faces the internet: what an unauthenticated caller must not be able to do with it.

Host headers and redirects, metrics kept off the public port, scrapes that cost the broker nothing,
log lines an event id cannot forge. Slow and oversized clients: tests/test_receiver_slow_clients.py.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest

from service import queue_stats as queue_stats_module
from service.broker import Broker, MemoryPublisher
from service.queue_stats import queue_names, queue_stats
from service.receiver import create_app, create_metrics_app
from service.sender import signed_headers
from service.settings import Settings
from tests.conftest import AMQP_URL, SECRET, make_settings
from tests.factories import new_deposit
from tests.pipeline import pipeline

FORGED = "\n2026-12-02 06:00:00,000 CRITICAL payrelay.receiver forged: the ledger was wiped"


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


def client_for(settings: Settings, publisher: MemoryPublisher) -> httpx.AsyncClient:
    app = create_app(settings, publisher=publisher)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver")


async def signed_post(
    client: httpx.AsyncClient, event: dict[str, Any], path: str = "/v1/ingest/acme-bank", **headers: str
) -> httpx.Response:
    body = orjson.dumps(event)
    sent = signed_headers(SECRET, body, "application/cloudevents+json") | headers
    return await client.post(path, content=body, headers=sent)


# -- Host headers --------------------------------------------------------------------------------


async def test_a_trailing_slash_is_a_404_not_a_redirect_to_the_named_host(
    settings: Settings, publisher: MemoryPublisher
) -> None:
    """`POST /v1/ingest/acme-bank/` with `Host: evil.example` used to answer 307 to
    `http://evil.example/v1/ingest/acme-bank`; now no path is redirected anywhere."""
    async with client_for(settings, publisher) as client:
        event = new_deposit("INV-1001", "1250.00")
        response = await signed_post(client, event, "/v1/ingest/acme-bank/", host="evil.example")
        healthz = await client.get("/healthz/", headers={"host": "evil.example"})
    assert (response.status_code, response.headers["content-type"]) == (404, "application/problem+json")
    assert "location" not in response.headers and "location" not in healthz.headers
    assert healthz.status_code == 404
    assert publisher.published == []


async def test_only_trusted_hosts_reach_the_ingest_endpoint(prefix: str, publisher: MemoryPublisher) -> None:
    """With receiver_trusted_hosts set, another Host is a problem+json 400 before anything is read;
    probes, which call by pod address, still answer."""
    settings = make_settings(prefix, receiver_trusted_hosts=["payrelay.example.com", "*.payrelay.example"])
    async with client_for(settings, publisher) as client:
        refused = await signed_post(client, new_deposit("INV-1001", "1.00"), host="evil.example")
        for good in ("payrelay.example.com", "PAYRELAY.example.com:443", "eu.payrelay.example"):
            accepted = await signed_post(client, new_deposit("INV-1001", "1.00"), host=good)
            assert accepted.status_code == 202, good
        probes = [await client.get(p, headers={"host": "10.1.2.3:8080"}) for p in ("/healthz", "/readyz")]
    assert (refused.status_code, refused.headers["content-type"]) == (400, "application/problem+json")
    assert "receiver_trusted_hosts" in refused.json()["detail"]
    assert [p.status_code for p in probes] == [200, 200]
    assert len(publisher.published) == 3


async def test_any_host_is_the_default(settings: Settings, publisher: MemoryPublisher) -> None:
    """Behind a load balancer the receiver need not know its public name: nothing reflects Host."""
    async with client_for(settings, publisher) as client:
        response = await signed_post(client, new_deposit("INV-1001", "1.00"), host="whatever.example")
    assert response.status_code == 202


# -- metrics ---------------------------------------------------------------------------------------


async def test_metrics_are_served_on_their_own_port_only(
    settings: Settings, publisher: MemoryPublisher
) -> None:
    """The public app has no /metrics (its series name every source); the metrics app
    (receiver_metrics_port) has them, with /healthz and /readyz for probes."""
    app = create_app(settings, publisher=publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://r") as public:
        await signed_post(public, new_deposit("INV-1001", "1.00"))
        exposed = await public.get("/metrics")
    transport = httpx.ASGITransport(app=create_metrics_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://m") as scraper:
        scraped = await scraper.get("/metrics")
        probes = [(await scraper.get(p)).status_code for p in ("/healthz", "/readyz")]
    assert exposed.status_code == 404 and "acme-bank" not in exposed.text
    assert scraped.status_code == 200
    assert 'payrelay_ingest_requests_total{source="acme-bank",status="202"} 1.0' in scraped.text
    assert probes == [200, 200]


async def test_scrapes_reuse_queue_figures_instead_of_opening_channels(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """50 scrapes in a row, then 10 at once, open one channel per queue in all (they used to open
    one per queue per scrape: 301 for 50); figures older than MAX_AGE_SECONDS are asked again."""
    settings = make_settings(prefix)
    broker = Broker(AMQP_URL, settings.broker.topology())
    await broker.start(wait=5)
    try:
        assert broker.connection is not None
        opened = 0
        real_channel = broker.connection.channel

        def counting_channel(*args: Any, **kwargs: Any) -> Any:
            nonlocal opened
            opened += 1
            return real_channel(*args, **kwargs)

        monkeypatch.setattr(broker.connection, "channel", counting_channel)
        queues = len(queue_names(settings.broker.topology()))
        for _ in range(50):
            await queue_stats(settings, broker, None)
        await asyncio.gather(*(queue_stats(settings, broker, None) for _ in range(10)))
        assert opened == queues
        monkeypatch.setattr(queue_stats_module, "MAX_AGE_SECONDS", 0.2)
        await asyncio.sleep(0.3)
        stats = await queue_stats(settings, broker, None)
        assert opened == 2 * queues
        assert [s.name for s in stats] == queue_names(settings.broker.topology())
    finally:
        await broker.stop()


# -- log lines -------------------------------------------------------------------------------------


def forged_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Log lines (as a one-line-per-record handler writes them) that look like the forged one."""
    lines = [line for record in caplog.records for line in record.getMessage().split("\n")]
    return [line for line in lines if line.startswith("2026-12-02 06:00:00,000 CRITICAL")]


async def test_an_event_id_cannot_forge_a_receiver_log_line(
    settings: Settings, publisher: MemoryPublisher, caplog: pytest.LogCaptureFixture
) -> None:
    """An id with a newline is logged escaped (`%r`): one record, one line."""
    caplog.set_level(logging.DEBUG, logger="payrelay")  # "accepted" is a DEBUG line
    event = new_deposit("INV-1001", "1.00")
    event["id"] = "evt-1" + FORGED
    async with client_for(settings, publisher) as client:
        assert (await signed_post(client, event)).status_code == 202
    [accepted] = [r for r in caplog.records if r.getMessage().startswith("accepted ")]
    assert "\n" not in accepted.getMessage() and repr(event["id"]) in accepted.getMessage()
    assert forged_lines(caplog) == []


async def test_chargebees_error_message_cannot_forge_a_consumer_log_line(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection, caplog: pytest.LogCaptureFixture
) -> None:
    """A message from outside payrelay (here Chargebee's error text, with a newline) is logged
    escaped in the consumer's dead-letter line."""
    caplog.set_level(logging.INFO, logger="payrelay")
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pipeline(prefix, ledger, amqp) as pipe:
        fault = {"status": 400, "api_error_code": "param_wrong_value", "invoice_id": "INV-1009", "count": 1}
        await pipe.admin("POST", "/sandbox/faults", fault | {"message": "amount is wrong" + FORGED})
        await pipe.send(new_deposit("INV-1009", "25.00"))
        [dead] = await pipe.dead_letters(1)
    assert dead.reason == "rejected_by_chargebee"
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("dead-lettered ")]
    assert "\n" not in line and "\\n2026-12-02" in line
    assert forged_lines(caplog) == []
