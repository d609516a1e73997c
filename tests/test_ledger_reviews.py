"""Review items, decisions and the payer map in the ledger (SPEC §10), on SQLite and PostgreSQL.

Two ledgers opened on one database stand for two processes (two ops replicas, a CLI and the ops
app): a decision race between them has exactly one winner.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from service.broker import MemoryPublisher
from service.ledger import Ledger
from service.ledger.reviews import Decision
from service.review.model import Allocation, Conflict, NewReview, Refused, Suggestion
from service.review.service import Reviews
from service.topology import build
from tests.test_ledger import Backend, backend, ledger  # noqa: F401 - the fixtures

KEY = ("acme-bank", "urn:acme:core", "evt-review-1")
SUGGESTION = Suggestion((Allocation("INV-1", 5000),), 0.85, ("customer_name", "exact_amount"), "exact_amount")


def new(key: tuple[str, str, str] = KEY, **changes: object) -> NewReview:
    values: dict[str, object] = {
        "key": key,
        "event": {"id": key[2], "type": "bank.deposit", "data": {"amount": "50.00"}},
        "headers": {"x-payrelay-source": key[0]},
        "amount": 5000,
        "currency": "USD",
        "why": "low_score",
        "suggestions": (SUGGESTION,),
        "customer_id": "cust_1",
        "payer": "Globex Corp.",
        "teach": (("fingerprint", "fp-1"), ("name", "globex")),
    }
    return NewReview(**{**values, **changes})  # type: ignore[arg-type]


def accepted(actor: str = "ana") -> Decision:
    return Decision("accepted", actor, SUGGESTION.allocations, SUGGESTION.match(), False, "cust_1")


@pytest.fixture
async def second(backend: Backend) -> AsyncIterator[Ledger]:  # noqa: F811
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()


async def test_an_item_is_kept_once_per_event_and_read_back_whole(ledger: Ledger) -> None:  # noqa: F811
    item = await ledger.reviews.add(new())
    again = await ledger.reviews.add(new(why="rivals", suggestions=()))  # a redelivery: the first stays
    assert again.id == item.id and again.why == "low_score" and again.suggestions == (SUGGESTION,)
    assert (item.state, item.amount, item.currency, item.payer, item.key) == (
        "open",
        5000,
        "USD",
        "Globex Corp.",
        KEY,
    )
    assert item.as_json()["amount"] == "50.00"
    assert item.as_json()["suggestions"][0]["allocations"] == [{"invoice_id": "INV-1", "amount": "50.00"}]
    assert await ledger.reviews.get(item.id) == item
    assert await ledger.reviews.get("rv-999999") is None and await ledger.reviews.get("bogus") is None
    count, oldest = await ledger.reviews.summary()
    assert count == 1 and oldest is not None and abs(oldest - item.created_at) < timedelta(seconds=1)


async def test_two_processes_deciding_one_item_have_one_winner(ledger: Ledger, second: Ledger) -> None:  # noqa: F811
    item = await ledger.reviews.add(new())
    outcomes = await asyncio.gather(
        ledger.reviews.decide(item.id, accepted("ana")),
        second.reviews.decide(item.id, accepted("ben")),
        return_exceptions=True,
    )
    lost = [o for o in outcomes if isinstance(o, Conflict)]
    won = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert lost[0].item.state == "accepted" and lost[0].item.decided_by == won[0].decided_by
    assert await ledger.stored_plan(KEY) == [("INV-1", 5000)]
    match = await ledger.stored_match(KEY)
    assert match is not None and match[0]["method"] == "exact_amount"
    [audit] = [a for a in await ledger.audit() if a.action == "review-accepted"]
    assert audit.actor == won[0].decided_by and audit.selector == item.id
    assert (await ledger.reviews.summary())[0] == 0


async def test_a_decision_that_differs_from_a_stored_plan_is_refused_and_changes_nothing(
    ledger: Ledger,  # noqa: F811
) -> None:
    await ledger.plan(KEY, [("INV-7", 5000)])  # from the event's references, earlier
    item = await ledger.reviews.add(new())
    with pytest.raises(Refused, match="already planned"):
        await ledger.reviews.decide(item.id, accepted())
    still = await ledger.reviews.get(item.id)
    assert still is not None and still.state == "open"
    assert await ledger.stored_plan(KEY) == [("INV-7", 5000)]
    assert await ledger.payers.lookup([("fingerprint", "fp-1")]) is None  # nothing learned either


async def test_a_rejection_stores_no_plan_and_waits_to_be_sent(ledger: Ledger) -> None:  # noqa: F811
    item = await ledger.reviews.add(new())
    rejected = await ledger.reviews.decide(item.id, Decision("rejected", "ana", note="not ours"))
    assert rejected.state == "rejected" and await ledger.stored_plan(KEY) is None
    assert [i.id for i in await ledger.reviews.unqueued()] == [item.id]
    await ledger.reviews.mark_queued(item.id)
    assert await ledger.reviews.unqueued() == []


async def test_the_payer_map_learns_and_a_conflict_stops_it_until_a_person_decides(
    ledger: Ledger,  # noqa: F811
) -> None:
    payers = ledger.payers
    await payers.learn([("fingerprint", "fp-9"), ("name", "globex")], "cust_1", "payment")
    hit = await payers.lookup([("fingerprint", "fp-9"), ("name", "globex")])
    assert hit is not None and (hit.kind, hit.customer_id) == ("fingerprint", "cust_1")
    await payers.learn([("fingerprint", "fp-9")], "cust_1", "payment")  # the same again: still sure
    assert (await payers.lookup([("fingerprint", "fp-9")])) is not None
    await payers.learn([("fingerprint", "fp-9")], "cust_2", "payment")  # one account, two customers
    assert await payers.lookup([("fingerprint", "fp-9")]) is None
    by_name = await payers.lookup([("fingerprint", "fp-9"), ("name", "globex")])
    assert by_name is not None and by_name.kind == "name"  # the name is still sure
    await payers.learn([("fingerprint", "fp-9")], "cust_2", "review")  # a person settles it
    settled = await payers.lookup([("fingerprint", "fp-9")])
    assert settled is not None and settled.customer_id == "cust_2"


async def test_decided_items_go_with_retention_and_open_ones_stay(ledger: Ledger) -> None:  # noqa: F811
    waiting = await ledger.reviews.add(new())
    done = await ledger.reviews.add(new(("acme-bank", "urn:acme:core", "evt-review-2")))
    await ledger.reviews.decide(done.id, Decision("rejected", "ana"))
    await ledger.reviews.mark_queued(done.id)
    await ledger.cleanup(retention_days=1, now=datetime.now(UTC) + timedelta(days=2))
    assert await ledger.reviews.get(waiting.id) is not None
    assert await ledger.reviews.get(done.id) is None


async def test_an_assignment_names_only_well_formed_invoices_each_once(ledger: Ledger) -> None:  # noqa: F811
    """Checked before Chargebee is asked anything: an id goes into Chargebee's URL path."""
    reviews = Reviews(ledger, MemoryPublisher(), build("p", [5], 20), None, api_version="v1")
    item = await ledger.reviews.add(new())
    for allocations, why in (
        ([("../customers/cust_1", None)], "is not an invoice id"),
        ([("INV-1", "10.00"), ("INV-1", "40.00")], "named twice"),
        ([("INV-1", None), ("INV-2", None)], "one invoice at most"),
        ([("INV-1", "60.00"), ("INV-2", None)], "nothing is left"),
        ([("INV-1", "0.00"), ("INV-2", "50.00")], "greater than zero"),
        ([("INV-1", "12.345")], "INV-1"),
        ([], "at least one invoice"),
    ):
        with pytest.raises(Refused, match=why):
            await reviews.assign(item.id, allocations=allocations, actor="ana")
    still = await ledger.reviews.get(item.id)
    assert still is not None and still.state == "open"
