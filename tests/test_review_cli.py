"""`payrelay review` as people run it (a subprocess): the real RabbitMQ, both ledgers, the sandbox."""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import aiohttp
import orjson
import pytest

from service import messages
from service.broker import MemoryPublisher, declare_once
from service.chargebee_sandbox import SandboxConfig, create_app
from service.ledger import Ledger
from service.review.model import Allocation, NewReview, ReviewItem, Suggestion
from service.review.service import REVIEW_HEADER, Reviews
from service.settings import Settings
from tests.conftest import AMQP_URL, free_port, get_all, make_settings, serve
from tests.factories import new_deposit

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

PAYRELAY = str(Path(sys.executable).parent / "payrelay")
ME = f"{getpass.getuser()}@{socket.gethostname()}"
API_KEY = "test_review_cli_key"
DAY = 86400


@dataclass
class Book:
    """The sandbox's customer and invoices for one test: A 300.00 USD, B 250.00 USD, C 300.00 EUR."""

    url: str
    customer: str
    a: str
    b: str
    c: str


@dataclass
class World:
    settings: Settings
    ledger: Ledger
    book: Book
    env: dict[str, str]
    cwd: Path
    amqp: aio_pika.abc.AbstractConnection


@pytest.fixture
async def book() -> AsyncIterator[Book]:
    async with serve(create_app(SandboxConfig(api_key=API_KEY, seed=False))) as url:
        tag = uuid.uuid4().hex[:8]
        made = Book(url, f"globex-{tag}", f"GX-{tag}-A", f"GX-{tag}-B", f"GX-{tag}-C")
        now = int(time.time())
        async with aiohttp.ClientSession() as http:
            customer = {"id": made.customer, "company": "Globex Corporation"}
            async with http.post(f"{url}/sandbox/customers", json=customer) as response:
                assert response.status == 201, await response.text()
            for invoice, total, currency, age in ((made.a, 30000, "USD", 40), (made.b, 25000, "USD", 20),
                                                  (made.c, 30000, "EUR", 10)):  # fmt: skip
                spec = {"id": invoice, "total": total, "currency_code": currency,
                        "customer_id": made.customer, "date": now - age * DAY}  # fmt: skip
                async with http.post(f"{url}/sandbox/invoices", json=spec) as response:
                    assert response.status == 201, await response.text()
        yield made


def cli_env(prefix: str, ledger_url: str, chargebee_url: str, amqp_url: str = AMQP_URL) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PAYRELAY_")}
    return env | {
        "PAYRELAY_AMQP_URL": amqp_url,
        "PAYRELAY_AMQP_PREFIX": prefix,
        "PAYRELAY_LEDGER_URL": ledger_url,
        "PAYRELAY_CHARGEBEE_BASE_URL": chargebee_url,
        "PAYRELAY_CHARGEBEE_API_KEY": API_KEY,
        "PAYRELAY_CHARGEBEE_RATE_LIMIT": "0",
    }


@pytest.fixture
async def world(
    prefix: str, ledger_url: str, book: Book, tmp_path: Path, amqp: aio_pika.abc.AbstractConnection
) -> AsyncIterator[World]:
    settings = make_settings(
        prefix, ledger_url=ledger_url, chargebee_base_url=book.url, chargebee_api_key=API_KEY
    )
    await declare_once(AMQP_URL, settings.broker.topology())
    ledger = await settings.ledger.open()
    try:
        yield World(settings, ledger, book, cli_env(prefix, ledger_url, book.url), tmp_path, amqp)
    finally:
        await ledger.close()


