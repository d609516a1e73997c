"""Invoice reads shared by concurrent payments, against the real sandbox over HTTP.

Each payment must see what a retrieve of its own invoice would have told it: its own currency,
status and amount due, its own not-found, its own lost lease. Only the number of requests differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from consumers.chargebee import ChargebeeClient
from consumers.errors import Busy, CurrencyMismatch, InvoiceNotFound, InvoiceNotPayable, TransientError
from consumers.invoice_reads import InvoiceReads
from consumers.invoices import InvoiceBook
from consumers.rate_limit import RateLimiter
from service.chargebee_sandbox import SandboxConfig
from service.chargebee_sandbox import create_app as create_sandbox
from service.metrics import create_metrics
from tests.conftest import serve

KEY = "test_reads_key"
USD = [f"INV-{1001 + i}" for i in range(10)]  # the sandbox's seeded USD invoices, payment_due


@pytest.fixture
async def sandbox() -> AsyncIterator[str]:
    async with serve(create_sandbox(SandboxConfig(api_key=KEY))) as url:
        yield url


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def client_for(http: aiohttp.ClientSession, sandbox: str, version: str = "v2") -> ChargebeeClient:
    metrics = create_metrics()
    return ChargebeeClient(
        http,
        api_base=f"{sandbox}/api/{version}",
        api_key=KEY,
        api_version=version,
        limiter=RateLimiter(0),
        metrics=metrics,
    )


async def log(http: aiohttp.ClientSession, sandbox: str) -> list[str]:
    async with http.get(f"{sandbox}/sandbox/requests", params={"operation": "all"}) as response:
        return [entry["operation"] for entry in (await response.json())["requests"]]


async def arm(http: aiohttp.ClientSession, sandbox: str, **fault: Any) -> None:
    async with http.post(f"{sandbox}/sandbox/faults", json=fault) as response:
        assert response.status == 201, await response.text()


async def test_concurrent_reads_share_one_request(http: aiohttp.ClientSession, sandbox: str) -> None:
    """Ten payments, three invoices besides: one list call, each payment its own invoice."""
    reads = InvoiceReads(client_for(http, sandbox))
    wanted = [*USD, "INV-2001", "INV-3001", "INV-9001"]
    found = await asyncio.gather(*(reads.read(invoice, None, None) for invoice in wanted))
    assert [(i.id, i.currency_code) for i in found] == [
        *((invoice, "USD") for invoice in USD), ("INV-2001", "JPY"), ("INV-3001", "BHD"), ("INV-9001", "USD")
    ]  # fmt: skip
    assert found[-1].status == "paid"
    assert await log(http, sandbox) == ["list_invoices"]


async def test_a_lone_read_is_a_retrieve(http: aiohttp.ClientSession, sandbox: str) -> None:
    reads = InvoiceReads(client_for(http, sandbox))
    assert (await reads.read("INV-1001", None, None)).id == "INV-1001"
    assert await log(http, sandbox) == ["retrieve_invoice"]


async def test_an_unknown_invoice_is_not_found_for_its_payment_only(
    http: aiohttp.ClientSession, sandbox: str
) -> None:
    """The list cannot tell missing from deleted: the retrieve does, for that payment alone."""
    reads = InvoiceReads(client_for(http, sandbox))
    outcomes = await asyncio.gather(
        reads.read("INV-1001", None, None), reads.read("INV-0404", None, None), return_exceptions=True
    )
    assert getattr(outcomes[0], "id", None) == "INV-1001"
    assert isinstance(outcomes[1], InvoiceNotFound)
    assert await log(http, sandbox) == ["list_invoices", "retrieve_invoice"]


async def test_api_v1_retrieves_each(http: aiohttp.ClientSession, sandbox: str) -> None:
    """v1's list invoices takes no filters (OAS-v1): every read is a retrieve."""
    reads = InvoiceReads(client_for(http, sandbox, "v1"))
    found = await asyncio.gather(*(reads.read(invoice, None, None) for invoice in USD[:3]))
    assert [i.id for i in found] == USD[:3]
    assert await log(http, sandbox) == ["retrieve_invoice"] * 3


