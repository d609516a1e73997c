"""Invoices and transactions in memory, their v1/v2 JSON, and the seeded demo invoices."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from service.chargebee_sandbox.replies import Json

InvoiceStatus = Literal["payment_due", "not_paid", "paid", "voided", "pending", "posted"]


@dataclass(frozen=True, slots=True)
class Transaction:
    id: str
    invoice_id: str
    customer_id: str
    amount: int
    currency_code: str
    payment_method: str
    reference_number: str | None
    note: str | None
    date: int
    updated_at: int
    resource_version: int


@dataclass(slots=True)
class Invoice:
    id: str
    customer_id: str
    currency_code: str
    total: int
    amount_paid: int
    amount_due: int
    status: str
    date: int
    due_date: int
    updated_at: int
    resource_version: int
    paid_at: int | None = None
    payments: list[Transaction] = field(default_factory=list)


def invoice_json(invoice: Invoice, version: str) -> Json:
    body: Json = {
        "id": invoice.id,
        "customer_id": invoice.customer_id,
        "status": invoice.status,
        "date": invoice.date,
        "due_date": invoice.due_date,
        "total": invoice.total,
        "amount_paid": invoice.amount_paid,
        "amount_due": invoice.amount_due,
        "currency_code": invoice.currency_code,
        "object": "invoice",
        "resource_version": invoice.resource_version,
        "updated_at": invoice.updated_at,
    }
    if invoice.paid_at is not None:
        body["paid_at"] = invoice.paid_at
    if version == "v2":
        body["amount_adjusted"] = 0
        body["credits_applied"] = 0
        body["linked_payments"] = [
            {
                "txn_id": txn.id,
                "applied_amount": txn.amount,
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
        "amount": txn.amount,
        "currency_code": txn.currency_code,
        "payment_method": txn.payment_method,
        "date": txn.date,
        "status": "success",
        "type": "payment",
        "gateway": "not_applicable",
        "deleted": False,
        "object": "transaction",
        "resource_version": txn.resource_version,
        "updated_at": txn.updated_at,
    }
    if txn.reference_number is not None:
        body["reference_number"] = txn.reference_number
    if version == "v2":
        body["linked_invoices"] = [
            {
                "invoice_id": invoice.id,
                "applied_amount": txn.amount,
                "applied_at": txn.updated_at,
                "invoice_date": invoice.date,
                "invoice_total": invoice.total,
                "invoice_status": invoice.status,
            }
        ]
    return body


# The demo invoices (SandboxConfig.seed), listed in the package docstring.
SEEDS: Final[tuple[tuple[str, str, int, InvoiceStatus], ...]] = (
    *(
        (f"INV-{1001 + i}", "USD", total, "payment_due")
        for i, total in enumerate((10000, 12550, 19999, 25000, 30000, 45000, 50000, 64990, 80000, 100000))
    ),
    ("INV-2001", "JPY", 150000, "payment_due"),
    ("INV-3001", "BHD", 125500, "payment_due"),
    ("INV-4001", "USD", 20000, "not_paid"),
    ("INV-9001", "USD", 5000, "paid"),
    ("INV-9002", "USD", 7500, "voided"),
    ("INV-9003", "USD", 9000, "pending"),
    ("INV-9004", "USD", 12000, "posted"),
)
