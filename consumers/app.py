"""The consumer process: one broker connection, one HTTP session, one ledger, one health server.

`run(settings, stop)` owns every resource for the process's life and releases them in order on
`stop`: stop consuming, finish or return in-flight messages, close the broker, then the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from consumers.chargebee import ChargebeeClient, RateLimiter
from consumers.record_payment import RecordPaymentWorker
from service.broker import Broker, BrokerUnavailable
from service.ledger import Ledger
from service.metrics import Metrics, create_metrics
from service.queue_stats import queue_stats
from service.serving import serve_until
from service.settings import Settings
from service.topology import build

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
            "broker": "open" if broker.ready else "closed",
            "consuming": worker.consuming,
            "paused": worker.paused_reason,
        }

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", **status()})

    async def readyz(request: Request) -> Response:
        ready = worker.consuming and worker.paused_reason is None
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


@contextlib.asynccontextmanager
async def running_worker(
    settings: Settings, metrics: Metrics | None = None
) -> AsyncIterator[RecordPaymentWorker]:
    """Everything a worker needs, opened in order and closed in reverse; yields the running worker."""
    metrics = metrics or create_metrics()
    topology = build(settings.amqp_prefix, settings.retry_delays_seconds, settings.delivery_limit)
    ledger = await Ledger.open(settings.ledger_url)
    connector = aiohttp.TCPConnector(limit=settings.consumer_prefetch, keepalive_timeout=60)
    session = aiohttp.ClientSession(connector=connector)
    client = ChargebeeClient(
        session,
        api_base=settings.chargebee_api_base,
        api_key=settings.chargebee_api_key.get_secret_value(),
        api_version=settings.chargebee_api_version,
        limiter=RateLimiter(settings.chargebee_rate_limit, metrics),
        metrics=metrics,
        timeout=settings.chargebee_timeout_seconds,
    )
    broker = Broker(
        settings.amqp_url.get_secret_value(),
        topology,
        publish_timeout=settings.publish_timeout_seconds,
        name="payrelay-consumer",
    )
    worker = RecordPaymentWorker(
        settings,
        broker=broker,
        ledger=ledger,
        chargebee=client,
        metrics=metrics,
        owner=f"{socket.gethostname()}:{os.getpid()}:{id(broker):x}",
    )
    broker.on_connect = worker.on_connect
    cleanup = asyncio.create_task(_cleanup_forever(ledger, settings.ledger_retention_days))
    await broker.start(wait=5.0)
    try:
        yield worker
    finally:
        await worker.stop(settings.shutdown_grace_seconds)
        cleanup.cancel()
        await broker.stop()
        await session.close()
        await ledger.close()


async def run(
    settings: Settings, stop: asyncio.Event, *, host: str = "127.0.0.1", port: int | None = None
) -> None:
    """The `payrelay consumer` process: work until `stop` is set, then shut down gracefully."""
    metrics = create_metrics()
    async with running_worker(settings, metrics) as worker:
        port = settings.metrics_port if port is None else port
        log.info("consumer health and metrics on http://%s:%d", host, port)
        app = health_app(settings, worker, worker.broker, metrics, worker.chargebee.session)
        await serve_until(app, host, port, stop, lifespan="off")
        log.info("stopping: no new messages; finishing in-flight ones")
