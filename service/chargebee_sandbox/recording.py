"""record_payment's rules: idempotency, validation, invoice state, applying the amount (no awaits)."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Final

from service.chargebee_sandbox.payments import NAMES, Payment, parse_payment
from service.chargebee_sandbox.replies import ParamError, Reply, error_reply, json_reply, not_found
from service.chargebee_sandbox.resources import Invoice, Transaction
from service.chargebee_sandbox.shapes import invoice_json, transaction_json
from service.chargebee_sandbox.state import Sandbox

# Which invoice statuses take a payment: OAS-v2 "payment_due, posted, or not_paid"; OAS-v1
# "'payment_due' or 'not_paid' invoices".
PAYABLE: Final[Mapping[str, frozenset[str]]] = {
    "v1": frozenset({"payment_due", "not_paid"}),
    "v2": frozenset({"payment_due", "posted", "not_paid"}),
}


def record(
    sandbox: Sandbox, invoice_id: str, version: str, form: Mapping[str, str], key: str | None
) -> Reply:
    """Replays, refuses or processes one record_payment call, storing the answer under `key`."""
    if key is None:
        return _process(sandbox, invoice_id, version, form)
    fingerprint = (version, invoice_id, tuple(sorted(form.items())))
    earlier = sandbox.idempotency.lookup(key, fingerprint)
    if earlier is not None:
        return earlier
    reply = _process(sandbox, invoice_id, version, form)
    sandbox.idempotency.store(key, fingerprint, reply)
    return reply


def _process(sandbox: Sandbox, invoice_id: str, version: str, form: Mapping[str, str]) -> Reply:
    try:
        payment = parse_payment(form, version)
    except ParamError as exc:
        return exc.reply()
    invoice = sandbox.invoices.get(invoice_id)
    if invoice is None:
        return not_found("invoice", invoice_id)
    payable = PAYABLE[version]
    if invoice.status not in payable:
        message = (
            f"Invoice {invoice_id} is {invoice.status}; payments can be recorded only when it is "
            + " or ".join(sorted(payable))
        )
        return error_reply(409, "invalid_state_for_request", message, error_code="invalid_invoice_state")
    if payment.amount is None and invoice.amount_due == 0:
        return ParamError(NAMES[version].amount, "cannot be derived: the invoice has no amount due").reply()
    txn = _apply(sandbox, invoice, payment)
    body = {"invoice": invoice_json(invoice, version), "transaction": transaction_json(txn, invoice, version)}
    return json_reply(200, body)


def _apply(sandbox: Sandbox, invoice: Invoice, payment: Payment) -> Transaction:
    """Applies up to amount_due to the invoice; any excess goes to the customer's excess_payments."""
    now, version = int(sandbox.clock()), sandbox.next_version()
    amount = invoice.amount_due if payment.amount is None else payment.amount
    applied = min(amount, invoice.amount_due)
    txn = Transaction(
        id="txn_" + secrets.token_hex(8),
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        amount=amount,
        applied=applied,
        currency_code=invoice.currency_code,
        payment_method=payment.payment_method,
        reference_number=payment.reference_number,
        note=payment.note,
        date=now if payment.date is None else payment.date,
        updated_at=now,
        resource_version=version,
    )
    invoice.amount_paid += applied
    invoice.amount_due -= applied
    if invoice.amount_due == 0:  # otherwise the status stays as it was (not_paid, posted...)
        invoice.status, invoice.paid_at = "paid", txn.date
    invoice.updated_at, invoice.resource_version = now, version
    invoice.payments.append(txn)
    if txn.amount_unused:
        customer = sandbox.customers[invoice.customer_id]
        customer.excess_payments += txn.amount_unused
        customer.updated_at, customer.resource_version = now, version
    sandbox.transactions.append(txn)
    return txn
