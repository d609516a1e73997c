"""The v1 and v2 JSON of invoices, transactions and customers (pure).

v2 follows the PY SDK's response classes and a captured v2 payment_succeeded payload; v1 follows
OAS-v1's schemas, which name things differently (`amount`, `paid_on`, `linked_transactions`,
`invoice_amount`) and declare no `object`, `deleted`, `resource_version` or `updated_at`.
"""

from __future__ import annotations

from service.chargebee_sandbox.replies import Json
from service.chargebee_sandbox.resources import Customer, Invoice, Transaction


def _invoice_common(invoice: Invoice) -> Json:
    return {
        "id": invoice.id,
        "customer_id": invoice.customer_id,
        "recurring": False,  # not from a subscription
        "status": invoice.status,
        "price_type": "tax_exclusive",
        "currency_code": invoice.currency_code,
        "tax": 0,
        "sub_total": invoice.total,
        "amount_paid": invoice.amount_paid,
        "amount_adjusted": 0,
        "credits_applied": 0,
        "amount_due": invoice.amount_due,
    }


def invoice_json(invoice: Invoice, version: str) -> Json:
    body = _invoice_common(invoice)
    if version == "v1":
        body["start_date"] = body["end_date"] = invoice.date
        body["amount"] = invoice.total
        if invoice.paid_at is not None:
            body["paid_on"] = invoice.paid_at
        body["linked_transactions"] = [
            {
                "txn_id": txn.id,
                "applied_amount": txn.applied,
                "applied_at": txn.updated_at,
                "txn_type": "payment",
                "txn_status": "success",
                "txn_date": txn.date,
                "txn_amount": txn.amount,
            }
            for txn in invoice.payments
        ]
        return body
    body |= {"date": invoice.date, "due_date": invoice.due_date, "total": invoice.total}
    body |= {"write_off_amount": 0, "amount_to_collect": invoice.amount_due}
    if invoice.paid_at is not None:
        body["paid_at"] = invoice.paid_at
    body |= {"updated_at": invoice.updated_at, "resource_version": invoice.resource_version}
    body |= {"deleted": False, "object": "invoice"}
    body["linked_payments"] = [
        {
            "txn_id": txn.id,
            "applied_amount": txn.applied,
            "applied_at": txn.updated_at,
            "txn_status": "success",
            "txn_date": txn.date,
            "txn_amount": txn.amount,
        }
        for txn in invoice.payments
    ]
    return body


def transaction_json(txn: Transaction, invoice: Invoice, version: str) -> Json:
    body: Json = {
        "id": txn.id,
        "customer_id": txn.customer_id,
        "payment_method": txn.payment_method,
        "gateway": "not_applicable",
        "type": "payment",
        "date": txn.date,
        "currency_code": txn.currency_code,
        "amount": txn.amount,
        "amount_unused": txn.amount_unused,
        "status": "success",
    }
    if txn.reference_number is not None:
        body["reference_number"] = txn.reference_number
    linked: Json = {
        "invoice_id": invoice.id,
        "applied_amount": txn.applied,
        "applied_at": txn.updated_at,
        "invoice_date": invoice.date,
    }
    if version == "v1":
        linked["invoice_amount"] = invoice.total
    else:
        linked |= {"invoice_total": invoice.total, "invoice_status": invoice.status}
        body |= {"updated_at": txn.updated_at, "resource_version": txn.resource_version}
        body |= {"deleted": False, "object": "transaction"}
    body["linked_invoices"] = [linked]
    body["linked_refunds"] = []
    return body


def customer_json(customer: Customer, version: str) -> Json:
    body: Json = {"id": customer.id}
    for name in ("first_name", "last_name", "email", "company"):
        value = getattr(customer, name)
        if value is not None:
            body[name] = value
    body |= {"auto_collection": "off", "allow_direct_debit": False, "created_at": customer.created_at}
    body |= {"taxability": "taxable", "refundable_credits": 0, "excess_payments": customer.excess_payments}
    if version == "v1":
        body["account_credits"] = 0
        return body
    body |= {"promotional_credits": 0, "unbilled_charges": 0, "net_term_days": 0}
    body |= {"updated_at": customer.updated_at, "resource_version": customer.resource_version}
    body |= {"deleted": False, "object": "customer"}
    return body
