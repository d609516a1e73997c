"""What the consumer benchmarks share: a sandbox, a queue filled beforehand, consumers, and the count.

Every server is its own process on loopback, as released (`payrelay sandbox|receiver|consumer`):

    async with sandbox(tmp, latency_ms=0, rate_limit=0) as box:            # box.pid, box.url
        await box.invoices("BENCH-", 8000, total=100000, currency="USD")
        env = payrelay_env(tmp, prefix, box.url, ledger_url(tmp, "sqlite"))
        async with counter(prefix) as count:                               # payment.recorded
            await fill(env, tmp, deposits(8000))                            # through the receiver
            async with consumers(env, tmp, 1) as pids:
                seconds = await count.wait(8000)
        await delete_topology(prefix)

`fill` sends the events through `payrelay receiver` in batches, so the work queue holds exactly
what production would queue; the receiver is stopped before the consumers start.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson

from service.sender import example_event, signed_headers
from tests.benchmarks.bank_files import AMQP, PAYRELAY, SECRET, _ready, free_port

SOURCE = "acme-bank"
SANDBOX_KEY = "bench_key"
BATCH = 100  # events per POST when filling the queue


def deposits(count: int, prefix: str = "BENCH-", amount: str = "10.00", currency: str = "USD") -> list[bytes]:
    """`count` distinct bank.deposit events, the i-th naming invoice `{prefix}{i}` (from 1)."""
    return [
        orjson.dumps(
            example_event("bank.deposit", amount=amount, currency=currency, invoice_id=f"{prefix}{i + 1}")
        )
        for i in range(count)
    ]


def ledger_url(tmp: Path, kind: str) -> str:
    """The default ledger (SQLite, a file) or the machine's PostgreSQL (its `test` database)."""
    return (
        f"sqlite:///{tmp / 'ledger.db'}" if kind == "sqlite" else "postgresql://postgres@127.0.0.1:5432/test"
    )


def payrelay_env(tmp: Path, prefix: str, sandbox_url: str, ledger: str, **extra: str) -> dict[str, str]:
    """Default settings but for what the rig must name: the source, prefix, Chargebee, ledger."""
    config = tmp / "payrelay.toml"
    config.write_text(f'[sources.{SOURCE}]\nsecrets = ["{SECRET}"]\n')
    return {
        **os.environ,
        "PAYRELAY_CONFIG": str(config),
        "PAYRELAY_AMQP_URL": AMQP,
        "PAYRELAY_AMQP_PREFIX": prefix,
        "PAYRELAY_CHARGEBEE_BASE_URL": sandbox_url,
        "PAYRELAY_CHARGEBEE_API_KEY": SANDBOX_KEY,
        "PAYRELAY_LEDGER_URL": ledger,
        "PAYRELAY_RECEIVER_METRICS_PORT": "0",
        **extra,
    }


@dataclass(frozen=True, slots=True)
class Sandbox:
    pid: int
    url: str

    async def invoices(self, prefix: str, count: int, *, total: int, currency: str) -> None:
        """`count` open invoices `{prefix}1`… of `total` minor units each."""
        body = {"prefix": prefix, "count": count, "total": total, "currency_code": currency}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{self.url}/sandbox/invoices/bulk", json=body) as response:
                if response.status != 201:
                    raise RuntimeError(f"bulk invoices: {response.status} {await response.text()}")

    async def requests(self, operation: str = "record_payment") -> list[dict[str, Any]]:
        """The sandbox's request log for `operation` (or "all")."""
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{self.url}/sandbox/requests", params={"operation": operation}) as response:
                found: list[dict[str, Any]] = (await response.json())["requests"]
                return found


@asynccontextmanager
async def sandbox(tmp: Path, *, latency_ms: float = 0, rate_limit: int = 0) -> AsyncIterator[Sandbox]:
    port, log = free_port(), tmp / "sandbox.log"
    url = f"http://127.0.0.1:{port}"
    command = [PAYRELAY, "sandbox", "--port", str(port), "--api-key", SANDBOX_KEY,
               "--latency-ms", str(latency_ms), "--rate-limit", str(rate_limit)]  # fmt: skip
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=out)
    try:
        await _ready(proc, f"{url}/sandbox/health", log)
        yield Sandbox(proc.pid, url)
    finally:
        await stop(proc)


