"""Did Chargebee already record it? Looking for a payment whose `record_payment` outcome is unknown.

A payment is the one payrelay sent when a successful transaction linked to its invoice carries
its reference number, amount, payment method and date, and no other payment of the ledger owns it
(two deposits with one bank reference and amount on one invoice are then told apart by the
ledger, oldest first). SPEC §4: "Ambiguous outcomes are reconciled, never blindly resent."
"""

from __future__ import annotations

from consumers.chargebee import ChargebeeClient, OnPermit, RecordResult, excess_of, is_the_payment
from consumers.mapping import RecordPayment
from service.ledger import EventKey, Ledger
from service.metrics import Metrics


async def find_recorded(
    client: ChargebeeClient,
    ledger: Ledger,
    metrics: Metrics,
    key: EventKey,
    part: str,
    request: RecordPayment,
    traceparent: str | None,
    on_permit: OnPermit | None,
) -> RecordResult | None:
    """The payment as Chargebee holds it, or None if Chargebee has none; errors if it cannot be read.

    Payments the ledger already holds for other events are set aside before any is retrieved, so
    an invoice paid a thousand times with one amount costs one read, not a thousand.
    """
    invoice, links = await client.linked_like(request, traceparent, on_permit)
    owned = await ledger.owned_elsewhere([link.txn_id for link in links], key, part)
    for link in links:
        if link.txn_id in owned:
            continue
        transaction = await client.retrieve_transaction(link.txn_id, traceparent, on_permit)
        if not is_the_payment(transaction, request):
            continue
        metrics.reconciliations.labels("found").inc()
        return RecordResult(
            transaction_id=transaction.id,
            invoice_id=invoice.id,
            invoice_status=invoice.status,
            amount_due=invoice.amount_due,
            currency=invoice.currency_code,
            replayed=False,
            excess=excess_of(transaction, request.invoice_id, request.amount),
        )
    metrics.reconciliations.labels("not_found").inc()
    return None
