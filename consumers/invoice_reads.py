"""Invoice reads shared by concurrent payments: one `GET /invoices?id[in]=[...]` for many.

Under load the worker checks dozens of new invoices at once (every delivery of a burst before its
`record_payment`). On API v2 the invoices asked for while a read waits for its rate-limit permit
go out, once it has it, as one list call of up to 100 ids, Chargebee's largest page (the `id`
filter's `in` operator: the API reference's filter params for list invoices, as the sandbox's
list_specs.py keeps them; `limit` 1-100: chargebee-facts.md, pagination). One request against the
rate limit instead of one per payment, and one round trip of HTTP work in this process.

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


def _fail(batch: list[_Waiter], error: BaseException) -> None:
    for waiter in batch:
        waiter.settle(error=error)


def _renewer(batch: list[_Waiter]) -> OnPermit:
    """Once the permit is granted: renew each payment's lease; one taken over fails that payment."""

    async def renew() -> None:
        for waiter in batch:
            if waiter.on_permit is not None and not waiter.future.done():
                try:
                    await waiter.on_permit()
                except Exception as exc:  # its lease was taken over, or the ledger is unreachable
                    waiter.settle(error=exc)

    return renew


class InvoiceReads:
    """`read(id)` answers as `ChargebeeClient.retrieve_invoice` would, sharing the request.

    One reader at a time waits for a rate-limit permit; once it has one it takes every payment
    waiting then (up to 100) and reads their invoices, while the next reader waits for the next
    permit. With a rate limit the payments gather while the permit is due; without one, reads of
    successive bursts overlap instead of queueing behind each other.
    """

    def __init__(self, client: ChargebeeClient, most: int = MOST_IDS) -> None:
        self.client = client
        self.most = most
        self._waiting: list[_Waiter] = []
        self._reader_due = False  # a reader is waiting for its permit
        self._readers: set[asyncio.Task[None]] = set()  # held: the loop keeps only weak references
        self._refused = False  # Chargebee refused a list by ids once: retrieve from then on

    async def read(self, invoice_id: str, traceparent: str | None, on_permit: OnPermit | None) -> Invoice:
        if self.client.api_version != "v2" or self._refused:
            return await self.client.retrieve_invoice(invoice_id, traceparent, on_permit)
        future: asyncio.Future[Invoice] = asyncio.get_running_loop().create_future()
        self._waiting.append(_Waiter(invoice_id, future, on_permit, traceparent))
        self._start_reader()
        return await future

    def _start_reader(self) -> None:
        if not self._reader_due and self._waiting:
            self._reader_due = True
            reader = asyncio.create_task(self._read_next())
            self._readers.add(reader)
            reader.add_done_callback(self._readers.discard)

    async def _read_next(self) -> None:
        batch: list[_Waiter] = []
        try:
            await asyncio.sleep(0)  # the other deliveries of this burst ask too
            await self.client.limiter.acquire()
            self._reader_due = False
            batch, self._waiting = self._waiting[: self.most], self._waiting[self.most :]
            self._start_reader()  # those left over wait for the next permit
            await self._read(batch)
        except BaseException as exc:  # never leave a payment waiting for ever
            self._reader_due = False
            if not batch:  # stopped before it took any: those waiting go with it
                batch, self._waiting = self._waiting, []
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise

    async def _read(self, batch: list[_Waiter]) -> None:
        """Read the batch's invoices on the permit this reader holds."""
        ids = sorted({waiter.invoice_id for waiter in batch})
        renew = _renewer(batch)
        try:
            if len(ids) == 1:
                found = {ids[0]: await self.client.retrieve_invoice(
                    ids[0], batch[0].traceparent, renew, permitted=True)}  # fmt: skip
            else:
                found = await self._list(ids, batch[0].traceparent, renew)
        except RejectedByChargebee as exc:
            if len(ids) == 1:  # what its own retrieve would have been told
                _fail(batch, exc)
                return
            log.warning("Chargebee refused reading invoices by id (%s); reading them one by one", exc)
            self._refused = True
            found = {}
        except PaymentError as exc:
            _fail(batch, exc)
            return
        for waiter in batch:
            if waiter.invoice_id in found:
                waiter.settle(found[waiter.invoice_id])
        # Not returned (not found, or deleted), or refused: the retrieve tells, each on a permit of its own.
        await asyncio.gather(*(self._alone(waiter) for waiter in batch if not waiter.future.done()))

    async def _list(self, ids: list[str], traceparent: str | None, renew: OnPermit) -> dict[str, Invoice]:
        params = {"id[in]": orjson.dumps(ids).decode(), "limit": str(self.most)}
        rows, _ = await self.client.list_page("/invoices", params, traceparent, renew, permitted=True)
        found: dict[str, Invoice] = {}
        for row in rows:
            try:
                invoice = Invoice.model_validate(row.get("invoice"))
            except ValidationError:
                continue  # that one is retrieved alone, and its answer judged there
            if invoice.id in ids:
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
