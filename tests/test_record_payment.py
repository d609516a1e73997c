"""The whole pipeline, end to end: signed events in, record_payment calls out, confirmations back.

Real RabbitMQ, the Chargebee sandbox over real HTTP, and both ledger backends (SQLite and the
PostgreSQL on 127.0.0.1:5432) running the same tests.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import aio_pika
import orjson
import pytest

from service.dead_letters import Filter
from service.sender import example_event
from tests.factories import new_deposit
from tests.pipeline import Pipeline, pipeline, until

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


async def test_deposit_is_recorded_and_confirmed(pipe: Pipeline) -> None:
    """A deposit becomes one v1 record_payment with the exact fields and headers, then payment.recorded."""
    event = new_deposit(reference="BANKREF-1")
    await pipe.send(event)
    [confirmation] = await pipe.confirmations(1)
    [call] = await pipe.requests("INV-1001")
    assert call["api_version"] == "v1"
    assert call["form"] == {
        "amount": "2500",
        "payment_method": "bank_transfer",
        "reference_number": "BANKREF-1",
        "paid_at": str(
            int(__import__("datetime").datetime.fromisoformat(event["data"]["booked_at"]).timestamp())
        ),
    }
    assert call["headers"]["chargebee-event-email"] == "all-disabled"
    assert "chargebee-event-webhook" not in call["headers"]
    assert call["headers"]["chargebee-idempotency-key"].startswith("payrelay-")
    assert confirmation["type"] == "payment.recorded"
    assert confirmation["source"] == "payrelay"
    data = confirmation["data"]
    assert (data["invoice_id"], data["amount"], data["currency"], data["origin"]) == (
        "INV-1001",
        2500,
        "USD",
        "acme-bank",
    )
    assert data["invoice_status"] == "payment_due"
    assert data["amount_due"] == 10000 - 2500
    assert data["transaction_id"].startswith("txn_")
    assert data["cause"] == {"source": event["source"], "id": event["id"], "type": "bank.deposit"}
    assert (await pipe.invoice("INV-1001"))["amount_paid"] == 2500


async def test_partial_then_full_payment_marks_invoice_paid(pipe: Pipeline) -> None:
    """Two payments that settle the invoice: the second also emits invoice.paid."""
    await pipe.send(new_deposit("INV-1002", "25.50"))
    [first] = await pipe.confirmations(1)
    assert first["data"]["invoice_status"] == "payment_due"
    await pipe.send(new_deposit("INV-1002", "100.00"))
    second = await pipe.confirmations(2)
    assert sorted(c["type"] for c in second) == ["invoice.paid", "payment.recorded"]
    paid = next(c for c in second if c["type"] == "invoice.paid")
    assert (paid["data"]["invoice_status"], paid["data"]["amount_due"]) == ("paid", 0)
    assert (await pipe.invoice("INV-1002"))["status"] == "paid"


async def test_check_scan_with_remittance_matching_and_source_pattern(pipe: Pipeline) -> None:
    """A check without invoice_id is matched by the source's own pattern on its remittance text."""
    event = example_event(
        "check.scan", amount="10.00", currency="USD", remittance="Re: Invoice #INV-1003 thanks"
    )
    await pipe.send(event, source="lockbox")
    await pipe.confirmations(1)
    [call] = await pipe.requests("INV-1003")
    assert call["form"]["payment_method"] == "check"
    assert call["form"]["memo"] == "Re: Invoice #INV-1003 thanks"
    assert "chargebee-event-email" not in call["headers"]  # lockbox does not skip emails


@pytest.mark.parametrize(
    ("invoice", "amount", "currency", "minor"),
    [("INV-2001", "1500", "JPY", 1500), ("INV-3001", "12.345", "BHD", 12345)],
)
async def test_zero_and_three_decimal_currencies(
    pipe: Pipeline, invoice: str, amount: str, currency: str, minor: int
) -> None:
    """JPY and BHD amounts reach Chargebee in their own minor units."""
    await pipe.send(new_deposit(invoice, amount, currency))
    [confirmation] = await pipe.confirmations(1)
    assert confirmation["data"]["amount"] == minor
    [call] = await pipe.requests(invoice)
    assert call["form"]["amount"] == str(minor)


async def test_api_v2_fields(prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection) -> None:
    """With chargebee_api_version = v2 the call uses transaction[...] fields and comment."""
    async with pipeline(prefix, ledger_url, amqp, chargebee_api_version="v2", skip_webhooks=True) as pipe:
        event = new_deposit("INV-1004", "30.00", remittance="March rent")
        await pipe.send(event)
        await pipe.confirmations(1)
        [call] = await pipe.requests("INV-1004")
    assert call["api_version"] == "v2"
    assert set(call["form"]) == {
        "transaction[amount]",
        "transaction[payment_method]",
        "transaction[reference_number]",
        "transaction[date]",
        "comment",
    }
    assert call["form"]["transaction[amount]"] == "3000"
    assert call["form"]["comment"] == "March rent"
    assert call["headers"]["chargebee-event-webhook"] == "all-disabled"


