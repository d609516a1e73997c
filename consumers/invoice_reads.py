"""Invoice reads shared by concurrent payments: one `GET /invoices?id[in]=[...]` for many.

Under load the worker checks dozens of new invoices at once (every delivery of a burst before its
`record_payment`). On API v2 the invoices asked for while a read is being prepared go out as one
list call of up to 100 ids, Chargebee's largest page (`id[in]`, `limit` 1-100: the API reference,
list invoices, and its pagination page; see chargebee-facts.md). One request against the rate
limit instead of one per payment, and one round trip of HTTP work in this process.

A lone read, API v1 (whose list invoices takes no filters, OAS-v1), an id the list did not return
(not found, or deleted: the retrieve says which), and every id of a list that Chargebee refused
as a request are retrieved one by one, so each payment sees exactly what a retrieve would tell it.
A failure to reach Chargebee fails every payment of the read, as it would have failed each alone.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import orjson
from pydantic import ValidationError

from consumers.chargebee import ChargebeeClient, Invoice, OnPermit
from consumers.errors import PaymentError, RejectedByChargebee

log = logging.getLogger("payrelay.consumer")

MOST_IDS = 100  # Chargebee's largest page


@dataclass(slots=True)
class _Waiter:
    invoice_id: str
    future: asyncio.Future[Invoice]
    on_permit: OnPermit | None
    traceparent: str | None

    def settle(self, invoice: Invoice | None = None, error: BaseException | None = None) -> None:
        if self.future.done():  # its payment was cancelled, or its lease lost while it waited
            return
        if error is not None:
            self.future.set_exception(error)
        else:
            assert invoice is not None
            self.future.set_result(invoice)


class InvoiceReads:
    """`read(id)` answers as `ChargebeeClient.retrieve_invoice` would, sharing the request."""

    def __init__(self, client: ChargebeeClient, most: int = MOST_IDS) -> None:
        self.client = client
        self.most = most
        self._waiting: list[_Waiter] = []
        self._reader: asyncio.Task[None] | None = None
        self._refused = False  # Chargebee refused a list by ids once: retrieve from then on

    async def read(self, invoice_id: str, traceparent: str | None, on_permit: OnPermit | None) -> Invoice:
        if self.client.api_version != "v2" or self._refused:
            return await self.client.retrieve_invoice(invoice_id, traceparent, on_permit)
        future: asyncio.Future[Invoice] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiter(invoice_id, future, on_permit, traceparent))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_waiting())
        return await future

    async def _read_waiting(self) -> None:
        await asyncio.sleep(0)  # the other deliveries of this burst ask too
        while self._waiting:
            batch, self._waiting = self._waiting[: self.most], self._waiting[self.most :]
            try:
                await self._read(batch)
            except BaseException as exc:  # never leave a payment waiting for ever
                for waiter in batch:
                    waiter.settle(error=exc)
                if not isinstance(exc, Exception):
                    raise

    async def _read(self, batch: list[_Waiter]) -> None:
        ids = sorted({waiter.invoice_id for waiter in batch})
        if len(ids) == 1:
            await asyncio.gather(*(self._alone(waiter) for waiter in batch))
            return
        try:
            found = await self._list(ids, batch)
        except RejectedByChargebee as exc:
            log.warning("Chargebee refused reading invoices by id (%s); reading them one by one", exc)
            self._refused = True
            found = {}
        except PaymentError as exc:
            for waiter in batch:
                waiter.settle(error=exc)
            return
        missing = [waiter for waiter in batch if waiter.invoice_id not in found]
        for waiter in batch:
            if waiter.invoice_id in found:
                waiter.settle(found[waiter.invoice_id])
        await asyncio.gather(*(self._alone(waiter) for waiter in missing))

    async def _list(self, ids: list[str], batch: list[_Waiter]) -> dict[str, Invoice]:
        async def renew_leases() -> None:
            for waiter in batch:
                if waiter.on_permit is not None and not waiter.future.done():
                    try:
                        await waiter.on_permit()
                    except Exception as exc:  # that payment's lease was taken over, or unreachable
                        waiter.settle(error=exc)

        params = {"id[in]": orjson.dumps(ids).decode(), "limit": str(self.most)}
        rows, _ = await self.client.list_page("/invoices", params, batch[0].traceparent, renew_leases)
        found: dict[str, Invoice] = {}
        for row in rows:
            try:
                invoice = Invoice.model_validate(row.get("invoice"))
            except ValidationError:
                continue  # that one is retrieved alone, and its answer judged there
            found[invoice.id] = invoice
        return found

    async def _alone(self, waiter: _Waiter) -> None:
        if waiter.future.done():
            return
        try:
            invoice = await self.client.retrieve_invoice(
                waiter.invoice_id, waiter.traceparent, waiter.on_permit
            )
        except Exception as exc:
            waiter.settle(error=exc)
        else:
            waiter.settle(invoice)
