"""Chargebee's customers and open invoices, as cash application and review decisions read them.

Lists are read page by page (`limit` 100, `offset` = the previous `next_offset`) and kept briefly:
customers for `customers_ttl` seconds (a payer's name is matched against all of them, and a site's
customers change slowly), a customer's open invoices for `invoices_ttl` seconds, and dropped as
soon as this process records a payment on one of them. API v2 filters the invoice list
(`customer_id[is]`, `status[in]`, sorted by date); v1's list takes no filters, so v1 reads the
customer's own list (`GET /customers/{id}/invoices`, the v1 SDKs' `invoices_for_customer`) and
keeps the payable ones. Every read goes through the client's rate limiter, like every other call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import orjson
from pydantic import ValidationError

from consumers.chargebee import ChargebeeClient, Invoice
from consumers.errors import InvoiceNotFound, PaymentError
from service.metrics import Metrics
from service.review.service import PAYABLE, InvoiceFacts, ReaderUnavailable
from service.settings import Settings

log = logging.getLogger("payrelay.consumer")

PAGE: Final = "100"
MAX_PAGES: Final = 200  # 20,000 customers (or one customer's open invoices) are read at most


@dataclass(frozen=True, slots=True)
class CustomerFacts:
    id: str
    company: str | None
    first_name: str | None
    last_name: str | None
    email: str | None

    @property
    def names(self) -> list[str]:
        """The names a payer could go by: the company, and the person's full name."""
        person = " ".join(n for n in (self.first_name, self.last_name) if n)
        return [n for n in (self.company, person) if n]


def facts(invoice: Invoice) -> InvoiceFacts:
    return InvoiceFacts(
        id=invoice.id,
        customer_id=invoice.customer_id,
        status=invoice.status,
        currency=invoice.currency_code,
        amount_due=invoice.amount_due,
        total=invoice.total if invoice.total is not None else (invoice.amount or 0),
        date=invoice.date if invoice.date is not None else invoice.start_date,
        due_date=invoice.due_date,
    )


class Directory:
    """Implements the review service's `InvoiceReader`, and what the matcher reads."""

    def __init__(
        self,
        client: ChargebeeClient,
        *,
        customers_ttl: float = 300.0,
        invoices_ttl: float = 30.0,
        clock: Any = time.monotonic,
    ) -> None:
        self.client = client
        self.version = client.api_version
        self.payable = PAYABLE[self.version]
        self.customers_ttl = customers_ttl
        self.invoices_ttl = invoices_ttl
        self.clock = clock
        self._customers: tuple[float, list[CustomerFacts]] | None = None
        self._open: dict[tuple[str, str], tuple[float, list[InvoiceFacts]]] = {}
        self._owner: dict[str, str] = {}  # invoice id -> customer id, to forget on a payment

    async def invoice(self, invoice_id: str) -> InvoiceFacts | None:
        try:
            return facts(await self.client.retrieve_invoice(invoice_id))
        except InvoiceNotFound:
            return None
        except PaymentError as exc:
            raise ReaderUnavailable(str(exc)) from None

    async def customers(self, traceparent: str | None = None) -> list[CustomerFacts]:
        cached = self._customers
        if cached is not None and self.clock() - cached[0] < self.customers_ttl:
            return cached[1]
        found = [
            CustomerFacts(
                id=str(c["id"]),
                company=c.get("company"),
                first_name=c.get("first_name"),
                last_name=c.get("last_name"),
                email=c.get("email"),
            )
            for c in await self._all("/customers", {}, "customer", traceparent)
        ]
        self._customers = (self.clock(), found)
        return found

    async def open_invoices(
        self, customer_id: str, currency: str, *, fresh: bool = False, traceparent: str | None = None
    ) -> list[InvoiceFacts]:
        """The customer's payable invoices in `currency` with something due, oldest first."""
        cached = self._open.get((customer_id, currency))
        if not fresh and cached is not None and self.clock() - cached[0] < self.invoices_ttl:
            return cached[1]
        try:
            if self.version == "v2":
                params = {
                    "customer_id[is]": customer_id,
                    "status[in]": orjson.dumps(sorted(self.payable)).decode(),
                    "sort_by[asc]": "date",
                }
                rows = await self._all("/invoices", params, "invoice", traceparent)
            else:
                path = f"/customers/{quote(customer_id, safe='')}/invoices"
                rows = await self._all(path, {}, "invoice", traceparent)
            invoices = [facts(Invoice.model_validate(row)) for row in rows]
        except ValidationError as exc:
            raise ReaderUnavailable(f"unreadable invoice list: {exc.error_count()} errors") from None
        found = sorted(
            (i for i in invoices if i.status in self.payable and i.currency == currency and i.amount_due > 0),
            key=lambda i: (i.date or 0, i.id),
        )
        self._open[(customer_id, currency)] = (self.clock(), found)
        for invoice in found:
            self._owner[invoice.id] = customer_id
        return found

    def forget(self, invoice_id: str) -> None:
        """A payment was recorded on this invoice: its customer's open invoices are read afresh."""
        customer = self._owner.pop(invoice_id, None)
        if customer is not None:
            for key in [k for k in self._open if k[0] == customer]:
                del self._open[key]

    async def _all(
        self, path: str, params: dict[str, str], resource: str, traceparent: str | None
    ) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        offset: str | None = None
        for _ in range(MAX_PAGES):
            query = {**params, "limit": PAGE, **({"offset": offset} if offset else {})}
            try:
                items, offset = await self.client.list_page(path, query, traceparent)
            except InvoiceNotFound:
                return []  # Chargebee has no such customer: nothing of theirs is open
            except PaymentError as exc:
                raise ReaderUnavailable(str(exc)) from None
            rows.extend(item[resource] for item in items if isinstance(item.get(resource), dict))
            if not offset:
                return rows
        log.warning("%s has more than %d pages: matching against the first %d", path, MAX_PAGES, len(rows))
        return rows


@asynccontextmanager
async def open_directory(settings: Settings, metrics: Metrics) -> AsyncIterator[Directory]:
    """A directory on a session of its own, for a process that does not run a consumer (CLI, ops)."""
    async with aiohttp.ClientSession() as session:
        yield Directory(ChargebeeClient.configured(session, settings, metrics))
