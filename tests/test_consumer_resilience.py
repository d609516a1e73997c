"""Crashes, races, broker restarts, shutdowns and the rate limit — each still records exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from consumers.app import health_app, running_worker
from service.receiver import create_app as create_receiver
from service.settings import Settings
from tests.conftest import SECRET, free_port, serve
from tests.factories import new_deposit
from tests.pipeline import (
    API_KEY,
    Pipeline,
    capture_queue,
    pipeline,
    pipeline_settings,
    sandbox_server,
    until,
)
from tests.proxy import TcpProxy

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

PAYRELAY = str(Path(sys.executable).parent / "payrelay")


async def publish_raw(amqp: aio_pika.abc.AbstractConnection, prefix: str, event: dict[str, Any]) -> None:
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{prefix}.events")
    message = aio_pika.Message(
        orjson.dumps(event),
        message_id=event["id"],
        headers={"x-payrelay-source": "acme-bank"},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await exchange.publish(message, routing_key=event["type"])
    await channel.close()


async def sandbox_admin(
    http: aiohttp.ClientSession, url: str, method: str, path: str, body: Any = None
) -> Any:
    async with http.request(method, f"{url}{path}", json=body) as response:
        assert response.status < 300, await response.text()
        return await response.json(content_type=None) if response.status != 204 else None


async def amount_paid(http: aiohttp.ClientSession, sandbox_url: str, invoice: str) -> int:
    import base64

    authorization = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
    async with http.get(
        f"{sandbox_url}/api/v1/invoices/{invoice}", headers={"Authorization": authorization}
    ) as r:
        paid: int = (await r.json())["invoice"]["amount_paid"]
        return paid


def consumer_env(settings: Settings, tmp_path: Path) -> dict[str, str]:
    """The environment for a `payrelay consumer` subprocess equivalent to `settings`."""
    config = tmp_path / "payrelay.toml"
    config.write_text(f'[sources.acme-bank]\nsecrets = ["{SECRET}"]\n')
    return {
        **os.environ,
        "PAYRELAY_CONFIG": str(config),
        "PAYRELAY_AMQP_URL": settings.broker.url.get_secret_value(),
        "PAYRELAY_AMQP_PREFIX": settings.broker.prefix,
        "PAYRELAY_CHARGEBEE_BASE_URL": str(settings.chargebee.base_url),
        "PAYRELAY_CHARGEBEE_API_KEY": API_KEY,
        "PAYRELAY_CHARGEBEE_RATE_LIMIT": "0",
        "PAYRELAY_LEDGER_URL": settings.ledger.url,
        "PAYRELAY_LEDGER_LEASE_SECONDS": "3",
        "PAYRELAY_CHARGEBEE_TIMEOUT_SECONDS": "2",
        "PAYRELAY_RETRY_DELAYS_SECONDS": "[1, 2]",
        "PAYRELAY_PUBLISH_TIMEOUT_SECONDS": "3",
    }


async def start_consumer(env: dict[str, str]) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        PAYRELAY,
        "consumer",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 15
        while True:
            assert process.returncode is None, "the consumer exited at start"
            assert time.monotonic() < deadline, "the consumer never became ready"
            try:
                async with http.get(f"{url}/readyz") as response:
                    if response.status == 200:
                        return process, url
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_crash_between_chargebee_and_ack_records_once(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """Consumer killed after Chargebee recorded but before the ack: the redelivery finds it, calls nothing.

    The second consumer takes over the lapsed lease, so the first may have called: it looks in
    Chargebee (the invoice's linked payments) before any record_payment, and finds the payment.
    """
    async with sandbox_server() as sandbox_url:
        settings = pipeline_settings(prefix, f"sqlite:///{tmp_path / 'ledger.db'}", sandbox_url)
        process, _ = await start_consumer(consumer_env(settings, tmp_path))
        async with capture_queue(amqp, prefix) as capture:
            # Chargebee records at once, then holds its answer for 5 s: the window to crash in.
            fault = {"latency_ms": 5000, "after_commit": True, "invoice_id": "INV-1001", "count": 1}
            await sandbox_admin(http, sandbox_url, "POST", "/sandbox/faults", fault)
            await publish_raw(amqp, prefix, new_deposit("INV-1001"))
            await until(lambda: _paid(http, sandbox_url, "INV-1001", 2500), what="Chargebee to record")
            process.kill()
            await process.wait()
            async with running_worker(settings):
                await until(lambda: _has_message(capture), within=15, what="the confirmation")
            assert await amount_paid(http, sandbox_url, "INV-1001") == 2500
            # The second consumer made no record_payment (the killed one's call, cut short, is not
            # in the log); it read the invoice and the one transaction linked to it.
            async with http.get(f"{sandbox_url}/sandbox/requests") as response:
                assert (await response.json())["requests"] == []
            async with http.get(f"{sandbox_url}/sandbox/requests?operation=retrieve_transaction") as response:
                assert len((await response.json())["requests"]) == 1


async def collect(queue: aio_pika.abc.AbstractQueue, count: int, what: str) -> list[dict[str, Any]]:
    """The bodies of the next `count` messages of a capture queue, within 20 s."""
    got: list[dict[str, Any]] = []

    async def enough() -> bool:
        message = await queue.get(fail=False, no_ack=True)
        if message is not None:
            got.append(orjson.loads(message.body))
        return len(got) == count

    await until(enough, within=20, what=what)
    return got


async def _paid(http: aiohttp.ClientSession, sandbox_url: str, invoice: str, amount: int) -> bool:
    return await amount_paid(http, sandbox_url, invoice) == amount


async def _has_message(queue: aio_pika.abc.AbstractQueue) -> bool:
    return await queue.get(fail=False, no_ack=True) is not None


async def test_two_consumers_racing_on_a_duplicate_call_chargebee_once(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """The same event delivered to two replicas at once (shared PostgreSQL ledger): one Chargebee call."""
    async with sandbox_server() as sandbox_url:
        settings = pipeline_settings(
            prefix, "postgresql://postgres@127.0.0.1:5432/test", sandbox_url, consumer_prefetch=1
        )
        fault = {"latency_ms": 1000, "invoice_id": "INV-1002", "count": 2}
        await sandbox_admin(http, sandbox_url, "POST", "/sandbox/faults", fault)
        async with running_worker(settings), running_worker(settings), capture_queue(amqp, prefix) as capture:
            event = new_deposit("INV-1002")
            await publish_raw(amqp, prefix, event)
            await publish_raw(amqp, prefix, event)
            got = await collect(capture, 2, what="both deliveries to be confirmed")
        assert got[0] == got[1]
        async with http.get(f"{sandbox_url}/sandbox/requests") as response:
            assert len((await response.json())["requests"]) == 1
        assert await amount_paid(http, sandbox_url, "INV-1002") == 2500


async def test_rate_limit_holds_under_a_burst(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """A burst of 8 events with a 120/min limit: Chargebee sees them at least 0.5 s apart."""
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    # Eight in flight at 0.5 s a permit: the lease must outlast 4 s of waiting and a call.
    async with pipeline(
        prefix, ledger, amqp, chargebee_rate_limit=120, consumer_prefetch=8, ledger_lease_seconds=8.0
    ) as pipe:
        events = [new_deposit(f"INV-100{i}", "1.00") for i in range(1, 9)]
        await pipe.send(events)
        await pipe.confirmations(8, within=20)
        times = sorted(r["at"] for r in await pipe.requests())
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) == 8
    assert min(gaps) >= 0.49, gaps


async def test_broker_restart_resumes_within_10s(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Broker connection lost and back: consuming again within 10 s, without a restart, and events flow."""
    proxy = TcpProxy()
    await proxy.start()
    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    try:
        async with pipeline(prefix, ledger, amqp, amqp_url=proxy.url) as pipe:
            await pipe.send(new_deposit("INV-1003", "1.00"))
            await pipe.confirmations(1)
            await proxy.cut()
            await until(lambda: _not_consuming(pipe), what="the consumer to notice")
            await asyncio.sleep(1.0)
            await proxy.restore()
            back = time.monotonic()
            await until(lambda: _consuming(pipe), within=10, what="consuming again")
            assert time.monotonic() - back < 10
            await until(
                lambda: _send_ok(pipe, new_deposit("INV-1003", "2.00")), within=5, what="the receiver"
            )
            [confirmation] = await pipe.confirmations(1)
            assert confirmation["data"]["amount"] == 200
    finally:
        await proxy.cut()


async def _consuming(pipe: Pipeline) -> bool:
    return pipe.worker.consuming


async def _not_consuming(pipe: Pipeline) -> bool:
    return not pipe.worker.consuming


async def _send_ok(pipe: Pipeline, event: dict[str, Any]) -> bool:
    from service.sender import post_signed

    status, _ = await post_signed(pipe.http, pipe.receiver_url, "acme-bank", SECRET, event)
    return status == 202


async def test_sigterm_finishes_in_flight_work(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """SIGTERM mid-call: the consumer stops taking messages, finishes the one in flight, acks, exits 0."""
    async with sandbox_server() as sandbox_url:
        settings = pipeline_settings(prefix, f"sqlite:///{tmp_path / 'ledger.db'}", sandbox_url)
        process, _ = await start_consumer(consumer_env(settings, tmp_path))
        async with capture_queue(amqp, prefix) as capture, serve(create_receiver(settings)):
            fault = {"latency_ms": 1500, "invoice_id": "INV-1004", "count": 1}
            await sandbox_admin(http, sandbox_url, "POST", "/sandbox/faults", fault)
            await publish_raw(amqp, prefix, new_deposit("INV-1004"))
            await asyncio.sleep(0.7)  # the call to Chargebee is under way
            process.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(process.wait(), 15) == 0
            assert await _has_message(capture)
        channel = await amqp.channel()
        queue = await channel.declare_queue(f"{prefix}.record-payment", passive=True)
        assert queue.declaration_result.message_count == 0  # acked, not returned
        assert await amount_paid(http, sandbox_url, "INV-1004") == 2500


async def test_two_copies_in_flight_in_one_consumer_call_chargebee_once(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """Both copies of an event prefetched by the same consumer at once: one Chargebee call."""
    async with sandbox_server() as sandbox_url:
        settings = pipeline_settings(prefix, f"sqlite:///{tmp_path / 'ledger.db'}", sandbox_url)
        fault = {"latency_ms": 500, "invoice_id": "INV-1005", "count": 2}
        await sandbox_admin(http, sandbox_url, "POST", "/sandbox/faults", fault)
        async with running_worker(settings), capture_queue(amqp, prefix) as capture:
            event = new_deposit("INV-1005")
            await publish_raw(amqp, prefix, event)
            await publish_raw(amqp, prefix, event)
            got = await collect(capture, 2, what="both copies to be confirmed")
        assert got[0] == got[1]
        async with http.get(f"{sandbox_url}/sandbox/requests") as response:
            assert len((await response.json())["requests"]) == 1


async def test_ledger_outage_is_retried_not_dead_lettered(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, http: aiohttp.ClientSession
) -> None:
    """PostgreSQL unreachable: the event waits in the retry tiers (no hot requeue), then is recorded."""
    database = TcpProxy(target_port=5432)
    await database.start()
    ledger_url = f"postgresql://postgres@127.0.0.1:{database.port}/test"
    try:
        async with sandbox_server() as sandbox_url:
            settings = pipeline_settings(
                prefix, ledger_url, sandbox_url, retry_delays_seconds=[1, 1, 1], max_attempts=10
            )
            async with running_worker(settings) as worker, capture_queue(amqp, prefix) as capture:
                await database.cut()
                await publish_raw(amqp, prefix, new_deposit("INV-1006"))
                await until(lambda: _retried(worker), within=10, what="a retry through the tiers")
                channel = await amqp.channel()
                dead = await channel.declare_queue(f"{prefix}.dead-letter", passive=True)
                assert dead.declaration_result.message_count == 0
                await database.restore()
                await until(lambda: _has_message(capture), within=20, what="the confirmation")
            assert await amount_paid(http, sandbox_url, "INV-1006") == 2500
    finally:
        await database.cut()


async def _retried(worker: Any) -> bool:
    return any(
        sample.value > 0
        for metric in worker.metrics.retries.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


@pytest.mark.parametrize("role", ["consumer", "receiver"])
async def test_a_changed_queue_argument_stops_the_process_with_one_clear_line(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection, role: str
) -> None:
    """The work queue exists with x-delivery-limit 20 and the configuration says 30: the process
    exits 2 with one line naming the queue, the argument and the way out, instead of retrying for ever."""
    from service.broker import declare_once
    from service.topology import build

    await declare_once("amqp://guest:guest@127.0.0.1:5672/", build(prefix, [1, 2], 20))
    async with sandbox_server() as sandbox_url:
        settings = pipeline_settings(prefix, f"sqlite:///{tmp_path / 'ledger.db'}", sandbox_url)
        env = consumer_env(settings, tmp_path) | {"PAYRELAY_DELIVERY_LIMIT": "30"}
        process = await asyncio.create_subprocess_exec(
            PAYRELAY, role, "--port", str(free_port()), env=env,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    text = err.decode()
    assert "Traceback" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("payrelay: RabbitMQ refused payrelay's topology")
    assert (
        "x-delivery-limit" in last and f"{prefix}.record-payment" in last and "PAYRELAY_AMQP_PREFIX" in last
    )


async def test_a_resource_alarm_blocks_publishing_not_acknowledging(
    prefix: str, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Under a memory alarm RabbitMQ blocks the publishing connection: /readyz says so (503,
    blocked), while the intake connection, which acknowledges, is not blocked."""
    from service.broker import BrokerUnavailable, Outgoing

    ledger = f"sqlite:///{tmp_path / 'ledger.db'}"
    async with pipeline(prefix, ledger, amqp) as pipe:
        port = free_port()
        app = health_app(pipe.settings, pipe.worker, pipe.worker.broker, pipe.worker.metrics, pipe.http)
        async with serve(app, port) as health_url:
            alarm = await asyncio.create_subprocess_exec(
                "rabbitmqctl", "set_vm_memory_high_watermark", "0.0000001"
            )
            await alarm.wait()
            try:
                probe = Outgoing(exchange=pipe.worker.topology.confirmations, routing_key="probe", body=b"{}",
                                 message_id="probe", mandatory=False)  # fmt: skip
                with contextlib.suppress(BrokerUnavailable):
                    await pipe.worker.broker.publish([probe], within=2.0)
                await until(lambda: _blocked(pipe), what="the publishing connection to be blocked")
                async with pipe.http.get(f"{health_url}/readyz") as response:
                    assert response.status == 503
                    assert (await response.json())["blocked"] is True
                assert pipe.worker.intake.blocked is False
            finally:
                restore = await asyncio.create_subprocess_exec(
                    "rabbitmqctl", "set_vm_memory_high_watermark", "0.4"
                )
                await restore.wait()
            await until(lambda: _unblocked(pipe), what="the alarm to clear")
            async with pipe.http.get(f"{health_url}/readyz") as response:
                assert response.status == 200


async def _blocked(pipe: Pipeline) -> bool:
    return pipe.worker.broker.blocked


async def _unblocked(pipe: Pipeline) -> bool:
    return not pipe.worker.broker.blocked
