"""Running ASGI apps under uvicorn inside a process that owns its own signals and event loop.

`payrelay dev` runs four servers and a worker in one loop, and the consumer runs a health server
beside its worker; uvicorn's own signal capture would steal SIGTERM from the graceful shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator
from typing import Any, Literal

import uvicorn


class QuietServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the process."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def serve_until(
    app: Any, host: str, port: int, stop: asyncio.Event, *, lifespan: Literal["on", "off"] = "on"
) -> None:
    """Serve `app` until `stop` is set, then shut the server down (running its lifespan exit)."""
    server = QuietServer(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan=lifespan))
    task = asyncio.create_task(server.serve())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    server.should_exit = True
    stopped.cancel()
    await task


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop` (once); the caller shuts down gracefully."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
