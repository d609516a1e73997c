"""Slow and oversized clients against `payrelay receiver` itself (service/connection_guard.py).

One receiver process for these tests, on the real broker, with short read timeouts and only 128
file descriptors (the numbers of the issue): what a client can do to it is seen from outside, in
its answers and its memory. Every attack is bounded in connections and time, and on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest

from service.sender import signed_headers
from tests.conftest import AMQP_URL, SECRET, delete_prefix, free_port, get_all
from tests.factories import new_deposit

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

READ_TIMEOUT = 1.5
CUT_OFF = 3 * READ_TIMEOUT  # "closed within 3x the timeout": a cut-off happened, not a speed
OPEN_FILES = 128


@dataclass(frozen=True)
class Receiver:
    port: int
    metrics_port: int
    pid: int
    prefix: str

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    config = tmp_path_factory.mktemp("receiver") / "payrelay.toml"
    config.write_text(f'[sources.acme-bank]\nsecrets = ["{SECRET}"]\n')
    port, metrics_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PAYRELAY_CONFIG": str(config),
        "PAYRELAY_AMQP_URL": AMQP_URL,
        "PAYRELAY_AMQP_PREFIX": prefix,
        "PAYRELAY_RECEIVER_HEADER_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "PAYRELAY_RECEIVER_BODY_TIMEOUT_SECONDS": str(READ_TIMEOUT),
        "PAYRELAY_RECEIVER_METRICS_PORT": str(metrics_port),
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }

    def few_files() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (OPEN_FILES, OPEN_FILES))

    payrelay = str(Path(sys.executable).parent / "payrelay")
    args = [payrelay, "receiver", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(args, env=env, preexec_fn=few_files, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not _ready(port):
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the receiver did not become ready"
            time.sleep(0.1)
        yield Receiver(port, metrics_port, process.pid, prefix)
    finally:
        process.terminate()
        _, err = process.communicate(timeout=20)
        asyncio.run(_delete_queues(prefix))
    assert process.returncode == 0, err.decode()


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


async def _delete_queues(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL)
    await delete_prefix(connection, prefix)
    await connection.close()


async def exchange(port: int, first: bytes, drip: bytes = b"", every: float = 0.5) -> tuple[float, bytes]:
    """Send `first`, then `drip` every `every` s until the server closes; (seconds taken, answer)."""
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started, answer = loop.time(), b""
    writer.write(first)
    try:
        async with asyncio.timeout(4 * CUT_OFF):
            while chunk := await _read_or_drip(reader, writer, drip, every):
                answer += chunk
    except (ConnectionError, TimeoutError):
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return loop.time() - started, answer


async def _read_or_drip(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, drip: bytes, every: float
) -> bytes:
    while True:
        try:
            return await asyncio.wait_for(reader.read(65536), every)
        except TimeoutError:
            if drip:
                writer.write(drip)


@contextlib.asynccontextmanager
async def healthz_watched(port: int) -> AsyncIterator[list[str]]:
    """Ask /healthz every 0.2 s meanwhile, on a new connection each time; yields the status lines."""
    statuses: list[str] = []

    async def ask() -> None:
        while True:
            _, answer = await exchange(port, b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n")
            statuses.append(answer.split(b"\r\n", 1)[0].decode() or "no answer")
            await asyncio.sleep(0.2)

    task = asyncio.create_task(ask())
    try:
        yield statuses
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


INGEST = b"POST /v1/ingest/acme-bank HTTP/1.1\r\nHost: r\r\n"


async def test_slow_headers_are_cut_off_while_healthz_answers(receiver: Receiver) -> None:
    """20 clients each sending one header line every 0.5 s (they stayed open for good) get a 408
    and are closed after the header timeout; /healthz answers throughout."""
    async with healthz_watched(receiver.port) as statuses:
        results = await asyncio.gather(
            *(exchange(receiver.port, INGEST, b"X-Slow-%d: 1\r\n" % i) for i in range(20))
        )
    assert all(seconds < CUT_OFF for seconds, _ in results), [round(s, 1) for s, _ in results]
    assert {answer.split(b"\r\n", 1)[0] for _, answer in results} == {b"HTTP/1.1 408 Request Timeout"}
    assert statuses and set(statuses) == {"HTTP/1.1 200 OK"}


async def test_slow_bodies_are_cut_off_with_a_problem_json_408(receiver: Receiver) -> None:
    """20 clients trickling a 1000-byte body a byte at a time get the receiver's own 408 after the
    body timeout, and are closed; /healthz answers throughout."""
    head = INGEST + b"Content-Type: application/cloudevents+json\r\nContent-Length: 1000\r\n\r\n{"
    async with healthz_watched(receiver.port) as statuses:
        results = await asyncio.gather(*(exchange(receiver.port, head, b" ") for _ in range(20)))
    assert all(seconds < CUT_OFF for seconds, _ in results), [round(s, 1) for s, _ in results]
    for _, answer in results:
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408 ") and b"application/problem+json" in status
        assert orjson.loads(body)["detail"] == f"the body did not arrive within {READ_TIMEOUT:g} s"
    assert statuses and set(statuses) == {"HTTP/1.1 200 OK"}


async def test_a_body_trickled_after_an_early_answer_cannot_hold_the_connection(receiver: Receiver) -> None:
    """A 415 is answered before the body is read; the rest of the body, trickled on, must not keep
    the connection (each byte used to cancel the keep-alive timer): it is closed after the header
    timeout, counted from the answer."""
    head = INGEST + b"Content-Type: text/plain\r\nContent-Length: 1000\r\n\r\n"
    seconds, answer = await exchange(receiver.port, head, b" ")
    assert answer.startswith(b"HTTP/1.1 415 ")
    assert seconds < CUT_OFF


@pytest.mark.parametrize(
    "headers",
    [b"X-Big: " + b"a" * 20_000 + b"\r\n", b"".join(b"X-H%d: 1\r\n" % i for i in range(101))],
    ids=["20 KiB", "101 lines"],
)
async def test_too_many_header_bytes_or_lines_are_a_431(receiver: Receiver, headers: bytes) -> None:
    _, answer = await exchange(receiver.port, INGEST + headers + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")


async def test_unfinished_32_mib_headers_are_refused_without_the_memory_growing(receiver: Receiver) -> None:
    """4 clients each pushing an unfinished 32 MiB header (they took the process from 75 to 264 MB)
    are cut off after a few dozen KiB; the receiver's memory stays where it was."""
    before = receiver.rss_mib()
    peak = before

    async def push() -> int:
        nonlocal peak
        _, writer = await asyncio.open_connection("127.0.0.1", receiver.port)
        writer.write(INGEST + b"X-Big: ")
        sent = 0
        try:
            while sent < 32 << 20:
                writer.write(b"a" * 65536)
                await asyncio.wait_for(writer.drain(), CUT_OFF)
                sent += 65536
                peak = max(peak, receiver.rss_mib())
        except (ConnectionError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        return sent

    sent = await asyncio.gather(*(push() for _ in range(4)))
    assert all(n < 8 << 20 for n in sent), sent  # the kernel's buffers, not the receiver, took the rest
    assert peak - before < 32, f"{before:.0f} -> {peak:.0f} MiB"
    assert _ready(receiver.port)


@pytest.mark.parametrize(
    "unfinished",
    [INGEST, INGEST + b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"],
    ids=["headers", "body"],
)
async def test_healthz_answers_beyond_the_open_file_limit(receiver: Receiver, unfinished: bytes) -> None:
    """With 128 file descriptors, 120 unfinished requests made /healthz refuse connections; now
    the oldest unfinished one (headers or body) is dropped to make room and every probe is answered."""
    held = [await asyncio.open_connection("127.0.0.1", receiver.port) for _ in range(120)]
    try:
        for _, writer in held:
            writer.write(unfinished)
        await asyncio.sleep(0.2)
        async with healthz_watched(receiver.port) as statuses:
            await asyncio.sleep(1.0)  # within the read timeouts: the 120 are all still unfinished
    finally:
        for _, writer in held:
            writer.close()
    assert len(statuses) >= 3 and set(statuses) == {"HTTP/1.1 200 OK"}, statuses


async def test_a_signed_event_is_still_202_only_once_in_the_queue(receiver: Receiver) -> None:
    """Through the guarded server, on one kept-alive connection: 202 means RabbitMQ has the event."""
    events = [new_deposit("INV-1001", "1.00") for _ in range(2)]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{receiver.port}") as client:
        for event in events:
            body = orjson.dumps(event)
            headers = signed_headers(SECRET, body, "application/cloudevents+json")
            assert (
                await client.post("/v1/ingest/acme-bank", content=body, headers=headers)
            ).status_code == 202
        assert (await client.get("/metrics")).status_code == 404
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{receiver.metrics_port}") as scraper:
        scraped = (await scraper.get("/metrics")).text
    assert 'payrelay_ingest_requests_total{source="acme-bank",status="202"} 2.0' in scraped
    connection = await aio_pika.connect(AMQP_URL)
    try:
        queued = await get_all(connection, f"{receiver.prefix}.record-payment", 2)
    finally:
        await connection.close()
    assert [m.message_id for m in queued] == [e["id"] for e in events]


async def test_a_websocket_upgrade_is_answered_and_the_receiver_goes_on(receiver: Receiver) -> None:
    """uvicorn hands an upgrade to a websocket protocol through the transport, which the guard
    wraps (CoalescedWrites): the receiver has no websocket route, so the handshake is refused."""
    upgrade = (
        b"GET /v1/ingest/acme-bank HTTP/1.1\r\nHost: r\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    _, answer = await exchange(receiver.port, upgrade)
    assert answer.split(b"\r\n", 1)[0] == b"HTTP/1.1 403 Forbidden", answer
    healthz = b"GET /healthz HTTP/1.1\r\nHost: r\r\nConnection: close\r\n\r\n"
    _, answer = await exchange(receiver.port, healthz)
    assert answer.startswith(b"HTTP/1.1 200 OK"), answer
