"""Money is recorded once and correctly: every path that could call Chargebee twice, or wrongly.

Each test drives the real worker over real RabbitMQ, the ledger (SQLite and PostgreSQL) and the
Chargebee sandbox over HTTP, and breaks something: an answer lost after Chargebee committed, an
outage until retries run out and an operator's replay, Chargebee forgetting an idempotency key,
a payment in another currency, an overpayment, a split payment failing half-way, retention
deleting a ledger row, an unreadable 200, a misconfigured site, the broker refusing copies.
"""

from __future__ import annotations

import asyncio
import base64
import os
import sys
import time
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from service.ledger import async_url
from tests.conftest import AMQP_URL
from tests.factories import new_deposit
from tests.pipeline import API_KEY, Pipeline, distinct, pipeline, redeliver, until

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

PAYRELAY = str(Path(sys.executable).parent / "payrelay")
OUTAGE = {"status": 503, "operation": "any", "count": 1000}


async def calls(pipe: Pipeline, operation: str = "record_payment", **query: str) -> list[dict[str, Any]]:
    params = {"operation": operation, **query}
    async with pipe.http.get(f"{pipe.sandbox_url}/sandbox/requests", params=params) as response:
        found: list[dict[str, Any]] = (await response.json())["requests"]
        return found


async def v2(pipe: Pipeline, path: str) -> dict[str, Any]:
    authorization = "Basic " + base64.b64encode(f"{API_KEY}:".encode()).decode()
    async with pipe.http.get(
        f"{pipe.sandbox_url}/api/v2/{path}", headers={"Authorization": authorization}
    ) as r:
        body: dict[str, Any] = await r.json()
        return body


async def payments_on(pipe: Pipeline, invoice: str) -> list[dict[str, Any]]:
    """What Chargebee holds: the transactions linked to the invoice."""
    linked: list[dict[str, Any]] = (await v2(pipe, f"invoices/{invoice}"))["invoice"]["linked_payments"]
    return linked


async def replay_all(pipe: Pipeline, ledger_url: str) -> None:
    """`payrelay dlq replay --all --yes`, as an operator runs it after a fix."""
    await dlq(pipe, ledger_url, "replay", "--all", "--yes")


