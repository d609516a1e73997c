"""The consumer process: two broker connections, one HTTP session, one ledger, one health server.

Beside the worker it runs the outbox drainer, the ledger's cleanup and the dead-letter keeper
(which moves dead letters from their queue into the ledger database, SPEC §6).

`run(settings, stop)` owns every resource for the process's life and releases them in order on
`stop`: stop consuming, finish or return in-flight messages, close the brokers, then the rest.
The process ends early, with `TopologyMismatch`, if the broker refuses the configured topology.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumers.chargebee import ChargebeeClient
from consumers.directory import Directory
from consumers.invoices import InvoiceBook
from consumers.matching.matcher import Matcher
from consumers.outbox import Outbox
from consumers.record_payment import RecordPaymentWorker
from consumers.recording import Recorder
from service.broker import Broker, BrokerUnavailable
from service.dead_letter_queue import Keeper
from service.ledger import Ledger
from service.metrics import Metrics, create_metrics
from service.queue_stats import queue_stats
from service.review.service import Reviews
from service.serving import serve_until
from service.settings import Settings

log = logging.getLogger("payrelay.consumer")
CLEANUP_EVERY = timedelta(hours=1)


def health_app(
    settings: Settings,
    worker: RecordPaymentWorker,
    broker: Broker,
    metrics: Metrics,
    http: aiohttp.ClientSession,
) -> Starlette:
    """`/healthz` (process alive), `/readyz` (consuming: broker up, credentials accepted), `/metrics`."""

    def status() -> dict[str, object]:
        return {
            "broker": "open" if broker.ready and worker.intake.ready else "closed",
            "blocked": broker.blocked,
            "consuming": worker.consuming,
            "paused": worker.paused_reason,
        }

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **status()})

    async def readyz(request: Request) -> Response:
        # Blocked by a resource alarm: acks still flow, but no retry, dead letter or confirmation can.
        ready = worker.consuming and worker.paused_reason is None and not broker.blocked
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **status()}, status_code=200 if ready else 503
        )

    async def metrics_endpoint(request: Request) -> Response:
        with contextlib.suppress(BrokerUnavailable):  # the process's own series are still worth serving
            await queue_stats(settings, broker, http, metrics)
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics_endpoint)]
    )


async def _cleanup_forever(ledger: Ledger, retention_days: int) -> None:
    while True:
        try:
            removed = await ledger.cleanup(retention_days=retention_days)
            if removed:
                log.info("ledger cleanup removed %d entries older than %d days", removed, retention_days)
        except Exception:
            log.exception("ledger cleanup failed")
        await asyncio.sleep(CLEANUP_EVERY.total_seconds())


async def _reviews_forever(reviews: Reviews, broker: Broker, metrics: Metrics, every: float = 10.0) -> None:
    """Send decided items whose event did not reach a queue, and keep the review gauges current."""
    while True:
        await asyncio.sleep(every)
        try:
            if broker.ready:
                await reviews.requeue_decided()
            count, oldest = await reviews.summary()
        except Exception as exc:
            log.warning("could not look at the review queue: %s", type(exc).__name__)
            continue
        metrics.review_open.set(count)
        age = (datetime.now(UTC) - oldest).total_seconds() if oldest is not None else 0.0
        metrics.review_oldest_age.set(max(age, 0.0))


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[RecordPaymentWorker]:
    """Everything a worker needs, opened in order and closed in reverse; yields the running worker."""
    metrics = metrics or create_metrics()
    ledger = await settings.ledger.open()
    connector = aiohttp.TCPConnector(limit=settings.consumer.prefetch, keepalive_timeout=60)
    session = aiohttp.ClientSession(connector=connector)
    client = ChargebeeClient.configured(session, settings, metrics)
    broker = settings.broker.broker("payrelay-consumer")
    intake = settings.broker.broker("payrelay-consumer-intake", publishes=False)
    invoices = InvoiceBook(
        client, api_version=settings.chargebee.api_version, overpayment=settings.consumer.overpayment
    )
    outbox = Outbox(broker, ledger, metrics)
    matching = settings.matching
    directory = Directory(
        client, customers_ttl=matching.customers_ttl_seconds, invoices_ttl=matching.invoices_ttl_seconds
    )
    matcher = Matcher(matching, directory, ledger.payers) if matching.enabled else None
    recorder = Recorder(
        settings, ledger=ledger, chargebee=client, invoices=invoices, metrics=metrics, matcher=matcher
    )
    topology = settings.broker.topology()
    reviews = Reviews(
        ledger, broker, topology, directory, api_version=settings.chargebee.api_version, metrics=metrics
    )
    worker = RecordPaymentWorker(
        settings,
        broker=broker,
        intake=intake,
        recorder=recorder,
        outbox=outbox,
        ledger=ledger,
        metrics=metrics,
        owner=f"{socket.gethostname()}:{os.getpid()}:{id(broker):x}",
    )
    intake.on_connect = worker.on_connect
    keeper = Keeper(intake, topology, ledger, metrics)
    background = [
        asyncio.create_task(_cleanup_forever(ledger, settings.ledger.retention_days)),
        asyncio.create_task(outbox.drain_forever()),
        asyncio.create_task(keeper.keep_forever()),
        asyncio.create_task(_reviews_forever(reviews, broker, metrics)),
    ]
    try:
        await broker.start(wait=5.0)
        await intake.start(wait=5.0)
        yield worker
    finally:
        await worker.stop(settings.consumer.shutdown_grace_seconds)
        for task in background:
            task.cancel()
        # Let them end before what they use closes: a ledger disposed under a query still in
        # flight can leave the process waiting on its connection instead of exiting.
        await asyncio.gather(*background, return_exceptions=True)
        await intake.stop()
        await broker.stop()
        await session.close()
        await ledger.close()


async def run(
    settings: Settings, stop: asyncio.Event, *, host: str = "127.0.0.1", port: int | None = None
) -> None:
    """The `payrelay consumer` process: work until `stop` is set, then shut down gracefully."""
    metrics = create_metrics()
    async with running_worker(settings, metrics) as worker:
        port = settings.consumer.metrics_port if port is None else port
        log.info("consumer health and metrics on http://%s:%d", host, port)
        app = health_app(settings, worker, worker.broker, metrics, worker.chargebee.session)
        serving = asyncio.create_task(serve_until(app, host, port, stop, lifespan="off"))
        failures = [asyncio.create_task(b.failed()) for b in (worker.broker, worker.intake)]
        await asyncio.wait({serving, *failures}, return_when=asyncio.FIRST_COMPLETED)
        failed = next((f.result() for f in failures if f.done()), None)
        for task in failures:
            task.cancel()
        stop.set()
        await serving
        log.info("stopping: no new messages; finishing in-flight ones")
        if failed is not None:
            raise failed
