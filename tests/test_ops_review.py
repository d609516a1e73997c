"""The review queue in the ops app (SPEC §10): its JSON API, its pages and the dashboard's count.

Over real HTTP (uvicorn), the real RabbitMQ, both ledgers, and the Chargebee sandbox served on
its own port, read through a real `consumers.directory.Directory` (as `payrelay ops` does).
Review items are put in the ledger as the consumer puts them (`ledger.reviews.add`), their
suggestions naming invoices created through the sandbox's admin API.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import asyncpg
import orjson
import pytest

from consumers.directory import open_directory
from service.broker import declare_once
from service.chargebee_sandbox import SandboxConfig
from service.chargebee_sandbox import create_app as create_sandbox
from service.ledger import Ledger
from service.metrics import Metrics, create_metrics
from service.ops.app import create_app
from service.review.model import Allocation, NewReview, ReviewItem, Suggestion
from tests.conftest import AMQP_URL, POSTGRES_URL, get_all, serve
from tests.test_ops_app import CSRF_META, OPERATOR_TOKENS, Harness, ops_settings

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

KEY = "test_review_sandbox_key"
CHARGEBEE_AUTH = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()}
CUSTOMER = "globex"
SUGGESTIONS = (
    Suggestion((Allocation("GX-1003", 10000),), 0.82, ("payer_name 0.91", "exact_amount"), "exact_amount"),
    Suggestion(
        (Allocation("GX-1004", 6000), Allocation("GX-1005", 4000)),
        0.78,
        ("payer_name 0.91", "sum_of_2"),
        "sum_of_2",
    ),
)


def deposit(event_id: str, amount: str, currency: str) -> dict[str, Any]:
    """A bank deposit that names no invoice, as the bank sent it (the payer's last four digits only)."""
    data = {
        "amount": amount,
        "currency": currency,
        "booked_at": "2024-05-01T10:00:00Z",
        "bank_reference": f"REF-{event_id}",
        "remittance_information": "May services, thank you",
        "payer": {"name": "Globex Corporation", "account_last4": "4821"},
    }
    return {"specversion": "1.0", "id": event_id, "source": "urn:acme:core-banking", "type": "bank.deposit",
            "data": data}  # fmt: skip


@dataclass
class Desk:
    """The ops app with the review queue, its ledger, and the sandbox standing in for Chargebee."""

    ops: Harness
    ledger: Ledger
    sandbox: str
    metrics: Metrics

    async def chargebee(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        async with self.ops.http.request(method, self.sandbox + path, **kwargs) as response:
            return response.status, await response.json(content_type=None)

    async def invoice(self, invoice_id: str, total: int, currency: str = "USD") -> None:
        body = {"id": invoice_id, "total": total, "currency_code": currency, "customer_id": CUSTOMER}
        status, created = await self.chargebee("POST", "/sandbox/invoices", json=body)
        assert status == 201, created

    async def book(self) -> None:
        """Globex and its open invoices: GX-1003 100.00, GX-1004 60.00 and GX-1005 40.00 USD."""
        body = {"id": CUSTOMER, "company": "Globex Corporation"}
        status, created = await self.chargebee("POST", "/sandbox/customers", json=body)
        assert status == 201, created
        for invoice_id, total in (("GX-1003", 10000), ("GX-1004", 6000), ("GX-1005", 4000)):
            await self.invoice(invoice_id, total)

    async def pay(self, invoice_id: str, amount: int) -> None:
        """Someone records a payment on the invoice in Chargebee itself (API v1)."""
        form = {"amount": str(amount), "payment_method": "bank_transfer", "paid_at": str(int(time.time()))}
        status, paid = await self.chargebee(
            "POST", f"/api/v1/invoices/{invoice_id}/record_payment", data=form, headers=CHARGEBEE_AUTH
        )
        assert status == 200, paid

    async def item(
        self,
        *,
        amount: int = 10000,
        currency: str = "USD",
        suggestions: tuple[Suggestion, ...] = SUGGESTIONS,
        why: str = "rivals",
        customer_id: str | None = CUSTOMER,
        created_at: datetime | None = None,
    ) -> ReviewItem:
        """A payment in review, as the consumer leaves it."""
        event_id = f"evt-{uuid.uuid4().hex[:12]}"
        major = f"{amount // 100}.{amount % 100:02d}"
        new = NewReview(
            key=("acme-bank", "urn:acme:core-banking", event_id),
            event=deposit(event_id, major, currency),
            headers={"x-payrelay-source": "acme-bank", "x-payrelay-generation": 0},
            amount=amount,
            currency=currency,
            why=why,
            suggestions=suggestions,
            customer_id=customer_id,
            payer="Globex Corporation",
            teach=(("name", "globex corporation"),),
        )
        return await self.ledger.reviews.add(new, now=created_at)

    async def decide(
        self, item_id: str, decision: str, body: Any = None, who: str = "Alice"
    ) -> tuple[int, Any]:
        path = f"/api/review/{item_id}/{decision}"
        return await self.ops.api("POST", path, body, token=OPERATOR_TOKENS[who])

    async def get(self, item_id: str) -> dict[str, Any]:
        status, body = await self.ops.api("GET", f"/api/review/{item_id}")
        assert status == 200, body
        return dict(body)

    async def work(self, expect: int, within: float = 3.0) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """What reached the work queue (read off it)."""
        return await get_all(self.ops.amqp, self.ops.settings.broker.topology().work_queue, expect, within)


@pytest.fixture
async def desk(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path, ledger_url: str
) -> AsyncIterator[Desk]:
    # PostgreSQL: a schema of this test's own, so the queue shows only its items (dropped after).
    schema = None if ledger_url.startswith("sqlite") else f"t_{uuid.uuid4().hex[:12]}"
    async with serve(create_sandbox(SandboxConfig(api_key=KEY, seed=False))) as sandbox:
        settings = ops_settings(
            prefix, tmp_path, chargebee_base_url=sandbox, chargebee_api_key=KEY, chargebee_rate_limit=0
        )
        await declare_once(AMQP_URL, settings.broker.topology())
        ledger = await Ledger.open(ledger_url, schema=schema)
        metrics = create_metrics()
        try:
            async with (
                open_directory(settings, metrics) as invoices,
                serve(create_app(settings, ledger=ledger, metrics=metrics, invoices=invoices)) as url,
                aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as http,
            ):
                desk = Desk(Harness(url, http, settings, amqp, prefix), ledger, sandbox, metrics)
                await desk.book()
                yield desk
        finally:
            await ledger.close()
            if schema is not None:
                conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
                try:
                    await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
                finally:
                    await conn.close()


# -- reading ----------------------------------------------------------------------------------


async def test_the_list_and_an_item_carry_every_field_spec_10_names(desk: Desk) -> None:
    """`GET /api/review` lists open items oldest first; `GET /api/review/{id}` adds the customer's
    open invoices as Chargebee has them, amounts as decimal strings in major units."""
    older = await desk.item(created_at=datetime.now(UTC) - timedelta(minutes=5))
    newer = await desk.item(amount=4000)
    status, listed = await desk.ops.api("GET", "/api/review")
    assert status == 200, listed
    assert [i["id"] for i in listed["items"]] == [older.id, newer.id]
    assert listed["count"] == 2 and listed["state"] == "open"
    first = listed["items"][0]
    assert first["event"] == older.event
    assert (first["origin"], first["amount"], first["currency"]) == ("acme-bank", "100.00", "USD")
    assert first["state"] == "open"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", first["created_at"])
    assert first["suggestions"][1] == {
        "allocations": [
            {"invoice_id": "GX-1004", "amount": "60.00"},
            {"invoice_id": "GX-1005", "amount": "40.00"},
        ],
        "score": 0.78,
        "reasons": ["payer_name 0.91", "sum_of_2"],
        "method": "sum_of_2",
    }

    item = await desk.get(older.id)
    assert {k: v for k, v in item.items() if k != "open_invoices"} == first
    assert [(i["id"], i["amount_due"], i["currency"]) for i in item["open_invoices"]] == [
        ("GX-1003", "100.00", "USD"),
        ("GX-1004", "60.00", "USD"),
        ("GX-1005", "40.00", "USD"),
    ]

    status, limited = await desk.ops.api("GET", "/api/review?state=all&limit=1")
    assert (status, [i["id"] for i in limited["items"]]) == (200, [older.id])
    for query in ("?state=done", "?limit=0", "?limit=x"):
        status, refused = await desk.ops.api("GET", f"/api/review{query}")
        assert status == 422, query
        assert refused["status"] == 422
    status, missing = await desk.ops.api("GET", "/api/review/rv-999999")
    assert (status, missing["status"]) == (404, 404)


# -- deciding ---------------------------------------------------------------------------------


async def test_accepting_sends_the_event_to_the_work_queue_once_and_audits_the_operator(desk: Desk) -> None:
    """Accepted: 200 with the item; its event back on the work queue (marked with the item); the
    audit names the signed-in operator. A second accept is a 409 showing who won, and sends nothing."""
    item = await desk.item()
    status, accepted = await desk.decide(item.id, "accept", {"suggestion": 0}, who="Alice")
    assert status == 200, accepted
    assert (accepted["state"], accepted["decided_by"]) == ("accepted", "ops:Alice")
    assert accepted["decision"]["allocations"] == [{"invoice_id": "GX-1003", "amount": "100.00"}]
    (message,) = await desk.work(1)
    assert message.headers["x-payrelay-review"] == item.id
    assert message.headers["x-payrelay-source"] == "acme-bank"
    assert message.message_id == item.key[2]
    assert orjson.loads(message.body) == item.event

    status, audit = await desk.ops.api("GET", "/api/audit")
    assert status == 200
    (row,) = [r for r in audit["audit"] if r["selector"] == item.id]
    assert (row["actor"], row["action"]) == ("ops:Alice", "review-accepted")

    status, late = await desk.decide(item.id, "accept", {"suggestion": 1}, who="Bob")
    assert status == 409, late
    assert "accepted already by ops:Alice" in late["detail"]
    assert (late["item"]["state"], late["item"]["decided_by"]) == ("accepted", "ops:Alice")
    assert late["item"]["decision"]["allocations"] == [{"invoice_id": "GX-1003", "amount": "100.00"}]
    assert await desk.work(0, within=0.5) == []


async def test_two_operators_accepting_at_once_exactly_one_wins(desk: Desk) -> None:
    item = await desk.item()
    answers = await asyncio.gather(
        desk.decide(item.id, "accept", {"suggestion": 0}, who="Alice"),
        desk.decide(item.id, "accept", {"suggestion": 1}, who="Bob"),
    )
    assert sorted(status for status, _ in answers) == [200, 409], answers
    (won,) = [body for status, body in answers if status == 200]
    (lost,) = [body for status, body in answers if status == 409]
    assert lost["item"]["decided_by"] == won["decided_by"]
    assert len(await desk.work(1)) == 1


async def test_an_assignment_must_add_up_to_the_payment(desk: Desk) -> None:
    """Amounts that do not sum to the payment are a 422 saying so, and the item stays open; one
    amount left out takes the rest."""
    item = await desk.item()
    wrong = {
        "allocations": [
            {"invoice_id": "GX-1004", "amount": "30.00"},
            {"invoice_id": "GX-1005", "amount": "30.00"},
        ]
    }
    status, refused = await desk.decide(item.id, "assign", wrong)
    assert status == 422, refused
    assert "the amounts sum to 60.00 USD but the payment is 100.00 USD" in refused["detail"]
    assert (await desk.get(item.id))["state"] == "open"
    assert await desk.work(0, within=0.5) == []

    rest = {"allocations": [{"invoice_id": "GX-1004", "amount": "60.00"}, {"invoice_id": "GX-1005"}]}
    status, assigned = await desk.decide(item.id, "assign", rest, who="Carol")
    assert status == 200, assigned
    assert (assigned["state"], assigned["decided_by"]) == ("assigned", "ops:Carol")
    assert assigned["decision"]["allocations"] == [
        {"invoice_id": "GX-1004", "amount": "60.00"},
        {"invoice_id": "GX-1005", "amount": "40.00"},
    ]
    assert len(await desk.work(1)) == 1


async def test_an_invoice_in_another_currency_is_refused(desk: Desk) -> None:
    await desk.invoice("GX-2001", 10000, currency="EUR")
    item = await desk.item()
    body = {"allocations": [{"invoice_id": "GX-2001", "amount": "100.00"}]}
    status, refused = await desk.decide(item.id, "assign", body)
    assert status == 422, refused
    assert "invoice GX-2001 is in EUR, the payment in USD" in refused["detail"]
    after = await desk.get(item.id)
    assert after["state"] == "open"
    assert "GX-2001 is in EUR" in after["problem"]
    assert await desk.work(0, within=0.5) == []


async def test_an_invoice_paid_meanwhile_refuses_the_accept_and_the_item_says_why(desk: Desk) -> None:
    """Chargebee is read afresh at the decision: an invoice paid since the suggestion was made is
    a 422, the item stays open, and both the API and its page show the problem."""
    item = await desk.item()
    await desk.pay("GX-1003", 10000)
    status, refused = await desk.decide(item.id, "accept", {"suggestion": 0})
    assert status == 422, refused
    assert "invoice GX-1003 is paid now" in refused["detail"]
    after = await desk.get(item.id)
    assert after["state"] == "open"
    assert "invoice GX-1003 is paid now: it cannot take a payment" in after["problem"]
    assert "GX-1003" not in [i["id"] for i in after["open_invoices"]]
    status, _, page = await desk.ops.request("GET", f"/review/{item.id}")
    assert status == 200
    assert re.search(r'<p class="alert" id="problem">.*GX-1003 is paid now', page)
    assert await desk.work(0, within=0.5) == []


async def test_rejecting_sends_the_event_to_the_dead_letters_as_unmatched_invoice(desk: Desk) -> None:
    item = await desk.item()
    status, rejected = await desk.decide(item.id, "reject", {"note": "not ours"}, who="Dana")
    assert status == 200, rejected
    assert (rejected["state"], rejected["decided_by"]) == ("rejected", "ops:Dana")
    status, letters = await desk.ops.api("GET", "/api/dead-letters?reason=unmatched_invoice")
    assert status == 200, letters
    (letter,) = letters["dead_letters"]
    assert letter["event_id"] == item.key[2]
    assert letter["error"] == f"rejected in review {item.id} by ops:Dana: not ours"
    assert await desk.work(0, within=0.5) == []

    other = await desk.item()
    status, bare = await desk.decide(other.id, "reject")  # no body at all: no note
    assert (status, bare["state"]) == (200, "rejected")


async def test_with_chargebee_down_nothing_is_decided_and_the_answer_says_try_again(desk: Desk) -> None:
    """Chargebee answers 503 to the invoice reads: a 503 with Retry-After, the item stays open
    and nothing is sent; the page answers the same refusal in one line."""
    item = await desk.item()
    fault = {"status": 503, "operation": "reads", "count": 100}
    status, armed = await desk.chargebee("POST", "/sandbox/faults", json=fault)
    assert status == 201, armed
    status, refused = await desk.decide(item.id, "accept", {"suggestion": 0})
    assert status == 503, refused
    assert "nothing was decided" in refused["detail"]
    cookie, csrf = await desk.ops.sign_in("Alice")
    status, _, page = await desk.ops.request(
        "POST", f"/review/{item.id}/accept", token=None,
        headers={"Cookie": cookie, "Origin": desk.ops.url}, data={"csrf": csrf, "suggestion": "0"},
    )  # fmt: skip
    assert status == 503
    assert re.search(r'id="refusal">Chargebee cannot be read now .*nothing was decided<', page)
    await desk.chargebee("DELETE", "/sandbox/faults")
    assert (await desk.get(item.id))["state"] == "open"
    assert await desk.work(0, within=0.5) == []


async def test_a_body_with_unknown_fields_or_wrong_types_is_refused(desk: Desk) -> None:
    item = await desk.item()
    for decision, body in [
        ("accept", {"suggestion": 0, "actor": "mallory"}),  # the audit's who is never the caller's
        ("accept", {"suggestion": "0"}),
        ("accept", {}),
        ("assign", {"allocations": [{"invoice_id": "GX-1003", "amount": 100.0}]}),  # money as text
        ("assign", {"allocations": [{"invoice_id": "GX-1003", "amount": "100.00", "note": "x"}]}),
        ("assign", {"allocations": []}),
        ("reject", {"note": "x", "reason": "invoice_not_found"}),
        ("accept", [0]),
    ]:
        status, refused = await desk.decide(item.id, decision, body)
        assert status == 422, (decision, body, refused)
    status, _, text = await desk.ops.request(
        "POST", f"/api/review/{item.id}/accept", data="suggestion=0",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert status == 415, text
    status, missing = await desk.decide("rv-999999", "accept", {"suggestion": 0})
    assert status == 404, missing
    status, none = await desk.decide(item.id, "accept", {"suggestion": 5})
    assert status == 422 and "has no suggestion 5" in none["detail"]
    assert (await desk.get(item.id))["state"] == "open"
    assert await desk.work(0, within=0.5) == []


async def test_review_routes_need_credentials_and_a_session_needs_the_csrf_token(desk: Desk) -> None:
    item = await desk.item()
    for method, path in [
        ("GET", "/api/review"),
        ("GET", f"/api/review/{item.id}"),
        ("POST", f"/api/review/{item.id}/accept"),
        ("POST", f"/api/review/{item.id}/assign"),
        ("POST", f"/api/review/{item.id}/reject"),
    ]:
        status, _, _ = await desk.ops.request(method, path, token=None, json={"suggestion": 0})
        assert status == 401, path
        status, headers, _ = await desk.ops.request(method, path.removeprefix("/api"), token=None)
        assert (status, headers["Location"].startswith("/login")) == (303, True), path
    cookie, csrf = await desk.ops.sign_in("Erin")
    session = {"Cookie": cookie, "Origin": desk.ops.url}
    path = f"/api/review/{item.id}/accept"
    status, _, body = await desk.ops.request(
        "POST", path, token=None, headers=session, json={"suggestion": 0}
    )
    assert status == 403, body
    status, _, body = await desk.ops.request(
        "POST", f"/review/{item.id}/accept", token=None, headers=session, data={"suggestion": "0"}
    )
    assert status == 403, body
    assert (await desk.get(item.id))["state"] == "open"
    status, accepted = await desk.ops.api(
        "POST", path, {"suggestion": 0}, token=None, headers={**session, "X-CSRF-Token": csrf}
    )
    assert (status, accepted["decided_by"]) == (200, "ops:Erin")


# -- the pages --------------------------------------------------------------------------------


async def test_the_pages_show_the_payment_and_decide_through_forms(desk: Desk) -> None:
    """The list and the item's page show what a person needs; a refused assignment answers on the
    item's page with why (what was typed kept); an accept redirects to the item, which says what
    was done; a late second accept shows the winner's decision, never a traceback."""
    item = await desk.item()
    cookie, csrf = await desk.ops.sign_in("Frank")
    session = {"Cookie": cookie}
    status, _, listing = await desk.ops.request("GET", "/review", token=None, headers=session)
    assert status == 200
    row = re.search(rf'<tr data-review="{item.id}">(.*?)</tr>', listing, re.S)
    assert row is not None
    for shown in ("acme-bank", "100.00 USD", "Globex Corporation", "two suggestions are too close", "0.82"):
        assert shown in row.group(1), shown
    assert '<a href="/review" aria-current="page">Review</a>' in listing

    status, _, page = await desk.ops.request("GET", f"/review/{item.id}", token=None, headers=session)
    assert status == 200
    for shown in ("May services, thank you", f"REF-{item.key[2]}", "GX-1004", "Accept", "Reject", "<details"):
        assert shown in page, shown
    assert re.search(r'<tr data-invoice="GX-1005">.*?40\.00 USD', page, re.S)

    form = {"csrf": csrf, "amount:GX-1004": "60.00", "amount:GX-1005": "30.00"}
    posted = {"Cookie": cookie, "Origin": desk.ops.url}
    status, _, refused = await desk.ops.request(
        "POST", f"/review/{item.id}/assign", token=None, headers=posted, data=form
    )
    assert status == 422
    assert re.search(r'id="refusal">[^<]*the amounts sum to 90\.00 USD', refused)
    assert 'value="30.00"' in refused  # what was typed, to correct rather than type again

    status, headers, _ = await desk.ops.request(
        "POST",
        f"/review/{item.id}/accept",
        token=None,
        headers=posted,
        data={"csrf": csrf, "suggestion": "1"},
    )
    assert status == 303
    assert headers["Location"] == f"/review/{item.id}?done=accepted"
    status, _, done = await desk.ops.request("GET", headers["Location"], token=None, headers=session)
    assert re.search(
        r'id="notice">Accepted: recorded on GX-1004 \(60\.00 USD\), GX-1005 \(40\.00 USD\)', done
    )
    assert 'action="/review/' not in done  # decided: no more decisions offered

    status, _, late = await desk.ops.request(
        "POST", f"/review/{item.id}/reject", token=None, headers=posted, data={"csrf": csrf}
    )
    assert status == 409
    assert re.search(rf'id="refusal">review {item.id} is accepted already by ops:Frank<', late)
    assert "Accepted by ops:Frank" in late
    assert "Traceback" not in late
    assert len(await desk.work(1)) == 1


async def test_a_payer_nobody_knows_is_assigned_by_naming_the_invoice(desk: Desk) -> None:
    """No customer, no suggestion: the page offers the invoice to type in, whose amount left out
    takes the whole payment; the payer map learns the customer the invoice belongs to."""
    item = await desk.item(suggestions=(), why="no_payer", customer_id=None)
    cookie, csrf = await desk.ops.sign_in("Bob")
    status, _, page = await desk.ops.request(
        "GET", f"/review/{item.id}", token=None, headers={"Cookie": cookie}
    )
    assert status == 200
    assert "no Chargebee customer could be found for the payer" in page
    assert "payrelay does not know the customer: name the invoice below." in page
    status, headers, _ = await desk.ops.request(
        "POST", f"/review/{item.id}/assign", token=None,
        headers={"Cookie": cookie, "Origin": desk.ops.url}, data={"csrf": csrf, "other_invoice": " GX-1003 "},
    )  # fmt: skip
    assert (status, headers["Location"]) == (303, f"/review/{item.id}?done=assigned")
    assigned = await desk.get(item.id)
    assert (assigned["state"], assigned["decided_by"]) == ("assigned", "ops:Bob")
    assert assigned["decision"]["allocations"] == [{"invoice_id": "GX-1003", "amount": "100.00"}]
    assert assigned["decision"]["customer_id"] == CUSTOMER
    learned = await desk.ledger.payers.lookup([("name", "globex corporation")])
    assert learned is not None and learned.customer_id == CUSTOMER
    assert len(await desk.work(1)) == 1


async def test_the_dashboard_counts_what_waits_and_for_how_long(desk: Desk) -> None:
    """The overview, the dashboard and the metrics count open items and the oldest one's age; a
    decided item no longer counts."""
    await desk.item(created_at=datetime.now(UTC) - timedelta(hours=2, minutes=5))
    await desk.item(created_at=datetime.now(UTC) - timedelta(minutes=10))
    decided = await desk.item(created_at=datetime.now(UTC) - timedelta(days=3))
    status, _ = await desk.decide(decided.id, "reject")
    assert status == 200
    status, overview = await desk.ops.api("GET", "/api/overview")
    assert status == 200
    review = overview["review"]
    assert review["open"] == 2
    assert 7500 <= review["oldest_age_seconds"] < 7600
    status, _, metrics = await desk.ops.request("GET", "/metrics", token=None)
    assert "payrelay_review_open 2.0" in metrics
    age = re.search(r"^payrelay_review_oldest_age_seconds (\S+)$", metrics, re.M)
    assert age is not None and 7500 <= float(age.group(1)) < 7600

    status, _, page = await desk.ops.request("GET", "/")
    assert status == 200
    card = re.search(r'<div class="card" id="card-review".*?</div>', page, re.S)
    assert card is not None
    assert '<p class="big" data-summary="review_open">2</p>' in card.group(0)
    assert '<span data-summary="review_oldest">2h 5m</span>' in card.group(0)
    assert '<a href="/review">' in card.group(0)


async def test_with_nothing_waiting_the_gauges_are_zero(desk: Desk) -> None:
    status, overview = await desk.ops.api("GET", "/api/overview")
    assert status == 200
    assert overview["review"] == {"open": 0, "oldest_created_at": None, "oldest_age_seconds": None}
    status, _, metrics = await desk.ops.request("GET", "/metrics", token=None)
    assert "payrelay_review_open 0.0" in metrics
    assert "payrelay_review_oldest_age_seconds 0.0" in metrics
    status, _, page = await desk.ops.request("GET", "/")
    assert '<p class="big" data-summary="review_open">0</p>' in page
    status, _, listing = await desk.ops.request("GET", "/review")
    assert "Nothing waits for review." in listing
    assert CSRF_META.search(listing) is not None
