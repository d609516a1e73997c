"""The resources the sandbox keeps in memory (invoices, transactions, customers) and its seeds."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

InvoiceStatus = Literal["payment_due", "not_paid", "paid", "voided", "pending", "posted"]
INVOICE_STATUSES: Final[dict[str, frozenset[str]]] = {
    "v1": frozenset({"paid", "payment_due", "not_paid", "voided", "pending"}),
    "v2": frozenset({"paid", "posted", "payment_due", "not_paid", "voided", "pending"}),
}


@dataclass(slots=True)
class Customer:
    id: str
    first_name: str | None
    last_name: str | None
    company: str | None
    email: str | None
    created_at: int
    updated_at: int
    resource_version: int
    excess_payments: int = 0  # minor units: what payments left over beyond the invoices they paid


@dataclass(frozen=True, slots=True)
class Transaction:
    """An offline payment recorded against one invoice; `applied` of `amount` went to the invoice."""

    id: str
    invoice_id: str
    customer_id: str
    amount: int
    applied: int
    currency_code: str
    payment_method: str
    reference_number: str | None
    note: str | None
    date: int
    updated_at: int
    resource_version: int

    @property
    def amount_unused(self) -> int:
        """The part not applied to the invoice, which went to the customer's excess_payments."""
        return self.amount - self.applied


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


# The demo invoices (SandboxConfig.seed), listed in the package docstring; each one's customer is
# `cust_<invoice id>`.
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