async def test_same_event_twice_records_once(pipe: Pipeline, amqp: aio_pika.abc.AbstractConnection) -> None:
    """A duplicate delivered later (bank retry) calls Chargebee once and republishes the same confirmation."""
    event = new_deposit("INV-1005")
    await pipe.send(event)
    [first] = await pipe.confirmations(1)
    # Published straight to the exchange: the receiver's short-term duplicate filter is not involved.
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{pipe.settings.broker.prefix}.events")
    message = aio_pika.Message(
        orjson.dumps(event), message_id=event["id"], headers={"x-payrelay-source": "acme-bank"}
    )
    await exchange.publish(message, routing_key="bank.deposit")
    [again] = await pipe.confirmations(1)
    assert again == first
    assert len(await pipe.requests("INV-1005")) == 1


async def test_transient_failures_are_retried_then_succeed(pipe: Pipeline) -> None:
    """Two 503s from Chargebee: retried through the retry tiers, then recorded once."""
    await pipe.admin("POST", "/sandbox/faults", {"status": 503, "count": 2, "invoice_id": "INV-1006"})
    await pipe.send(new_deposit("INV-1006"))
    await pipe.confirmations(1, within=15)
    statuses = [r["status"] for r in await pipe.requests("INV-1006")]
    assert statuses == [503, 503, 200]
    assert (await pipe.invoice("INV-1006"))["amount_paid"] == 2500


async def test_lost_answer_is_found_in_chargebee_not_sent_again(pipe: Pipeline) -> None:
    """Chargebee records but the answer is lost: the retry finds the payment there, no second call."""
    fault = {"disconnect": True, "count": 1, "invoice_id": "INV-1007", "after_commit": True}
    await pipe.admin("POST", "/sandbox/faults", fault)
    await pipe.send(new_deposit("INV-1007"))
    [confirmation] = await pipe.confirmations(1, within=15)
    [call] = await pipe.requests("INV-1007")
    assert call["status"] == 0  # the dropped answer; nothing was sent after it
    [linked] = (await pipe.invoice("INV-1007"))["linked_transactions"]
    assert confirmation["data"]["transaction_id"] == linked["txn_id"]
    assert (await pipe.invoice("INV-1007"))["amount_paid"] == 2500


async def test_exhausted_retries_are_dead_lettered(pipe: Pipeline) -> None:
    """Chargebee failing every time: after max_attempts the message is dead-lettered retries_exhausted."""
    await pipe.admin("POST", "/sandbox/faults", {"status": 500, "count": 10, "invoice_id": "INV-1008"})
    event = new_deposit("INV-1008")
    await pipe.send(event)
    [dead] = await pipe.dead_letters(1, within=20)
    assert dead.event_id == event["id"]
    assert dead.headers["x-payrelay-reason"] == "retries_exhausted"
    assert dead.headers["x-payrelay-attempts"] == 3
    assert "500" in str(dead.headers["x-payrelay-error"])
    assert dead.headers["x-payrelay-failed-at"]
    assert dead.headers["x-payrelay-source"] == "acme-bank"
    assert orjson.loads(dead.body) == event
    assert len(await pipe.requests("INV-1008")) == 3


@pytest.mark.parametrize(
    ("invoice", "reason"),
    [("INV-404-NOPE", "invoice_not_found"), ("INV-9002", "invoice_not_payable")],
)
async def test_permanent_failures_are_dead_lettered_with_reason(
    pipe: Pipeline, invoice: str | None, reason: str
) -> None:
    """Unknown invoice, voided invoice: each is dead-lettered with its reason (no invoice at all is
    cash application's: tests/test_cash_application.py)."""
    event = new_deposit(invoice, remittance="no reference here")
    await pipe.send(event)
    [dead] = await pipe.dead_letters(1)
    assert dead.headers["x-payrelay-reason"] == reason
    assert dead.headers["x-payrelay-attempts"] == 1


async def test_an_invoice_found_in_the_remittance_is_kept_with_its_dead_letter(pipe: Pipeline) -> None:
    """The event names no invoice; its remittance does, and Chargebee has none by that number: the
    letter says which invoice it was for, and `--invoice` finds it."""
    event = new_deposit(None, remittance="Payment for INV-4040 thanks")
    await pipe.send(event)
    [dead] = await pipe.dead_letters(1)
    assert (dead.reason, dead.invoice_id) == ("invoice_not_found", "INV-4040")
    assert dead.headers["x-payrelay-invoice"] == "INV-4040"
    found = await pipe.letters().select(Filter(invoice="INV-4040"), now=datetime.now(UTC))
    assert [letter.event_id for letter in found] == [event["id"]]