async def test_chargebee_unreachable_fails_every_payment_of_the_read(
    http: aiohttp.ClientSession, sandbox: str
) -> None:
    """A 503 on the list: each payment fails as its own retrieve would have, and nothing is retried here."""
    await arm(http, sandbox, status=503, operation="list_invoices")
    reads = InvoiceReads(client_for(http, sandbox))
    outcomes = await asyncio.gather(*(reads.read(i, None, None) for i in USD[:4]), return_exceptions=True)
    assert all(isinstance(o, TransientError) and not o.maybe_recorded for o in outcomes), outcomes
    assert await log(http, sandbox) == ["list_invoices"]


async def test_a_refused_list_falls_back_to_retrieves(http: aiohttp.ClientSession, sandbox: str) -> None:
    """A 400 on the list (say Chargebee stopped taking id[in]): retrieved one by one, then and later."""
    await arm(http, sandbox, status=400, operation="list_invoices", api_error_code="invalid_request")
    reads = InvoiceReads(client_for(http, sandbox))
    found = await asyncio.gather(*(reads.read(i, None, None) for i in USD[:3]))
    assert [i.id for i in found] == USD[:3]
    found = await asyncio.gather(*(reads.read(i, None, None) for i in USD[3:5]))
    assert [i.id for i in found] == USD[3:5]
    assert await log(http, sandbox) == ["list_invoices"] + ["retrieve_invoice"] * 5


async def test_a_lost_lease_fails_only_its_payment(http: aiohttp.ClientSession, sandbox: str) -> None:
    """Leases are renewed once the permit is granted; the payment whose lease was taken over stops."""
    renewed: list[str] = []

    def keep(invoice: str) -> Any:
        async def renew() -> None:
            if invoice == USD[1]:
                raise Busy("this delivery's lease on the payment was taken over while it waited")
            renewed.append(invoice)

        return renew

    reads = InvoiceReads(client_for(http, sandbox))
    outcomes = await asyncio.gather(
        *(reads.read(invoice, None, keep(invoice)) for invoice in USD[:3]), return_exceptions=True
    )
    assert isinstance(outcomes[1], Busy)
    assert [getattr(o, "id", None) for o in (outcomes[0], outcomes[2])] == [USD[0], USD[2]]
    assert sorted(renewed) == [USD[0], USD[2]]


async def test_checks_in_one_read_judge_each_payment_alone(http: aiohttp.ClientSession, sandbox: str) -> None:
    """USD payments on a JPY, a paid and a USD invoice, read together: only the USD one may be recorded."""
    book = InvoiceBook(client_for(http, sandbox), api_version="v2", overpayment="record")
    outcomes = await asyncio.gather(
        book.check("INV-2001", "USD", 1000, None, None),
        book.check("INV-9001", "USD", 1000, None, None),
        book.check("INV-1002", "USD", 1000, None, None),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], CurrencyMismatch)
    assert isinstance(outcomes[1], InvoiceNotPayable)
    assert outcomes[2] is None
    assert await log(http, sandbox) == ["list_invoices"]


async def test_reads_gather_while_their_permit_is_due(http: aiohttp.ClientSession, sandbox: str) -> None:
    """600/min: one read takes the first permit; five asked 10 ms apart share the next one."""
    client = client_for(http, sandbox)
    client.limiter = RateLimiter(600)
    reads = InvoiceReads(client)
    first = asyncio.ensure_future(reads.read(USD[0], None, None))
    later = []
    for invoice in USD[1:6]:
        await asyncio.sleep(0.01)
        later.append(asyncio.ensure_future(reads.read(invoice, None, None)))
    found = await asyncio.gather(first, *later)
    assert [i.id for i in found] == USD[:6]
    assert await log(http, sandbox) == ["retrieve_invoice", "list_invoices"]


async def test_reads_do_not_queue_behind_a_slow_one(http: aiohttp.ClientSession) -> None:
    """Chargebee at 200 ms: reads asked during another's call go out at once, not after it."""
    async with serve(create_sandbox(SandboxConfig(api_key=KEY, latency_ms=200))) as slow:
        reads = InvoiceReads(client_for(http, slow))
        first = asyncio.ensure_future(reads.read(USD[0], None, None))
        await asyncio.sleep(0.02)
        started = asyncio.get_running_loop().time()
        await asyncio.gather(reads.read(USD[1], None, None), reads.read(USD[2], None, None))
        waited = asyncio.get_running_loop().time() - started
        await first
    assert waited < 0.3, f"{waited:.3f} s: they waited for the first read (0.38 s), not 0.2 s"