@asynccontextmanager
async def process(args: list[str], env: dict[str, str], log: Path, ready: str) -> AsyncIterator[int]:
    """A payrelay process, once `ready` answers 200; its pid."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(PAYRELAY, *args, env=env, stdout=out, stderr=out)
    try:
        await _ready(proc, ready, log)
        yield proc.pid
    finally:
        await stop(proc)


async def stop(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM, and SIGKILL if it has not gone 30 s later."""
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 30)
        except TimeoutError:
            proc.kill()
            await proc.wait()


@asynccontextmanager
async def receiver(env: dict[str, str], tmp: Path) -> AsyncIterator[tuple[int, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    args = ["receiver", "--host", "127.0.0.1", "--port", str(port)]
    async with process(args, env, tmp / "receiver.log", f"{url}/readyz") as pid:
        yield pid, url


async def post_batches(url: str, bodies: Iterable[bytes], size: int = BATCH) -> int:
    """POST the events as batches of `size`; every answer must be a 202. Returns events accepted."""
    items = list(bodies)
    sent = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=600)) as http:
        for start in range(0, len(items), size):
            body = b"[" + b",".join(items[start : start + size]) + b"]"
            headers = signed_headers(SECRET, body, "application/cloudevents-batch+json")
            async with http.post(f"{url}/v1/ingest/{SOURCE}", data=body, headers=headers) as response:
                if response.status != 202:
                    raise RuntimeError(f"batch at {start}: {response.status} {await response.text()}")
            sent += len(items[start : start + size])
    return sent


async def fill(env: dict[str, str], tmp: Path, bodies: Iterable[bytes]) -> int:
    """Queue the events through a receiver of its own, stopped once they are all confirmed."""
    async with receiver(env, tmp) as (_, url):
        return await post_batches(url, bodies)


@asynccontextmanager
async def consumers(env: dict[str, str], tmp: Path, count: int = 1) -> AsyncIterator[list[int]]:
    """`count` `payrelay consumer` processes, each on its own health port, all launched before any
    is waited for (else the first drains the queue alone while the others start); their pids."""
    async with AsyncExitStack() as stack:
        ports = [free_port() for _ in range(count)]
        starting = [
            process(["consumer", "--host", "127.0.0.1", "--port", str(port)], env, tmp / f"consumer-{i}.log",
                    f"http://127.0.0.1:{port}/readyz")
            for i, port in enumerate(ports)
        ]  # fmt: skip
        # Every start settles before one's failure unwinds the stack, so none is left running.
        started = await asyncio.gather(
            *(stack.enter_async_context(each) for each in starting), return_exceptions=True
        )
        for failed in (s for s in started if isinstance(s, BaseException)):
            raise failed
        yield [pid for pid in started if isinstance(pid, int)]


class Counter:
    """Counts `payment.recorded` confirmations as they arrive on a queue of its own."""

    def __init__(self) -> None:
        self.got = 0
        self.first: float | None = None  # monotonic time of the first confirmation
        self.last: float | None = None
        self._changed = asyncio.Event()

    def _on(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        now = time.monotonic()
        self.first = self.first or now
        self.last = now
        self.got += 1
        self._changed.set()

    async def wait(self, count: int, within: float = 1800) -> float:
        """Seconds from now until `count` confirmations in all have arrived."""
        started = time.monotonic()
        async with asyncio.timeout(within):
            while self.got < count:
                self._changed.clear()
                await self._changed.wait()
        return time.monotonic() - started


@asynccontextmanager
async def counter(prefix: str, routing_key: str = "payment.recorded") -> AsyncIterator[Counter]:
    """A counter bound to the prefix's confirmations exchange (declared here if need be)."""
    connection = await aio_pika.connect(AMQP)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        exchange = await channel.declare_exchange(
            f"{prefix}.confirmations", aio_pika.ExchangeType.TOPIC, durable=True
        )
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, routing_key)
        count = Counter()

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            count._on(message)
            await message.ack()

        await queue.consume(on_message)
        yield count
    finally:
        await connection.close()
