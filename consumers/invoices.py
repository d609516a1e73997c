"""Know the invoice before paying it: currency, status and amount due, with a cache of currencies.

An invoice's currency never changes, so it is remembered once retrieved; its status and amount
due do, so they are read again whenever a decision depends on them (overpayment = "review", and
sharing a payment among the invoices its references name).
"""

from __future__ import annotations

import sys

from consumers.chargebee import ChargebeeClient, Invoice, OnPermit
from consumers.errors import CurrencyMismatch, InvoiceNotFound, InvoiceNotPayable, Overpayment
from consumers.invoice_reads import InvoiceReads
from consumers.mapping import Share
from service.bounded import FixedLru
from service.money import to_major_string
from service.review.service import PAYABLE


def check_payable(
    invoice: Invoice, currency: str, amount: int, *, api_version: str, overpayment: str
) -> None:
    """Raise the reason this payment must not be recorded on this invoice, if there is one. Pure."""
    if invoice.currency_code != currency:
        raise CurrencyMismatch(
            f"the payment is in {currency}, invoice {invoice.id} in {invoice.currency_code}: "
            "Chargebee would read the amount in the invoice's currency; nothing was recorded"
        )
    if invoice.status not in PAYABLE[api_version]:
        raise InvoiceNotPayable(f"invoice {invoice.id} is {invoice.status}; nothing was recorded")
    if overpayment == "review" and amount > invoice.amount_due:
        paid, due = (to_major_string(n, currency) for n in (amount, invoice.amount_due))
        raise Overpayment(
            f"{paid} {currency} is more than invoice {invoice.id}'s amount due {due} {currency} "
            '(overpayment = "review"); nothing was recorded'
        )


class InvoiceBook:
    """Reads invoices through the client and remembers their currencies (bounded, LRU, its memory
    taken at start: `FixedLru`, keyed by invoice id, the currency code interned)."""

    def __init__(
        self, client: ChargebeeClient, *, api_version: str, overpayment: str, capacity: int = 100_000
    ) -> None:
        self.client = client
        self.reads = InvoiceReads(client)  # the checks of concurrent payments share one request
        self.api_version = api_version
        self.overpayment = overpayment
        self._currencies: FixedLru[str, str] = FixedLru(capacity, _placeholder, "")

    async def check(
        self,
        invoice_id: str,
        currency: str,
        amount: int,
        traceparent: str | None,
        on_permit: OnPermit | None,
        *,
        allow_excess: bool = False,
    ) -> None:
        """Raise CurrencyMismatch, InvoiceNotPayable, InvoiceNotFound or Overpayment, else return.

        `allow_excess`: a person decided to record this overpayment (SPEC §10).
        """
        overpayment = "record" if allow_excess else self.overpayment
        known = self._currencies.get(invoice_id)
        if known is not None and overpayment == "record":
            if known != currency:
                raise CurrencyMismatch(
                    f"the payment is in {currency}, invoice {invoice_id} in {known}: nothing was recorded"
                )
            return  # its status is Chargebee's to check: a 409 says the same as a retrieve would
        invoice = await self.reads.read(invoice_id, traceparent, on_permit)
        self._remember(invoice)
        check_payable(invoice, currency, amount, api_version=self.api_version, overpayment=overpayment)

    async def candidates(self, invoice_ids: list[str], currency: str, traceparent: str | None) -> list[Share]:
        """Those of `invoice_ids` that are payable invoices in `currency`, with their amounts due."""
        found: list[Share] = []
        for invoice_id in invoice_ids:
            try:
                invoice = await self.client.retrieve_invoice(invoice_id, traceparent)
            except InvoiceNotFound:
                continue  # a creditor reference or a typo, not one of this site's invoices
            self._remember(invoice)
            payable = invoice.status in PAYABLE[self.api_version] and invoice.amount_due > 0
            if payable and invoice.currency_code == currency:
                found.append((invoice.id, invoice.amount_due))
        return found

    def _remember(self, invoice: Invoice) -> None:
        self._currencies.put(invoice.id, sys.intern(invoice.currency_code))


def _placeholder(i: int) -> str:
    """A key no invoice has (Chargebee ids never hold a NUL), as long as a typical id."""
    return f"\0placeholder{i:07d}"
