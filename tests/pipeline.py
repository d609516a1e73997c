"""A whole payrelay pipeline for tests: sandbox, receiver and worker over real HTTP and RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aio_pika
import aiohttp
import orjson

from consumers.app import running_worker
from consumers.record_payment import RecordPaymentWorker
from service.chargebee_sandbox import SandboxConfig
from service.chargebee_sandbox import create_app as create_sandbox
from service.dead_letters import Letter
from service.ledger.letters import LetterTable
from service.receiver import create_app as create_receiver
from service.sender import post_signed
from service.settings import Settings, SourceSettings
from tests.conftest import LOCKBOX_SECRET, SECRET, make_settings, serve

API_KEY = "test_pipeline_key"
ALL_STATES = ("dead", "replayed", "purged")


def pipeline_settings(prefix: str, ledger_url: str, sandbox_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "chargebee_base_url": sandbox_url,
        "chargebee_api_key": API_KEY,
        "chargebee_rate_limit": 0,
        "ledger_url": ledger_url,
        "retry_delays_seconds": [1, 2],
        "max_attempts": 3,
        # Short enough for takeover tests, long enough for one call (settings check lease >= call + 1 s).
        "ledger_lease_seconds": 3.0,
        "chargebee_timeout_seconds": 2.0,
        "auth_retry_seconds": 0.5,
        "shutdown_grace_seconds": 5.0,
        "sources": {
            "acme-bank": SourceSettings(secrets=[SECRET], skip_emails=True),
            "lockbox": SourceSettings(secrets=[LOCKBOX_SECRET], invoice_pattern=r"Invoice\s+#(\w+-\d+)"),
        },
    }
    values.update(overrides)
    return make_settings(prefix, **values)


@dataclass
class Pipeline:
    settings: Settings
    receiver_url: str
    sandbox_url: str
    http: aiohttp.ClientSession
    amqp: aio_pika.abc.AbstractConnection
    capture: aio_pika.abc.AbstractQueue
    worker: RecordPaymentWorker

    async def send(self, payload: Any, source: str = "acme-bank") -> int:
        secret = LOCKBOX_SECRET if source == "lockbox" else SECRET
        status, body = await post_signed(self.http, self.receiver_url, source, secret, payload)
        assert status == 202, body
        return status

    async def requests(self, invoice_id: str | None = None) -> list[dict[str, Any]]:
        async with self.http.get(f"{self.sandbox_url}/sandbox/requests") as response:
            found: list[dict[str, Any]] = (await response.json())["requests"]
        return [r for r in found if invoice_id is None or r["invoice_id"] == invoice_id]

    async def invoice(self, invoice_id: str) -> dict[str, Any]:
        url = f"{self.sandbox_url}/api/v1/invoices/{invoice_id}"
        authorization = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
        async with self.http.get(url, headers={"Authorization": authorization}) as response:
            invoice: dict[str, Any] = (await response.json())["invoice"]
            return invoice

    async def admin(self, method: str, path: str, body: Any = None) -> Any:
        async with self.http.request(method, f"{self.sandbox_url}{path}", json=body) as response:
            assert response.status < 300, await response.text()
            return await response.json(content_type=None) if response.status != 204 else None

    async def confirmations(self, count: int, within: float = 10.0) -> list[dict[str, Any]]:
        """The next `count` confirmation events (bodies), acked."""
        got: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + within
        while len(got) < count:
            assert asyncio.get_running_loop().time() < deadline, f"only {len(got)} of {count} confirmations"
            message = await self.capture.get(fail=False, no_ack=True)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            got.append(orjson.loads(message.body))
        return got

    async def dead_letters(self, count: int, within: float = 10.0) -> list[Letter]:
        """The first `count` dead letters, once the consumer's keeper has stored them in the ledger."""
        letters: list[Letter] = []

        async def stored() -> bool:
            nonlocal letters
            letters = await self.letters().select(None, now=datetime.now(UTC), states=ALL_STATES)
            return len(letters) >= count

        await until(stored, within=within, what=f"{count} dead letter(s) in the ledger")
        return letters[:count]

    def letters(self) -> LetterTable:
        return self.worker.ledger.letters(self.settings.broker.topology().dead_letter)

    async def dead_letter_count(self) -> int:
        """Dead letters waiting in the ledger (the keeper empties the queue)."""
        return await self.letters().count()

    async def queue_depth(self, name: str) -> int:
        channel = await self.amqp.channel()
        queue = await channel.declare_queue(f"{self.settings.broker.prefix}.{name}", passive=True)
        await channel.close()
        return queue.declaration_result.message_count or 0


