"""Bank files end to end (SPEC §9): real HTTP, RabbitMQ, the consumer, the sandbox, both ledgers.

Each credit of a file is recorded once, on the right invoice: through a notification followed by
the day's statement, a file re-sent, and a lockbox check paying several invoices.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from service.bankfiles import demo, intake
from service.sender import signed_headers
from service.settings import SourceSettings
from tests.conftest import LOCKBOX_SECRET, SECRET
from tests.pipeline import Pipeline, pipeline, until

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

FIXTURES = Path(__file__).parent / "fixtures" / "bankfiles"
CAMT054 = demo.path("camt054").read_bytes()
CAMT053 = (FIXTURES / "e2e" / "statement.camt053.xml").read_bytes()
SOURCES = {
    "acme-bank": SourceSettings(secrets=[SECRET]),
    "lockbox": SourceSettings(secrets=[LOCKBOX_SECRET], format="lockbox"),
}


def unique(body: bytes, prefix: str) -> bytes:
    """The file with this test's own bank references: PostgreSQL's ledger is shared by every test."""
    return body.replace(b"DEMO-2026", prefix.encode() + b"-2026")


@pytest.fixture
async def pipe(
    prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection
) -> AsyncIterator[Pipeline]:
    async with pipeline(prefix, ledger_url, amqp, sources=SOURCES, payer_fingerprint_key="k" * 32) as running:
        yield running


async def post_file(pipe: Pipeline, body: bytes, source: str = "acme-bank") -> dict[str, Any]:
    secret = LOCKBOX_SECRET if source == "lockbox" else SECRET
    headers = signed_headers(secret, body, "application/octet-stream")
    async with pipe.http.post(
        f"{pipe.receiver_url}/v1/files/{source}", data=body, headers=headers
    ) as response:
        assert response.status == 202, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def recorded(pipe: Pipeline, expected: dict[str, int]) -> None:
    """Wait until the sandbox holds exactly these record_payment calls per invoice, and they stay so."""

    async def calls() -> dict[str, int]:
        found: dict[str, int] = {}
        for request in await pipe.requests():
            if request["operation"] == "record_payment":
                found[request["invoice_id"]] = found.get(request["invoice_id"], 0) + 1
        return found

    async def reached() -> bool:
        return await calls() == expected

    await until(reached, within=15, what=f"record_payment calls {expected}")
    await asyncio.sleep(0.5)  # a second call would show now
    assert await calls() == expected


async def publish_directly(pipe: Pipeline, body: bytes, source: str = "acme-bank") -> int:
    """Publish a file's events past the receiver, as `payrelay import` does: only the ledger stops repeats."""
    settings = SOURCES[source]
    read = intake.read(body, expected=settings.format, options=settings.file_options(), file_id="x", key=None)
    broker = pipe.settings.broker.broker("test-import")
    await broker.start(wait=5)
    try:
        messages = intake.outgoing(read, source, pipe.settings.broker.topology().events)
        await broker.publish(messages)
    finally:
        await broker.stop()
    return len(messages)


async def test_a_notification_then_the_statement_records_each_credit_once(
    pipe: Pipeline, prefix: str
) -> None:
    """camt.054, then the camt.053 holding the same credits: one record_payment per credit, right invoice."""
    first = await post_file(pipe, unique(CAMT054, prefix))
    assert first["published"] == 3
    await recorded(pipe, {"INV-1003": 1, "INV-1004": 1, "INV-1006": 1})
    # Past the receiver's memory of recent ids: only the ledger stands between these and Chargebee.
    assert await publish_directly(pipe, unique(CAMT053, prefix)) == 3
    await recorded(pipe, {"INV-1003": 1, "INV-1004": 1, "INV-1006": 1})
    assert (await pipe.invoice("INV-1003"))["status"] == "paid"
    confirmations = await pipe.confirmations(5)
    recorded_events = [c for c in confirmations if c["type"] == "payment.recorded"]
    assert sorted(c["data"]["invoice_id"] for c in recorded_events)[:3] == [
        "INV-1003",
        "INV-1004",
        "INV-1006",
    ]


async def test_a_file_sent_again_records_nothing_new(pipe: Pipeline, prefix: str) -> None:
    """The bank re-sends a file (its retry): the same identities, nothing recorded twice."""
    body = unique(CAMT054, prefix)
    await post_file(pipe, body)
    await recorded(pipe, {"INV-1003": 1, "INV-1004": 1, "INV-1006": 1})
    again = await post_file(pipe, body)
    assert again["accepted"] == 3
    assert await publish_directly(pipe, body) == 3
    await recorded(pipe, {"INV-1003": 1, "INV-1004": 1, "INV-1006": 1})


async def test_a_lockbox_check_with_overflow_invoices_is_one_payment_per_invoice(
    pipe: Pipeline, prefix: str
) -> None:
    """Record 4 overflows naming two invoices with amounts: two record_payment calls, once each."""
    body = demo.path("lockbox").read_bytes().replace(b"1234567", prefix[-7:].encode().ljust(7, b"0"))
    answer = await post_file(pipe, body, source="lockbox")
    assert answer["file"]["format"] == "lockbox" and answer["published"] == 2
    await recorded(pipe, {"INV-1007": 1, "INV-1008": 1, "INV-1010": 1})
    amounts = {r["invoice_id"]: r["form"]["amount"] for r in await pipe.requests()}
    assert amounts == {"INV-1007": "50000", "INV-1008": "64990", "INV-1010": "100000"}
    assert await publish_directly(pipe, body, source="lockbox") == 2
    await recorded(pipe, {"INV-1007": 1, "INV-1008": 1, "INV-1010": 1})