async def dlq(pipe: Pipeline, ledger_url: str, *args: str) -> str:
    env = {
        **os.environ,
        "PAYRELAY_AMQP_PREFIX": pipe.settings.broker.prefix,
        "PAYRELAY_LEDGER_URL": ledger_url,
        "PAYRELAY_AMQP_URL": AMQP_URL,
    }
    env.pop("PAYRELAY_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        PAYRELAY, "dlq", *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    return out.decode()


async def dead_lettered(pipe: Pipeline, count: int = 1, within: float = 20) -> None:
    await pipe.dead_letters(count, within=within)


async def _depth(pipe: Pipeline, queue: str, depth: int) -> bool:
    return await pipe.queue_depth(queue) == depth


# -- the three that recorded money twice or wrongly ----------------------------------------------


@pytest.mark.parametrize("lost", [{"status": 504}, {"disconnect": True}], ids=["504", "dropped"])
async def test_committed_then_outage_then_replay_records_once(
    pipe: Pipeline, ledger_url: str, lost: dict[str, Any]
) -> None:
    """Chargebee commits attempt 1 and the answer is lost; every read and write fails until the
    retries are exhausted; the operator replays (a new idempotency key): still one payment."""
    await pipe.admin("POST", "/sandbox/faults", {**lost, "after_commit": True, "invoice_id": "INV-1001"})
    event = new_deposit("INV-1001")
    await pipe.send(event)
    await until(lambda: _called(pipe, "INV-1001"), what="the first attempt")
    await pipe.admin("POST", "/sandbox/faults", OUTAGE)  # before the retry, a second later
    await dead_lettered(pipe)
    [letter] = orjson.loads(await dlq(pipe, ledger_url, "list", "--json"))
    assert (letter["reason"], letter["attempts"]) == ("retries_exhausted", 3)
    assert len(await calls(pipe)) == 1  # nothing resent while Chargebee could not be read
    await pipe.admin("DELETE", "/sandbox/faults")
    assert len(await payments_on(pipe, "INV-1001")) == 1
    await replay_all(pipe, ledger_url)
    [confirmation] = await pipe.confirmations(1, within=20)
    [payment] = await payments_on(pipe, "INV-1001")
    assert confirmation["data"]["transaction_id"] == payment["txn_id"]
    assert confirmation["data"]["cause"]["id"] == event["id"]
    assert len(await calls(pipe)) == 1
    assert (await pipe.invoice("INV-1001"))["amount_paid"] == 2500


class Clock:
    """The sandbox's wall clock, moved by hand to make Chargebee forget idempotency keys."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


async def test_a_retry_after_chargebees_idempotency_window_records_once(
    prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """The answer is lost, and the retry comes after Chargebee forgot the key: it looks first."""
    clock = Clock()
    async with pipeline(prefix, ledger_url, amqp, sandbox_clock=clock) as pipe:
        fault = {"disconnect": True, "after_commit": True, "invoice_id": "INV-1002"}
        await pipe.admin("POST", "/sandbox/faults", fault)
        await pipe.send(new_deposit("INV-1002"))
        await until(lambda: _called(pipe, "INV-1002"), what="the first attempt")
        clock.offset = 31 * 60  # Chargebee's 30-minute window is over before the retry
        await pipe.confirmations(1, within=15)
        assert len(await payments_on(pipe, "INV-1002")) == 1
        assert len(await calls(pipe, invoice_id="INV-1002")) == 1


async def _called(pipe: Pipeline, invoice: str) -> bool:
    return bool(await calls(pipe, invoice_id=invoice))


@pytest.mark.parametrize(
    ("invoice", "amount", "currency"), [("INV-1001", "25.00", "EUR"), ("INV-1001", "5000", "JPY")]
)
async def test_a_payment_in_another_currency_is_dead_lettered_and_nothing_recorded(
    pipe: Pipeline, invoice: str, amount: str, currency: str
) -> None:
    """25.00 EUR (or 5000 JPY) on a USD invoice: currency_mismatch, and not one record_payment."""
    await pipe.send(new_deposit(invoice, amount, currency))
    [dead] = await pipe.dead_letters(1)
    assert dead.headers["x-payrelay-reason"] == "currency_mismatch"
    assert currency in str(dead.headers["x-payrelay-error"])
    assert await calls(pipe) == []
    assert (await pipe.invoice(invoice))["amount_paid"] == 0


async def test_an_invoice_that_is_not_payable_is_refused_without_a_call(pipe: Pipeline) -> None:
    """A paid invoice is invoice_not_payable from its retrieval; record_payment is never called."""
    await pipe.send(new_deposit("INV-9001"))
    [dead] = await pipe.dead_letters(1)
    assert dead.headers["x-payrelay-reason"] == "invoice_not_payable"
    assert await calls(pipe) == []


async def test_a_known_currency_is_not_retrieved_again(pipe: Pipeline) -> None:
    """The invoice's currency is cached: a second payment on it costs no retrieval."""
    await pipe.send(new_deposit("INV-1008", "10.00"))
    await pipe.confirmations(1)
    await pipe.send(new_deposit("INV-1008", "10.00"))
    await pipe.confirmations(1)
    assert len(await calls(pipe, "retrieve_invoice", invoice_id="INV-1008")) == 1
    assert len(await calls(pipe, invoice_id="INV-1008")) == 2


# -- overpayments and split payments -------------------------------------------------------------


async def test_an_overpayment_is_recorded_with_its_excess(pipe: Pipeline) -> None:
    """150.00 on an invoice of 100.00: recorded whole, paid, and the confirmation says 50.00 was excess."""
    await pipe.send(new_deposit("INV-1001", "150.00"))
    confirmations = {c["type"]: c for c in await pipe.confirmations(2)}
    assert confirmations["payment.recorded"]["data"]["amount"] == 15000
    assert confirmations["payment.recorded"]["data"]["excess"] == 5000
    assert confirmations["invoice.paid"]["data"]["amount_due"] == 0
    customer = (await v2(pipe, "customers/cust_INV-1001"))["customer"]
    assert customer["excess_payments"] == 5000


async def test_an_exact_payment_has_no_excess(pipe: Pipeline) -> None:
    await pipe.send(new_deposit("INV-1001", "100.00"))
    confirmations = await pipe.confirmations(2)
    assert all("excess" not in c["data"] for c in confirmations)


async def test_an_overpayment_goes_to_a_person_when_configured(
    prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """overpayment = "review": kept in review (SPEC §10), untouched; tests/test_cash_application.py
    follows it through a decision."""
    async with pipeline(prefix, ledger_url, amqp, overpayment="review") as pipe:
        event = new_deposit("INV-1001", "150.00")
        await pipe.send(event)
        key = ("acme-bank", event["source"], event["id"])

        async def kept() -> bool:
            return await pipe.worker.ledger.reviews.by_key(key) is not None

        await until(kept, what="the overpayment in review")
        item = await pipe.worker.ledger.reviews.by_key(key)
        assert item is not None and item.why == "overpayment"
        assert await calls(pipe) == [] and await pipe.dead_letter_count() == 0


async def test_allocations_are_recorded_once_each_and_confirmed_each(pipe: Pipeline) -> None:
    """One payment for two invoices: two record_payment calls (own keys), two payment.recorded, and a
    failure of the second part retries that part alone."""
    await pipe.admin("POST", "/sandbox/faults", {"status": 503, "invoice_id": "INV-1003"})
    allocations = [
        {"invoice_id": "INV-1002", "amount": "50.00"},
        {"invoice_id": "INV-1003", "amount": "75.00"},
    ]
    event = new_deposit(None, "125.00", allocations=allocations)
    await pipe.send(event)
    confirmations = await distinct(pipe, 2)
    assert sorted((c["data"]["invoice_id"], c["data"]["amount"]) for c in confirmations) == [
        ("INV-1002", 5000),
        ("INV-1003", 7500),
    ]
    assert len({c["id"] for c in confirmations}) == 2
    assert [c["status"] for c in await calls(pipe, invoice_id="INV-1002")] == [200]
    assert [c["status"] for c in await calls(pipe, invoice_id="INV-1003")] == [503, 200]
    keys = {c["headers"]["chargebee-idempotency-key"] for c in await calls(pipe)}
    assert len(keys) == 2
    await redeliver(pipe, event)  # the bank sends it again: both parts are already recorded
    again = await distinct(pipe, 2)
    assert {c["id"] for c in again} == {c["id"] for c in confirmations}
    assert len(await calls(pipe)) == 3


async def test_references_share_the_amount_in_order_decided_once(pipe: Pipeline) -> None:
    """References naming two payable invoices: each gets up to its amount due, the last the rest; a
    resend after the first is paid shares it the same way (the plan is kept), calling nothing."""
    references = ["INV-1004", "RF18539007547034", "INV-9001", "INV-1005"]
    event = new_deposit(None, "350.00", references=references)
    await pipe.send(event)
    confirmations = await distinct(pipe, 3)  # INV-1004 is paid in full: invoice.paid too
    recorded = sorted(
        (c["data"]["invoice_id"], c["data"]["amount"])
        for c in confirmations
        if c["type"] == "payment.recorded"
    )
    assert recorded == [("INV-1004", 25000), ("INV-1005", 10000)]
    await redeliver(pipe, event)
    assert {c["id"] for c in await distinct(pipe, 3)} == {c["id"] for c in confirmations}
    assert len(await calls(pipe)) == 2


# -- replays, retention, unreadable answers ------------------------------------------------------


async def test_a_replay_after_retention_deleted_the_row_records_nothing_new(
    pipe: Pipeline, ledger_url: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """The ledger row is gone (retention) while a copy waits as a dead letter: the replay finds the
    payment in Chargebee and republishes its confirmation instead of paying again."""
    event = new_deposit("INV-1006")
    await pipe.send(event)
    [first] = await pipe.confirmations(1)
    engine = create_async_engine(async_url(ledger_url))
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM payrelay_ledger WHERE event_id = :id"), {"id": event["id"]})
    await engine.dispose()
    channel = await amqp.channel(publisher_confirms=True)
    message = aio_pika.Message(
        orjson.dumps(event),
        message_id=event["id"],
        headers={"x-payrelay-source": "acme-bank", "x-payrelay-generation": 1},
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    await channel.default_exchange.publish(message, routing_key=pipe.worker.topology.work_queue)
    await channel.close()
    [again] = await pipe.confirmations(1)
    assert again["data"]["transaction_id"] == first["data"]["transaction_id"]
    assert len(await calls(pipe)) == 1


async def test_an_unreadable_200_is_reconciled_at_once(pipe: Pipeline) -> None:
    """Chargebee recorded it and its 200 could not be read: found in Chargebee, recorded, one call."""
    fault = {"unreadable": True, "after_commit": True, "invoice_id": "INV-1007"}
    await pipe.admin("POST", "/sandbox/faults", fault)
    await pipe.send(new_deposit("INV-1007"))
    [confirmation] = await pipe.confirmations(1)
    [payment] = await payments_on(pipe, "INV-1007")
    assert confirmation["data"]["transaction_id"] == payment["txn_id"]
    assert len(await calls(pipe)) == 1


async def test_an_unreadable_200_not_found_in_chargebee_goes_to_a_person(
    pipe: Pipeline, ledger_url: str
) -> None:
    """A 200 that cannot be read, and no such payment in Chargebee: outcome_unknown, never resent;
    the person who checked replays it, and then it is recorded (once)."""
    await pipe.admin("POST", "/sandbox/faults", {"unreadable": True, "invoice_id": "INV-1007"})
    await pipe.send(new_deposit("INV-1007"))
    await dead_lettered(pipe)
    [letter] = orjson.loads(await dlq(pipe, ledger_url, "list", "--json"))
    assert letter["reason"] == "outcome_unknown"
    assert len(await calls(pipe)) == 1
    assert await payments_on(pipe, "INV-1007") == []
    await replay_all(pipe, ledger_url)
    [confirmation] = await pipe.confirmations(1, within=15)
    [payment] = await payments_on(pipe, "INV-1007")
    assert confirmation["data"]["transaction_id"] == payment["txn_id"]
    assert len(await calls(pipe)) == 2


# -- configuration faults, broker trouble --------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 404, "api_error_code": "site_not_found"},
        {"status": 302},
    ],
    ids=["site_not_found", "redirect"],
)
async def test_a_misconfigured_site_pauses_instead_of_dead_lettering(
    pipe: Pipeline, fault: dict[str, Any]
) -> None:
    """A 404 that is not resource_not_found, or a redirect, says payrelay points at the wrong place:
    pause, dead-letter nothing, and record the payment once Chargebee answers properly again."""
    await pipe.admin("POST", "/sandbox/faults", {**fault, "operation": "any", "count": 2})
    await pipe.send(new_deposit("INV-1009"))
    [confirmation] = await pipe.confirmations(1, within=15)
    assert confirmation["data"]["invoice_id"] == "INV-1009"
    assert await pipe.dead_letter_count() == 0
    assert len(await calls(pipe, invoice_id="INV-1009")) == 1


async def test_confirmations_the_broker_refuses_wait_in_the_outbox(
    pipe: Pipeline, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """The confirmations exchange is gone: the payment is recorded and acked all the same (no
    redelivery spends the delivery limit), and the outbox publishes it once the exchange is back."""
    channel = await amqp.channel()
    await channel.exchange_delete(pipe.worker.topology.confirmations)
    await pipe.send(new_deposit("INV-1010"))
    await until(lambda: _called(pipe, "INV-1010"), what="the payment")
    await until(lambda: _depth(pipe, "record-payment", 0), what="the message to be settled")
    await asyncio.sleep(0.5)
    outcomes = pipe.worker.metrics.consumer_outcomes
    assert outcomes.labels("recorded", "")._value.get() == 1
    assert outcomes.labels("requeued", "")._value.get() == 0
    [waiting] = await pipe.worker.ledger.unconfirmed(older_than=0)
    exchange = await channel.declare_exchange(
        pipe.worker.topology.confirmations, aio_pika.ExchangeType.TOPIC, durable=True
    )
    await pipe.capture.bind(exchange, "#")
    assert await pipe.worker.outbox.drain(older_than=0) == 1
    [confirmation] = await pipe.confirmations(1)
    assert confirmation["data"]["invoice_id"] == "INV-1010"
    assert await pipe.worker.ledger.unconfirmed(older_than=0) == []
    assert len(await calls(pipe)) == 1
    await channel.close()


async def test_a_retry_the_broker_refuses_waits_before_chargebee_is_called_again(
    pipe: Pipeline, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """The retry tier queue is missing (the copy is unroutable): the message waits out its retry
    delay before it goes back, instead of calling Chargebee again at once."""
    channel = await amqp.channel()
    await channel.queue_delete(pipe.worker.topology.retry_tiers[0].queue)
    await channel.close()
    await pipe.admin("POST", "/sandbox/faults", {"status": 429, "retry_after": 1, "invoice_id": "INV-1004"})
    await pipe.send(new_deposit("INV-1004"))
    await pipe.confirmations(1, within=15)
    first, second = await calls(pipe, invoice_id="INV-1004")
    assert (first["status"], second["status"]) == (429, 200)
    assert second["at"] - first["at"] >= 0.95  # Retry-After: 1, honoured although the copy failed
