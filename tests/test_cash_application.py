"""Cash application end to end (SPEC §10): the receiver, RabbitMQ, the consumer, the sandbox, both ledgers.

Each payment here names no invoice. The payer map, the customers and the invoices are this test's
own (fresh names and fingerprints: PostgreSQL's tables are shared by every test). Every path that
could call Chargebee twice for one payment is tried: a resend, a retry after a partial recording,
a decision race, a decision after the invoice was paid meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from consumers.directory import open_directory
from service.metrics import create_metrics
from service.review.model import Conflict, Refused, ReviewItem
from service.review.service import Reviews
from tests.factories import new_deposit
from tests.pipeline import Pipeline, distinct, pipeline, redeliver, until

DAY = 86_400


def tag() -> str:
    return uuid.uuid4().hex[:6]


async def book(
    pipe: Pipeline, company: str, invoices: list[tuple[str, int, int]], currency: str = "USD"
) -> str:
    """A customer of the sandbox with open invoices (id, amount due in minor units, age in days)."""
    customer = f"cust_{tag()}"
    await pipe.admin("POST", "/sandbox/customers", {"id": customer, "company": company})
    now = int(time.time())
    for invoice_id, total, age in invoices:
        spec = {"id": invoice_id, "total": total, "currency_code": currency, "customer_id": customer}
        await pipe.admin("POST", "/sandbox/invoices", {**spec, "date": now - age * DAY})
    return customer


def payment(
    amount: str, *, name: str | None = None, fingerprint: str | None = None, **data: Any
) -> dict[str, Any]:
    payer = {k: v for k, v in {"name": name, "account_fingerprint": fingerprint}.items() if v}
    if payer:
        data["payer"] = payer
    return new_deposit(None, amount, **data)


async def review_of(pipe: Pipeline, event: dict[str, Any], within: float = 10.0) -> ReviewItem:
    key = ("acme-bank", event["source"], event["id"])
    found: list[ReviewItem] = []

    async def kept() -> bool:
        item = await pipe.worker.ledger.reviews.by_key(key)
        found[:] = [item] if item is not None else []
        return bool(found)

    await until(kept, within=within, what=f"a review item for {event['id']}")
    return found[0]


async def recorded_on(pipe: Pipeline, invoice_id: str) -> list[dict[str, Any]]:
    return [r for r in await pipe.requests(invoice_id) if r["operation"] == "record_payment"]


@contextlib.asynccontextmanager
async def reviews_of(pipe: Pipeline) -> AsyncIterator[Reviews]:
    """The review service as the CLI and the ops app build it: its own broker and Chargebee reader."""
    broker = pipe.settings.broker.broker("test-review")
    await broker.start(wait=5.0)
    try:
        async with open_directory(pipe.settings, create_metrics()) as directory:
            yield Reviews(
                pipe.worker.ledger,
                broker,
                pipe.settings.broker.topology(),
                directory,
                api_version=pipe.settings.chargebee.api_version,
            )
    finally:
        await broker.stop()


@pytest.fixture
async def off(prefix: str, ledger_url: str, amqp: Any) -> AsyncIterator[Pipeline]:
    async with pipeline(prefix, ledger_url, amqp, matching={"enabled": False}) as running:
        yield running


@pytest.fixture
async def overpaid(prefix: str, ledger_url: str, amqp: Any) -> AsyncIterator[Pipeline]:
    async with pipeline(prefix, ledger_url, amqp, overpayment="review") as running:
        yield running


async def test_with_matching_off_a_payment_naming_nothing_is_a_dead_letter(off: Pipeline) -> None:
    await off.send(payment("25.00", remittance="no reference here"))
    [dead] = await off.dead_letters(1)
    assert dead.headers["x-payrelay-reason"] == "unmatched_invoice"


async def test_an_unknown_payer_waits_in_review_and_nothing_is_recorded(pipe: Pipeline) -> None:
    event = payment("25.00", name=f"Nobody Known {tag()}", remittance="no reference here")
    await pipe.send(event)
    item = await review_of(pipe, event)
    assert (item.state, item.why, item.suggestions, item.amount, item.currency) == (
        "open", "no_payer", (), 2500, "USD"
    )  # fmt: skip
    assert item.event == event and item.headers["x-payrelay-source"] == "acme-bank"
    assert await pipe.dead_letter_count() == 0
    await until(lambda: _empty(pipe, "work"), what="the message acked")
    assert [r for r in await pipe.requests() if r["operation"] == "record_payment"] == []


async def _empty(pipe: Pipeline, queue: str) -> bool:
    name = pipe.settings.broker.topology().work_queue.removeprefix(pipe.settings.broker.prefix + ".")
    return await pipe.queue_depth(name) == 0


async def test_a_known_payer_is_matched_by_amount_and_by_sum_exactly_once(pipe: Pipeline) -> None:
    """The payer map learns the fingerprint from a payment that named its invoice; the next payments
    from that account name none: one exact amount, one the sum of two invoices. A resend of each
    records nothing again."""
    t = tag()
    fingerprint = f"hmac-sha256:{t}"
    gx = [f"GX{t}-{n}" for n in range(1, 5)]
    await book(
        pipe,
        f"Globex {t} Corporation",
        [(gx[0], 120000, 40), (gx[1], 45000, 30), (gx[2], 30000, 20), (gx[3], 250000, 10)],
    )
    await pipe.send(new_deposit(gx[0], "1200.00", payer={"account_fingerprint": fingerprint}))
    await pipe.confirmations(2)  # each payment here pays its invoice: payment.recorded + invoice.paid

    exact = payment("300.00", fingerprint=fingerprint)
    await pipe.send(exact)
    confirmation = (await pipe.confirmations(2))[0]
    assert confirmation["data"]["invoice_id"] == gx[2]
    assert confirmation["data"]["match"] == {
        "method": "exact_amount", "score": 0.95, "reasons": ["payer_fingerprint", "exact_amount"]
    }  # fmt: skip

    both = payment("2950.00", fingerprint=fingerprint)
    await pipe.send(both)
    got = await pipe.confirmations(4)
    recorded = sorted(c["data"]["invoice_id"] for c in got if c["type"] == "payment.recorded")
    assert recorded == sorted([gx[1], gx[3]])
    assert {c["data"]["match"]["method"] for c in got} == {"sum_of_2"}

    for event in (exact, both):
        await redeliver(pipe, event)  # the bank's resend, days later: the ledger holds the plan
    await pipe.confirmations(2 + 4)  # republished, never recorded again
    for invoice_id in gx:
        assert len(await recorded_on(pipe, invoice_id)) == 1, invoice_id


async def test_a_retry_after_part_of_a_match_was_recorded_keeps_the_plan(pipe: Pipeline) -> None:
    """The second invoice of a sum fails once (5xx); when the retry comes, the first invoice is paid
    and matching again would find nothing — the stored plan records only what is left."""
    t = tag()
    fingerprint = f"hmac-sha256:{t}"
    a, b = f"SA{t}-1", f"SA{t}-2"
    await book(pipe, f"Soylent {t}", [(a, 10000, 20), (b, 20000, 10)])
    await pipe.send(new_deposit(a, "1.00", payer={"account_fingerprint": fingerprint}))
    await pipe.confirmations(1)
    await pipe.admin("POST", "/sandbox/faults", {"status": 503, "count": 1, "invoice_id": b})
    await pipe.send(payment("299.00", fingerprint=fingerprint))  # 99.00 left on a + 200.00 on b
    got = await distinct(pipe, 4, within=20)  # a's is sent again when the retry finds it recorded
    assert sorted(c["data"]["invoice_id"] for c in got if c["type"] == "payment.recorded") == [a, b]
    assert len(await recorded_on(pipe, a)) == 2  # the 1.00 naming it, then its share
    assert len(await recorded_on(pipe, b)) == 2  # the 503, then the retry
    assert (await pipe.invoice(b))["amount_due"] == 0


async def test_an_ambiguous_payment_is_accepted_once_and_the_payer_map_learns(pipe: Pipeline) -> None:
    t = tag()
    fingerprint = f"hmac-sha256:{t}"
    older, newer = f"IT{t}-1", f"IT{t}-2"
    await book(pipe, f"Initech {t} Ltd", [(older, 50000, 30), (newer, 50000, 15)])
    first = payment("500.00", name=f"INITECH {t} LIMITED", fingerprint=fingerprint)
    await pipe.send(first)
    item = await review_of(pipe, first)
    assert item.why == "rivals" or item.why == "low_score"
    assert [s.allocations[0].invoice_id for s in item.suggestions] == [older, newer]  # oldest first
    assert item.suggestions[0].reasons == ("customer_name", "exact_amount")

    async with reviews_of(pipe) as reviews:
        outcomes = await asyncio.gather(
            reviews.accept(item.id, suggestion=0, actor="ana"),
            reviews.accept(item.id, suggestion=1, actor="ben"),
            return_exceptions=True,
        )
    won = [o for o in outcomes if isinstance(o, ReviewItem)]
    lost = [o for o in outcomes if isinstance(o, Conflict)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert lost[0].item.state == "accepted" and lost[0].item.decided_by == won[0].decided_by
    chosen = older if won[0].decided_by == "ana" else newer
    confirmation = (await pipe.confirmations(2))[0]  # payment.recorded, then invoice.paid
    assert confirmation["data"]["invoice_id"] == chosen
    assert confirmation["data"]["match"]["method"] == "review"
    assert len(await recorded_on(pipe, older)) + len(await recorded_on(pipe, newer)) == 1

    second = payment("500.00", name=f"INITECH {t} LIMITED", fingerprint=fingerprint)
    await pipe.send(second)  # the decision taught the map: automatic now, on the one left open
    got = await pipe.confirmations(2)
    left = newer if chosen == older else older
    assert got[0]["data"]["invoice_id"] == left
    assert got[0]["data"]["match"]["reasons"][0] == "payer_fingerprint"
    assert await pipe.worker.ledger.reviews.by_key(("acme-bank", second["source"], second["id"])) is None


async def test_a_decision_on_an_invoice_paid_meanwhile_is_refused_and_the_item_stays_open(
    pipe: Pipeline,
) -> None:
    t = tag()
    one, two = f"UM{t}-1", f"UM{t}-2"
    await book(pipe, f"Umbrella {t}", [(one, 9900, 20), (two, 9900, 10)])
    event = payment("99.00", name=f"Umbrella {t} Corp.")
    await pipe.send(event)
    item = await review_of(pipe, event)
    await pipe.send(new_deposit(one, "99.00"))  # someone pays it meanwhile, naming it
    await pipe.confirmations(2)
    async with reviews_of(pipe) as reviews:
        with pytest.raises(Refused, match=f"invoice {one} is paid now"):
            await reviews.accept(item.id, suggestion=0, actor="ana")
        still = await reviews.get(item.id)
        assert still.state == "open" and f"invoice {one} is paid now" in (still.problem or "")
        with pytest.raises(Refused, match="sum to 50.00 USD but the payment is 99.00 USD"):
            await reviews.assign(item.id, allocations=[(two, "50.00")], actor="ana")
        decided = await reviews.assign(item.id, allocations=[(two, None)], actor="ana")
    assert decided.state == "assigned"
    got = await pipe.confirmations(2)
    assert got[0]["data"]["invoice_id"] == two and got[0]["data"]["match"]["reasons"] == [
        "assigned_by_person"
    ]
    assert len(await recorded_on(pipe, one)) == 1 and len(await recorded_on(pipe, two)) == 1


async def test_a_rejected_payment_is_a_dead_letter_and_so_is_its_resend(pipe: Pipeline) -> None:
    event = payment("12.00", name=f"Nobody {tag()}")
    await pipe.send(event)
    item = await review_of(pipe, event)
    async with reviews_of(pipe) as reviews:
        rejected = await reviews.reject(item.id, actor="ana", note="not ours")
    assert rejected.state == "rejected" and rejected.queued_at is not None
    [dead] = await pipe.dead_letters(1)
    assert dead.headers["x-payrelay-reason"] == "unmatched_invoice"
    assert f"rejected in review {item.id} by ana: not ours" in str(dead.headers["x-payrelay-error"])
    await redeliver(pipe, event)
    await pipe.dead_letters(2)
    assert [r for r in await pipe.requests() if r["operation"] == "record_payment"] == []


async def test_a_redelivered_payment_in_review_is_one_item(pipe: Pipeline) -> None:
    event = payment("13.00", name=f"Nobody {tag()}")
    await pipe.send(event)
    item = await review_of(pipe, event)
    await redeliver(pipe, event)
    await until(lambda: _empty(pipe, "work"), what="the resend acked")
    again = await pipe.worker.ledger.reviews.by_key(item.key)
    assert again is not None and again.id == item.id and again.version == item.version


async def test_an_overpayment_goes_to_review_and_is_recorded_once_when_accepted(overpaid: Pipeline) -> None:
    pipe = overpaid
    t = tag()
    invoice = f"OV{t}-1"
    await book(pipe, f"Hooli {t}", [(invoice, 10000, 5)])
    event = new_deposit(invoice, "150.00")
    await pipe.send(event)
    item = await review_of(pipe, event)
    assert item.why == "overpayment" and [a.invoice_id for a in item.named] == [invoice]
    assert await recorded_on(pipe, invoice) == []
    async with reviews_of(pipe) as reviews:
        with pytest.raises(Refused, match="names invoice"):
            await reviews.assign(
                item.id, allocations=[(invoice, "100.00"), ("INV-1001", "50.00")], actor="ana"
            )
        await reviews.accept(item.id, suggestion=0, actor="ana")
    got = await pipe.confirmations(2)
    recorded = next(c for c in got if c["type"] == "payment.recorded")
    assert recorded["data"]["excess"] == 5000 and recorded["data"]["amount"] == 15000
    await redeliver(pipe, event)  # the resend: recorded already
    await pipe.confirmations(2)
    assert len(await recorded_on(pipe, invoice)) == 1


async def test_chargebee_unreadable_while_matching_is_retried_not_guessed(pipe: Pipeline) -> None:
    """Chargebee's customer list answers 503 once: the payment is retried (nothing decided without
    the customers), then matched as usual."""
    t = tag()
    await book(pipe, f"Vandelay {t} Industries", [(f"VI{t}-1", 4200, 3)])
    await pipe.admin("POST", "/sandbox/faults", {"status": 503, "count": 1, "operation": "customers"})
    event = payment("42.00", name=f"VANDELAY {t} INDUSTRIES")
    await pipe.send(event)
    item = await review_of(pipe, event, within=20)
    assert item.why == "low_score" and item.suggestions[0].allocations[0].invoice_id == f"VI{t}-1"
    listed = await pipe.admin("GET", "/sandbox/requests?operation=list_customers")
    assert [r["status"] for r in listed["requests"]] == [503, 200]