async def redeliver(pipe: Pipeline, event: dict[str, Any]) -> None:
    """The event again, straight to the events exchange (the receiver answers a quick repeat itself)."""
    channel = await pipe.amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{pipe.settings.broker.prefix}.events")
    message = aio_pika.Message(
        orjson.dumps(event), message_id=event["id"], headers={"x-payrelay-source": "acme-bank"}
    )
    await exchange.publish(message, routing_key=event["type"])
    await channel.close()


async def distinct(pipe: Pipeline, count: int, within: float = 15) -> list[dict[str, Any]]:
    """The next confirmations until `count` distinct ids arrived (delivery is at least once)."""
    seen: dict[str, dict[str, Any]] = {}
    deadline = asyncio.get_running_loop().time() + within
    while len(seen) < count:
        assert asyncio.get_running_loop().time() < deadline, f"only {len(seen)} of {count} confirmations"
        for confirmation in await pipe.confirmations(1, within=within):
            seen.setdefault(confirmation["id"], confirmation)
    return list(seen.values())


async def until(check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "condition") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def capture_queue(
    amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> AsyncIterator[aio_pika.abc.AbstractQueue]:
    channel = await amqp.channel()
    exchange = await channel.declare_exchange(
        f"{prefix}.confirmations", aio_pika.ExchangeType.TOPIC, durable=True
    )
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(exchange, "#")
    yield queue


@contextlib.asynccontextmanager
async def sandbox_server(
    latency_ms: float = 0.0, rate_limit: int = 0, clock: Callable[[], float] | None = None
) -> AsyncIterator[str]:
    config = SandboxConfig(api_key=API_KEY, latency_ms=latency_ms, rate_limit=rate_limit)
    if clock is not None:
        config = dataclasses.replace(config, clock=clock)
    async with serve(create_sandbox(config)) as url:
        yield url


@contextlib.asynccontextmanager
async def pipeline(
    prefix: str,
    ledger_url: str,
    amqp: aio_pika.abc.AbstractConnection,
    *,
    sandbox_clock: Callable[[], float] | None = None,
    **overrides: Any,
) -> AsyncIterator[Pipeline]:
    async with sandbox_server(clock=sandbox_clock) as sandbox_url:
        settings = pipeline_settings(prefix, ledger_url, sandbox_url, **overrides)
        async with (
            running_worker(settings) as worker,
            serve(create_receiver(settings)) as receiver_url,
            capture_queue(amqp, prefix) as capture,
            aiohttp.ClientSession() as http,
        ):
            yield Pipeline(settings, receiver_url, sandbox_url, http, amqp, capture, worker)


async def put_dead_letter(
    amqp: aio_pika.abc.AbstractConnection,
    prefix: str,
    event: dict[str, Any],
    *,
    reason: str = "unmatched_invoice",
    error: str = "no invoice found",
    attempts: int = 1,
    origin: str = "acme-bank",
    failed_at: str = "2026-11-25T10:00:00Z",
    chargebee: dict[str, Any] | None = None,
) -> None:
    """A dead letter exactly as the consumer writes one (same exchange, same headers)."""
    headers: dict[str, Any] = {
        "x-payrelay-source": origin,
        "x-payrelay-reason": reason,
        "x-payrelay-error": error,
        "x-payrelay-attempts": attempts,
        "x-payrelay-failed-at": failed_at,
    }
    if chargebee is not None:
        headers["x-payrelay-chargebee-error"] = orjson.dumps(chargebee).decode()
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{prefix}.dead-letter")
    message = aio_pika.Message(
        orjson.dumps(event),
        message_id=event["id"],
        headers=headers,
        content_type="application/cloudevents+json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await exchange.publish(message, routing_key="")
    await channel.close()