async def test_rejection_is_dead_lettered_with_chargebee_error(pipe: Pipeline) -> None:
    """A 400 from Chargebee is rejected_by_chargebee, dead-lettered with Chargebee's error body."""
    fault = {"status": 400, "api_error_code": "param_wrong_value", "invoice_id": "INV-1009", "count": 1}
    await pipe.admin("POST", "/sandbox/faults", fault)
    await pipe.send(new_deposit("INV-1009", "25.00"))
    [dead] = await pipe.dead_letters(1)
    assert dead.headers["x-payrelay-reason"] == "rejected_by_chargebee"
    body = orjson.loads(dead.headers["x-payrelay-chargebee-error"])
    assert (body["api_error_code"], body["type"]) == ("param_wrong_value", "invalid_request")


async def test_invalid_event_in_the_queue_is_dead_lettered(
    pipe: Pipeline, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """A message that is not a valid event (published around the receiver) is dead-lettered invalid_event."""
    channel = await amqp.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{pipe.settings.broker.prefix}.events")
    await exchange.publish(aio_pika.Message(b"{not json", message_id="junk"), routing_key="bank.deposit")
    [dead] = await pipe.dead_letters(1)
    assert (dead.event_id, dead.headers["x-payrelay-reason"]) == ("junk", "invalid_event")


async def test_refused_credentials_pause_holding_messages_without_spending_deliveries(pipe: Pipeline) -> None:
    """401: the consumer pauses and holds what is in flight (nothing dead-lettered, nothing returned),
    and records all of it, once each, when the key works again."""
    await pipe.admin("PUT", "/sandbox/api-key", {"api_key": "rotated_elsewhere"})
    await pipe.send(
        [new_deposit(invoice, "1.00") for invoice in ("INV-1010", "INV-1001", "INV-1002", "INV-1003")]
    )
    await until(lambda: _paused(pipe), what="the consumer to pause")
    assert pipe.worker.metrics.chargebee_auth_failing._value.get() == 1
    await asyncio.sleep(1.5)  # three credential re-checks
    assert await pipe.dead_letter_count() == 0
    assert await pipe.queue_depth("record-payment") == 0  # held unacked, not returned
    outcomes = pipe.worker.metrics.consumer_outcomes
    assert outcomes.labels("requeued", "")._value.get() == 0
    async with pipe.http.get(f"{pipe.sandbox_url}/sandbox/requests?operation=all") as response:
        calls = (await response.json())["requests"]
    refused = [c for c in calls if c["status"] == 401 and c.get("invoice_id") != "payrelay-credentials-check"]
    assert 1 <= len(refused) <= 4  # at most once each before the pause; none while held
    assert any(c.get("invoice_id") == "payrelay-credentials-check" for c in calls)  # the re-checks
    await pipe.admin("PUT", "/sandbox/api-key", {"api_key": "test_pipeline_key"})
    confirmations = await pipe.confirmations(4, within=10)
    assert sorted(c["data"]["invoice_id"] for c in confirmations) == [
        "INV-1001",
        "INV-1002",
        "INV-1003",
        "INV-1010",
    ]
    assert pipe.worker.paused_reason is None
    assert [r["status"] for r in await pipe.requests("INV-1010")].count(200) == 1
    assert outcomes.labels("requeued", "")._value.get() == 0


async def _paused(pipe: Pipeline) -> bool:
    return pipe.worker.paused_reason is not None and not pipe.worker.consuming


async def _depth_is(pipe: Pipeline, queue: str, depth: int) -> bool:
    return await pipe.queue_depth(queue) == depth


async def test_traceparent_is_carried_to_chargebee_and_confirmations(pipe: Pipeline) -> None:
    """A W3C traceparent sent to the receiver reaches the Chargebee call and the confirmation headers."""
    from service.sender import signed_headers

    trace = f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01"
    body = orjson.dumps(new_deposit("INV-1003"))
    headers = signed_headers("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", body, "application/cloudevents+json")
    async with pipe.http.post(
        f"{pipe.receiver_url}/v1/ingest/acme-bank", data=body, headers=headers | {"traceparent": trace}
    ) as response:
        assert response.status == 202
    message = None
    for _ in range(200):
        message = await pipe.capture.get(fail=False, no_ack=True)
        if message is not None:
            break
        await asyncio.sleep(0.05)
    assert message is not None
    assert message.headers["traceparent"] == trace
    [call] = await pipe.requests("INV-1003")
    assert call["headers"]["traceparent"] == trace