async def review(world: World, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `payrelay review ARGS` in the test's directory (no payrelay-dev.toml is picked up)."""
    process = await asyncio.create_subprocess_exec(
        PAYRELAY,
        "review",
        *args,
        env=env or world.env,
        cwd=world.cwd,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 45)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def shown(world: World, item: ReviewItem) -> dict[str, Any]:
    code, out, err = await review(world, "show", item.id, "--json")
    assert code == 0, err
    body: dict[str, Any] = orjson.loads(out)
    return body


def one_line(err: str) -> str:
    """stderr is one line and no traceback."""
    assert "Traceback" not in err and err.strip().count("\n") == 0, err
    return err.strip()


async def add_item(
    world: World, amount: int = 30000, *, now: datetime | None = None, **given: Any
) -> ReviewItem:
    """An open item for a 300.00 USD deposit from Globex whose best guess is invoice A."""
    event = new_deposit(None, f"{amount // 100}.{amount % 100:02d}", remittance="March services, thanks")
    suggestion = Suggestion(
        allocations=(Allocation(world.book.a, amount),),
        score=0.72,
        reasons=("payer_name 0.81", "exact_amount"),
        method="exact_amount",
    )
    values: dict[str, Any] = {
        "key": ("acme-bank", event["source"], event["id"]),
        "event": event,
        "headers": {messages.SOURCE: "acme-bank", messages.ATTEMPTS: 0},
        "amount": amount,
        "currency": "USD",
        "why": "low_score",
        "suggestions": (suggestion,),
        "customer_id": world.book.customer,
        "payer": "Globex Corporation",
        "teach": (("name", "globex corporation"),),
    }
    return await world.ledger.reviews.add(NewReview(**(values | given)), now=now)


async def drain(world: World, queue: str, expect: int) -> list[aio_pika.abc.AbstractIncomingMessage]:
    return await get_all(world.amqp, queue, expect, within=3.0 if expect else 0.5)


async def test_list_shows_open_items_oldest_first_as_a_table_and_as_json(world: World) -> None:
    """The table has the id, age, origin, amount, payer, why and best score; --json the SPEC §10 fields."""
    # Older than anything a test elsewhere leaves open in the shared PostgreSQL: they come first.
    ancient = datetime(2001, 1, 1, tzinfo=UTC) + timedelta(seconds=uuid.uuid4().int % 10**6)
    first = await add_item(world, now=ancient)
    second = await add_item(world, 12345, now=ancient + timedelta(seconds=1), suggestions=(), why="no_amount")
    try:
        code, out, err = await review(world, "list")
        assert code == 0, err
        line = next(row for row in out.splitlines() if row.split()[:1] == [first.id])
        for cell in ("acme-bank", "300.00 USD", "Globex Corporation", "low_score", "0.72", "d"):
            assert cell in line, line
        assert second.id in out and "123.45 USD" in out and "no_amount" in out

        code, out, err = await review(world, "list", "--json")
        assert code == 0, err
        rows = orjson.loads(out)
        ours = [row for row in rows if row["id"] in (first.id, second.id)]
        assert [row["id"] for row in ours] == [first.id, second.id]
        assert {"id", "event", "origin", "amount", "currency", "created_at", "suggestions", "state"} <= set(
            ours[0]
        )
        assert ours[0]["event"]["id"] == first.key[2] and ours[0]["origin"] == "acme-bank"
        assert (ours[0]["amount"], ours[0]["currency"], ours[0]["state"]) == ("300.00", "USD", "open")
        assert ours[0]["created_at"].startswith("2001-01-")
        assert ours[0]["suggestions"][0]["allocations"] == [{"invoice_id": world.book.a, "amount": "300.00"}]

        code, out, err = await review(world, "list", "--state", "rejected", "--json", "--limit", "5")
        assert code == 0, err and len(orjson.loads(out)) <= 5
        assert first.id not in out
    finally:  # leave nothing open this old for the next run
        reviews = Reviews(
            world.ledger, MemoryPublisher(), world.settings.broker.topology(), None, api_version="v1"
        )
        for item in (first, second):
            await reviews.reject(item.id, actor="test cleanup")


async def test_show_has_the_payment_why_suggestions_and_open_invoices(world: World) -> None:
    """The remittance text, why, the numbered suggestions and the customer's open USD invoices."""
    item = await add_item(world)
    code, out, err = await review(world, "show", item.id)
    assert code == 0, err
    for text in (item.id, "300.00 USD", "Globex Corporation", "March services, thanks", item.key[2],
                 "under matching.auto_threshold", f"300.00 USD on {world.book.a}", "payer_name 0.81",
                 world.book.b, "250.00 USD"):  # fmt: skip
        assert text in out, text
    assert world.book.c not in out  # EUR: not open in the payment's currency

    body = await shown(world, item)
    assert body["id"] == item.id and body["state"] == "open" and body["open_invoices_error"] is None
    assert sorted(i["id"] for i in body["open_invoices"]) == [world.book.a, world.book.b]
    assert body["open_invoices"][1]["amount_due"] == "250.00"


async def test_accept_queues_the_event_audits_the_os_user_and_refuses_a_second(world: World) -> None:
    """accept → accepted, the event on the work queue marked with its item, an audit row by the OS
    user; accepting again is exit 1 naming who decided it and how."""
    item = await add_item(world)
    code, out, err = await review(world, "accept", item.id)
    assert code == 0, err
    assert (
        out.strip()
        == f"{item.id} accepted: 300.00 USD on {world.book.a}; its payment is queued for recording"
    )

    body = await shown(world, item)
    assert body["state"] == "accepted" and body["decided_by"] == ME
    assert body["decision"]["allocations"] == [{"invoice_id": world.book.a, "amount": "300.00"}]
    got = await drain(world, world.settings.broker.topology().work_queue, 1)
    assert len(got) == 1 and orjson.loads(got[0].body)["id"] == item.key[2]
    assert messages.text(dict(got[0].headers), REVIEW_HEADER) == item.id
    audit = [r for r in await world.ledger.audit(limit=1000) if r.selector == item.id]
    assert [(r.actor, r.action) for r in audit] == [(ME, "review-accepted")]

    code, out, err = await review(world, "accept", item.id, "--suggestion", "0")
    assert code == 1 and out == ""
    line = one_line(err)
    assert f"{item.id} is accepted already by {ME}" in line and f"300.00 USD on {world.book.a}" in line
    assert await drain(world, world.settings.broker.topology().work_queue, 0) == []


async def test_accept_a_suggestion_it_does_not_have_is_refused(world: World) -> None:
    item = await add_item(world)
    code, _, err = await review(world, "accept", item.id, "--suggestion", "3")
    assert code == 1 and "has no suggestion 3 (it has 1: 0 to 0)" in one_line(err)
    assert (await shown(world, item))["state"] == "open"


async def test_assign_refuses_what_does_not_fit_and_splits_the_rest(world: World) -> None:
    """Amounts that do not sum, and an invoice in another currency, are refused (exit 1, why, still
    open); `--invoice A=100.00 --invoice B` gives B the other 200.00."""
    item = await add_item(world)
    book = world.book
    code, _, err = await review(
        world, "assign", item.id, "--invoice", f"{book.a}=100.00", "--invoice", f"{book.b}=100.00"
    )
    assert code == 1 and "the amounts sum to 200.00 USD but the payment is 300.00 USD" in one_line(err)
    assert (await shown(world, item))["state"] == "open"

    code, _, err = await review(world, "assign", item.id, "--invoice", book.c)
    assert code == 1 and f"invoice {book.c} is in EUR, the payment in USD" in one_line(err)
    body = await shown(world, item)
    assert body["state"] == "open" and "EUR" in body["problem"]
    code, out, _ = await review(world, "show", item.id)
    assert "last refused" in out

    code, out, err = await review(
        world, "assign", item.id, "--invoice", f"{book.a}=100.00", "--invoice", book.b
    )
    assert code == 0, err
    split = f"100.00 USD on {book.a}, 200.00 USD on {book.b}"
    assert out.strip() == f"{item.id} assigned: {split}; its payment is queued for recording"
    stored = await world.ledger.reviews.get(item.id)
    assert stored is not None and stored.state == "assigned" and stored.decided_by == ME
    assert stored.decision is not None and stored.decision["allocations"] == [
        [book.a, 10000],
        [book.b, 20000],
    ]
    got = await drain(world, world.settings.broker.topology().work_queue, 1)
    assert [messages.text(dict(m.headers), REVIEW_HEADER) for m in got] == [item.id]


async def test_assign_takes_invoice_or_invoice_equals_amount(world: World) -> None:
    """`--invoice A=` is bad usage (exit 2) before anything is opened."""
    item = await add_item(world)
    code, _, err = await review(world, "assign", item.id, "--invoice", f"{world.book.a}=")
    assert code == 2 and "INVOICE=AMOUNT" in err
    assert (await shown(world, item))["state"] == "open"


async def test_reject_sends_the_event_to_the_dead_letters_as_unmatched_invoice(world: World) -> None:
    item = await add_item(world)
    code, out, err = await review(world, "reject", item.id, "--note", "not one of ours")
    assert code == 0, err
    assert out.strip() == f"{item.id} rejected; its event is in the dead-letter queue as unmatched_invoice"
    got = await drain(world, world.settings.broker.topology().dead_letter, 1)
    assert len(got) == 1 and orjson.loads(got[0].body)["id"] == item.key[2]
    headers = dict(got[0].headers)
    assert messages.text(headers, messages.REASON) == "unmatched_invoice"
    assert messages.text(headers, REVIEW_HEADER) == item.id
    assert f"by {ME}: not one of ours" in (messages.text(headers, messages.ERROR) or "")
    assert (await shown(world, item))["state"] == "rejected"
    assert await drain(world, world.settings.broker.topology().work_queue, 0) == []


@pytest.mark.parametrize("action", [["show"], ["accept"], ["assign", "--invoice", "X-1"], ["reject"]])
async def test_an_unknown_id_is_one_line_and_exit_1(world: World, action: list[str]) -> None:
    for wanted in ("rv-999999999", "not-an-id"):
        code, out, err = await review(world, action[0], wanted, *action[1:])
        assert code == 1 and out == "" and f"no review item {wanted!r}" in one_line(err)


async def test_chargebee_unreachable_accept_is_try_again_and_show_still_works(world: World) -> None:
    """Nothing listens where Chargebee should be: accept exits 4 and decides nothing; show still
    shows the item, with a note instead of the open invoices."""
    item = await add_item(world)
    env = world.env | {"PAYRELAY_CHARGEBEE_BASE_URL": f"http://127.0.0.1:{free_port()}"}
    code, out, err = await review(world, "accept", item.id, env=env)
    assert code == 4 and out == "" and "Chargebee cannot be read now" in one_line(err)
    assert "nothing was decided" in err
    assert (await shown(world, item))["state"] == "open"
    assert await drain(world, world.settings.broker.topology().work_queue, 0) == []

    code, out, err = await review(world, "show", item.id, env=env)
    assert code == 0, err
    assert "March services, thanks" in out and "none shown: Chargebee cannot be read now" in out
    code, out, err = await review(world, "show", item.id, "--json", env=env)
    body = orjson.loads(out)
    assert (
        code == 0 and body["open_invoices"] == [] and "cannot reach Chargebee" in body["open_invoices_error"]
    )


async def test_broker_unreachable_decides_nothing(world: World) -> None:
    """A decision needs the broker first: without it, exit 4 and the item stays open."""
    item = await add_item(world)
    env = world.env | {"PAYRELAY_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/"}
    code, _, err = await review(world, "reject", item.id, env=env)
    assert code == 4 and "cannot reach the broker; nothing was decided" in one_line(err)
    assert (await shown(world, item))["state"] == "open"
