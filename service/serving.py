"""Running ASGI apps under uvicorn inside a process that owns its own signals and event loop.

`payrelay dev` runs four servers and a worker in one loop, the consumer runs a health server
beside its worker, and the receiver its metrics server beside the public one; uvicorn's own signal
capture would steal SIGTERM from the graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator
from typing import Any, Literal

import uvicorn

from service.connection_guard import ConnectionLimits, guarded, within_open_files
from service.settings import ReceiverSettings, Settings


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_until(
    app: Any,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    lifespan: Literal["on", "off"] = "on",
    limits: ConnectionLimits | None = None,
) -> None:
    """Serve `app` until `stop` is set, then shut the server down (running its lifespan exit).

    With `limits`, connections are guarded against slow and oversized clients (connection_guard).
    """
    server = QuietServer(server_config(app, host, port, lifespan=lifespan, limits=limits))
    task = asyncio.create_task(server.serve())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopped.cancel()
    await task


def server_config(
    app: Any,
    host: str,
    port: int,
    *,
    lifespan: Literal["on", "off"] = "on",
    limits: ConnectionLimits | None = None,
) -> uvicorn.Config:
    """uvicorn's configuration; with `limits`, the receiver's guarded protocol (connection_guard)."""
    if limits is None:
        return uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan=lifespan)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        lifespan=lifespan,
        access_log=False,
        http=guarded(limits),
        # The guard bounds headers, timeouts and connections; uvicorn's 503-for-all stays off.
        limit_concurrency=None,
    )


def receiver_limits(settings: ReceiverSettings) -> ConnectionLimits:
    return ConnectionLimits(
        max_header_bytes=settings.max_header_bytes,
        max_headers=settings.max_headers,
        header_timeout=settings.header_timeout_seconds,
        max_connections=within_open_files(settings.max_connections),
    )


async def serve_receiver(settings: Settings, host: str, port: int, stop: asyncio.Event) -> None:
    """The receiver on `port`, guarded, and its /metrics, /healthz, /readyz on receiver_metrics_port.

    Both stop when `stop` is set, or when either server ends.
    """
    from service.receiver import create_app, create_metrics_app

    app = create_app(settings)
    servers = [serve_until(app, host, port, stop, limits=receiver_limits(settings.receiver))]
    if settings.receiver.metrics_port:
        metrics = create_metrics_app(app)
        servers.append(serve_until(metrics, host, settings.receiver.metrics_port, stop, lifespan="off"))
    tasks = [asyncio.create_task(server) for server in servers]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.set()
        await asyncio.gather(*tasks)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (once); the caller shuts down gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
