"""payrelay benchmark: receiver throughput, and end-to-end events/s through the consumer.

    .venv/bin/python -m tests.benchmarks.bench [--requests 5000] [--ledger sqlite|postgresql] [--consumers 1]

Every server runs as its own process (`payrelay receiver|consumer|sandbox`), on loopback only, as
in production; the load generator is one more process on the same 2 cores, so the numbers are
for the whole machine. Prints a Markdown report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson

from service.sender import example_event, signed_headers

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"
PAYRELAY = str(Path(sys.executable).parent / "payrelay")


def _env(prefix: str, config: Path, ledger: str, sandbox: str) -> dict[str, str]:
    return {
        **os.environ,
        "PAYRELAY_CONFIG": str(config),
        "PAYRELAY_AMQP_PREFIX": prefix,
        "PAYRELAY_CHARGEBEE_BASE_URL": sandbox,
        "PAYRELAY_CHARGEBEE_API_KEY": "bench_key",
        "PAYRELAY_CHARGEBEE_RATE_LIMIT": "0",
        "PAYRELAY_LEDGER_URL": ledger,
        "PAYRELAY_CONSUMER_PREFETCH": "256",
    }


@asynccontextmanager
async def process(*args: str, env: dict[str, str], ready_url: str) -> Any:
    proc = await asyncio.create_subprocess_exec(
        PAYRELAY, *args, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    async with aiohttp.ClientSession() as http:
        for _ in range(200):
            try:
                async with http.get(ready_url) as response:
                    if response.status == 200:
                        break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        else:
            proc.kill()
            raise RuntimeError(f"{args[0]} did not start")
    try:
        yield proc
    finally:
        proc.terminate()
        await proc.wait()


async def bench_receiver(url: str, requests: int, concurrency: int) -> dict[str, Any]:
    latencies: list[float] = []
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(
            orjson.dumps(
                example_event("bank.deposit", amount="10.00", currency="USD", invoice_id=f"BENCH-{i + 1}")
            )
        )
    statuses: dict[int, int] = {}

    async def worker(http: aiohttp.ClientSession) -> None:
        while not queue.empty():
            body = queue.get_nowait()
            headers = signed_headers(SECRET, body, "application/cloudevents+json")
            started = time.perf_counter()
            async with http.post(f"{url}/v1/ingest/acme-bank", data=body, headers=headers) as response:
                await response.read()
                statuses[response.status] = statuses.get(response.status, 0) + 1
            latencies.append(time.perf_counter() - started)

    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:
        started = time.perf_counter()
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": requests,
        "seconds": elapsed,
        "rate": requests / elapsed,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "statuses": statuses,
    }


async def drain(connection: aio_pika.abc.AbstractConnection, queue_name: str, count: int) -> float:
    """Seconds until `count` confirmations have arrived."""
    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    queue = await channel.get_queue(queue_name)
    got = 0
    done = asyncio.Event()
    started = time.perf_counter()

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal got
        got += 1
        await message.ack()
        if got >= count:
            done.set()

    await queue.consume(on_message)
    await asyncio.wait_for(done.wait(), 600)
    return time.perf_counter() - started


async def main(args: argparse.Namespace) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    tmp = Path(tempfile.mkdtemp(prefix="payrelay-bench-"))
    config = tmp / "payrelay.toml"
    config.write_text(f'[sources.acme-bank]\nsecrets = ["{SECRET}"]\n')
    ledger = (
        f"sqlite:///{tmp / 'ledger.db'}"
        if args.ledger == "sqlite"
        else "postgresql://postgres@127.0.0.1:5432/test"
    )
    sandbox = "http://127.0.0.1:18090"
    env = _env(prefix, config, ledger, sandbox)
    count = args.requests
    connection = await aio_pika.connect(AMQP)
    report = [
        f"# payrelay benchmark ({time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} cores)",
        "",
    ]
    async with process(
        "sandbox", "--port", "18090", "--api-key", "bench_key", env=env, ready_url=f"{sandbox}/sandbox/health"
    ):
        async with aiohttp.ClientSession() as http:
            body = {"prefix": "BENCH-", "count": count, "total": 100000, "currency_code": "USD"}
            async with http.post(f"{sandbox}/sandbox/invoices/bulk", json=body) as response:
                assert response.status == 201, await response.text()
        async with process("receiver", "--port", "18080", env=env, ready_url="http://127.0.0.1:18080/readyz"):
            channel = await connection.channel()
            capture = await channel.declare_queue(f"{prefix}.bench-capture", durable=False, auto_delete=False)
            await capture.bind(f"{prefix}.confirmations", "payment.recorded")
            result = await bench_receiver("http://127.0.0.1:18080", args.requests, args.concurrency)
            report += [
                "## Receiver: signed single-event POSTs, 202 after publisher confirms",
                f"- {result['requests']} requests, concurrency {args.concurrency}: "
                f"**{result['rate']:.0f} req/s**, p50 {result['p50_ms']:.1f} ms, "
                f"p99 {result['p99_ms']:.1f} ms, statuses {result['statuses']}",
                "",
            ]
            # The receiver's events are now queued; the consumer drains them end to end.
            async with contextlib.AsyncExitStack() as consumers:
                for i in range(args.consumers):
                    port = str(19102 + i)
                    ready = f"http://127.0.0.1:{port}/readyz"
                    await consumers.enter_async_context(
                        process("consumer", "--port", port, env=env, ready_url=ready)
                    )
                seconds = await drain(connection, capture.name, args.requests)
            report += [
                "## Consumer: queued events -> ledger -> sandbox record_payment -> confirmations",
                f"- {args.requests} events drained in {seconds:.1f} s: "
                f"**{args.requests / seconds:.0f} events/s** "
                f"({args.consumers} consumer process(es), prefetch 256, rate limit off, "
                f"ledger {args.ledger})",
                "",
            ]
            await channel.queue_delete(capture.name)
    for suffix in (
        "record-payment",
        "dead-letter",
        "retry.5s",
        "retry.30s",
        "retry.2m",
        "retry.10m",
        "retry.30m",
    ):
        channel = await connection.channel()
        await channel.queue_delete(f"{prefix}.{suffix}")
    await connection.close()
    print("\n".join(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--ledger", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--consumers", type=int, default=1, help="consumer processes")
    asyncio.run(main(parser.parse_args()))
