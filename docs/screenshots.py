"""Take the README's screenshots of the ops app: `.venv/bin/python docs/screenshots.py`.

Run by hand, never by the tests (they must not change tracked files). Needs what the browser
tests need: RabbitMQ on 127.0.0.1 (with the management API) and Debian's chromium. It serves the
real ops app on a fresh prefix and a temporary SQLite ledger, fills both the way the consumer
would (recorded payments, one waiting for a retry, dead letters), takes `docs/ops-dashboard.png`
and `docs/ops-dead-letter.png`, and deletes its queues and exchanges again.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import uvicorn
from playwright.async_api import async_playwright, expect

from service.broker import declare_once
from service.ledger import Ledger, Recorded
from service.ops.app import create_app
from service.settings import Settings

AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
MANAGEMENT_URL = "http://127.0.0.1:15672"
TOKEN = "screenshot-admin-token-4b1d"
PORT = 18081
DOCS = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
BANK = ("acme-bank", "urn:acme:core-banking")
LOCKBOX = ("lockbox", "urn:lockbox:scanner")

# (event id, origin, invoice, minor units, currency): what Chargebee recorded.
RECORDED = [
    ("evt-20240501-0107", BANK, "INV-1031", 125_000, "USD"),
    ("evt-20240501-0108", BANK, "INV-1032", 9_990, "USD"),
    ("chk-10042", LOCKBOX, "INV-1033", 480_000, "USD"),
    ("evt-20240501-0110", BANK, "INV-1034", 2_500, "USD"),
    ("evt-20240501-0111", BANK, "INV-1035", 31_415, "EUR"),
    ("chk-10043", LOCKBOX, "INV-1036", 75_000, "USD"),
    ("evt-20240501-0113", BANK, "INV-1037", 9_999_999_900, "USD"),
    ("evt-20240501-0114", BANK, "INV-1038", 18_000, "USD"),
]
# (event id, origin, invoice, reason, error): dead-lettered, by the ledger and in the queue.
DEAD = [
    ("evt-20240501-0109", BANK, "INV-1099", "invoice_not_found", "Chargebee 404 resource_not_found"),
    ("chk-10044", LOCKBOX, None, "unmatched_invoice", "no invoice id in the memo or remittance"),
    ("evt-20240501-0112", BANK, "INV-1042", "invoice_not_payable", "invoice INV-1042 is voided"),
    ("evt-20240501-0115", BANK, "INV-1039", "retries_exhausted", "Chargebee answered 503, five times"),
]
RETRYING = ("evt-20240501-0116", BANK, "INV-1040", "Chargebee answered 429 (rate limited)")


async def fill_ledger(url: str) -> None:
    ledger = await Ledger.open(url)
    try:
        for event_id, (origin, source), invoice, amount, currency in RECORDED:
            key = (origin, source, event_id)
            await ledger.claim(key, owner="screenshots", lease_seconds=30, invoice_id=invoice)
            recorded = Recorded(
                transaction_id=f"txn_{uuid.uuid4().hex[:14]}",
                invoice_id=invoice,
                invoice_status="paid",
                amount_due=0,
                amount=amount,
                currency=currency,
                recorded_at=datetime.now(UTC),
                confirmation=b"{}",
            )
            await ledger.record_success(key, recorded, owner="screenshots")
        failures = [(*d, True) for d in DEAD] + [(*RETRYING[:3], None, RETRYING[3], False)]
        for event_id, (origin, source), invoice, reason, error, final in failures:
            key = (origin, source, event_id)
            await ledger.claim(key, owner="screenshots", lease_seconds=30, invoice_id=invoice)
            await ledger.record_failure(key, owner="screenshots", error=error, reason=reason, final=final)
    finally:
        await ledger.close()


def letter(
    event_id: str, origin: str, source: str, invoice: str | None, reason: str, error: str
) -> aio_pika.Message:
    """A dead letter as the consumer writes it (headers and the CloudEvent)."""
    check = origin == "lockbox"
    data: dict[str, Any] = {"amount": "1250.00", "currency": "USD"}
    if check:
        data |= {"check_number": event_id.removeprefix("chk-"), "scanned_at": "2024-05-01T09:40:00Z"}
    else:
        data |= {"bank_reference": f"ACME{event_id[-4:]}", "booked_at": "2024-05-01T09:40:00Z"}
    if invoice:
        data["invoice_id"] = invoice
    kind = "check.scan" if check else "bank.deposit"
    event = {"specversion": "1.0", "id": event_id, "source": source, "type": kind, "data": data}
    failed_at = (datetime.now(UTC) - timedelta(minutes=12)).isoformat().replace("+00:00", "Z")
    headers: dict[str, Any] = {
        "x-payrelay-source": origin,
        "x-payrelay-reason": reason,
        "x-payrelay-error": error,
        "x-payrelay-attempts": 5 if reason == "retries_exhausted" else 1,
        "x-payrelay-failed-at": failed_at,
    }
    if reason == "invoice_not_found":
        chargebee = {
            "api_error_code": "resource_not_found",
            "http_status_code": 404,
            "type": "invalid_request",
        }
        headers["x-payrelay-chargebee-error"] = orjson.dumps(chargebee).decode()
    return aio_pika.Message(
        orjson.dumps(event),
        message_id=event_id,
        content_type="application/cloudevents+json",
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        headers=headers,
        type=kind,
    )


async def idle(message: aio_pika.abc.AbstractIncomingMessage) -> None:
    """Nothing is published to the work queue here; the consumer only makes the dashboard healthy."""


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=PORT, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{PORT}"
    finally:
        server.should_exit = True
        await task


async def main() -> None:
    prefix = f"docs-{uuid.uuid4().hex[:4]}"  # its own: deleted again at the end
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            amqp_url=AMQP_URL,
            amqp_prefix=prefix,
            admin_token=TOKEN,
            ledger_url=f"sqlite:///{tmp}/ledger.db",
            amqp_management_url=MANAGEMENT_URL,
        )
        topology = settings.broker.topology()
        await declare_once(AMQP_URL, topology)
        connection = await aio_pika.connect(AMQP_URL)
        try:
            await fill_ledger(settings.ledger.url)
            channel = await connection.channel(publisher_confirms=True)
            dead = await channel.get_exchange(topology.dead_letter, ensure=False)
            for event_id, (origin, source), invoice, reason, error in DEAD:
                await dead.publish(letter(event_id, origin, source, invoice, reason, error), routing_key="")
            consumer = await connection.channel()  # a consumer on the work queue: "Healthy"
            await (await consumer.get_queue(topology.work_queue, ensure=False)).consume(idle)
            await shoot(settings)
        finally:
            for queue in topology.queues:
                with contextlib.suppress(Exception):
                    await (await connection.channel()).queue_delete(queue.name)
            for exchange in topology.exchanges:
                with contextlib.suppress(Exception):
                    await (await connection.channel()).exchange_delete(exchange.name)
            await connection.close()


async def shoot(settings: Settings) -> None:
    async with serving(settings) as url, async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--headless=new", "--no-sandbox"]
        )
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(url + "/login")
            await page.get_by_label("Your token").fill(TOKEN)
            await page.get_by_role("button", name="Sign in").click()
            await expect(page.locator('[data-summary="dead_letters"]')).to_have_text(str(len(DEAD)))
            await page.screenshot(path=str(DOCS / "ops-dashboard.png"), full_page=True)
            await page.goto(url + "/dead-letters")
            await page.locator('[data-event-id="evt-20240501-0109"] a').click()
            await expect(page.get_by_role("heading", name="Chargebee error")).to_be_visible()
            await page.screenshot(path=str(DOCS / "ops-dead-letter.png"), full_page=True)
        finally:
            await browser.close()


if __name__ == "__main__":
    asyncio.run(main())
