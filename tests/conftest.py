"""Shared fixtures: the real RabbitMQ on 127.0.0.1, a unique prefix per test, real HTTP servers.

Nothing here skips when a service is missing: a test that needs RabbitMQ fails if it is not
there, so CI can never pass by running less.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aio_pika
import pytest
import uvicorn

from service.settings import Settings, SourceSettings

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OLD_SECRET = "whsec_b2xkLXNlY3JldC1zdGlsbC12YWxpZC1pbi1yb3RhdGlvbg=="
# Each source its own secret: Settings refuses one secret for two sources (SPEC §2).
LOCKBOX_SECRET = "whsec_bG9ja2JveC10ZXN0LXNlY3JldCwgbm90IGFjbWUtYmFuaw=="


POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """Each test on both ledger backends; event ids are fresh UUIDs, so tests share PostgreSQL's tables."""
    return f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite" else POSTGRES_URL


@pytest.fixture
async def pipe(prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[Any]:
    """The whole pipeline (tests/pipeline.py) on this test's prefix and ledger."""
    from tests.pipeline import pipeline

    async with pipeline(prefix, ledger_url, amqp) as running:
        yield running


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh topology prefix; after the test, every queue and exchange named from it is deleted.

    Quorum queues left behind hold file handles in RabbitMQ 3.x's accounting: a few hundred of them
    and new connections wait seconds for a handle, which fails tests far from the one that leaked.
    """
    name = f"t{uuid.uuid4().hex[:10]}"
    yield name
    delete_named(name)


MANAGEMENT_API = "http://127.0.0.1:15672/api"


def delete_named(start: str) -> int:
    """Delete every queue and exchange whose name starts with `start` (RabbitMQ's management API);
    returns how many went. Synchronous, so it runs in any fixture's teardown."""
    auth = {"Authorization": "Basic " + base64.b64encode(b"guest:guest").decode()}
    deleted = 0
    for kind in ("queues", "exchanges"):
        try:
            request = urllib.request.Request(f"{MANAGEMENT_API}/{kind}?columns=name", headers=auth)
            with urllib.request.urlopen(request, timeout=10) as response:
                names = [item["name"] for item in json.load(response)]
        except OSError:
            return deleted  # no management API: the amqp fixture's own cleanup still runs
        for name in names:
            if not name.startswith(start):
                continue
            url = f"{MANAGEMENT_API}/{kind}/%2F/{urllib.parse.quote(name, safe='')}"
            with contextlib.suppress(OSError):
                urllib.request.urlopen(urllib.request.Request(url, method="DELETE", headers=auth), timeout=10)
                deleted += 1
    return deleted


def make_settings(prefix: str, **overrides: Any) -> Settings:
    sources = overrides.pop(
        "sources",
        {
            "acme-bank": SourceSettings(secrets=[SECRET, OLD_SECRET], types=["bank.deposit"]),
            "lockbox": SourceSettings(secrets=[LOCKBOX_SECRET]),
        },
    )
    values: dict[str, Any] = {
        "amqp_url": AMQP_URL,
        "amqp_prefix": prefix,
        "sources": sources,
        "publish_timeout_seconds": 3.0,
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(prefix: str) -> Settings:
    return make_settings(prefix)


@pytest.fixture
async def amqp(prefix: str) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """A plain connection for reading queues back; deletes the test's queues and exchanges after."""
    connection = await aio_pika.connect(AMQP_URL, timeout=15)
    try:
        yield connection
    finally:
        await delete_prefix(connection, prefix)
        await connection.close()


# Every retry tier any test declares: quorum queues left behind slow the broker down for the rest.
_TEST_TIERS = [1, 2, 5, 30, 120, 600, 1800]


async def delete_prefix(connection: aio_pika.abc.AbstractConnection, prefix: str) -> None:
    from service.topology import build

    topology = build(prefix, _TEST_TIERS, 20)
    for queue in topology.queues:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.queue_delete(queue.name)
        with contextlib.suppress(Exception):
            await channel.close()
    for exchange in topology.exchanges:
        channel = await connection.channel()
        with contextlib.suppress(Exception):
            await channel.exchange_delete(exchange.name)
        with contextlib.suppress(Exception):
            await channel.close()


async def get_all(
    connection: aio_pika.abc.AbstractConnection, queue_name: str, expect: int, within: float = 5.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Read (and ack) messages until `expect` arrived or `within` passed; returns what arrived."""
    channel = await connection.channel()
    queue = await channel.get_queue(queue_name, ensure=False)
    got: list[aio_pika.abc.AbstractIncomingMessage] = []
    deadline = asyncio.get_running_loop().time() + within
    while len(got) < expect and asyncio.get_running_loop().time() < deadline:
        message = await queue.get(fail=False, no_ack=True)
        if message is None:
            await asyncio.sleep(0.05)
            continue
        got.append(message)
    # Anything beyond `expect` that is already there is a failure the caller should see.
    await asyncio.sleep(0.1)
    while (extra := await queue.get(fail=False, no_ack=True)) is not None:
        got.append(extra)
    await channel.close()
    return got


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def serve(app: Any, port: int | None = None) -> AsyncIterator[str]:
    """Run an ASGI app under a real uvicorn server on 127.0.0.1; yields its base URL."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("server stopped before it started")
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@pytest.fixture(scope="session")
def rabbitmq_reachable() -> Iterator[None]:
    """Fail (never skip) the session's broker tests if RabbitMQ is not listening."""
    with socket.create_connection(("127.0.0.1", 5672), timeout=3):
        pass
    yield
