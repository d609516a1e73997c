"""What each list endpoint accepts, per API version (data): filters, operators, sort attributes.

v2 follows the API reference's "Filter Params" for list invoices, transactions and customers,
restricted to the attributes the sandbox keeps. v1's list_invoices takes only `limit`, `offset` and
`paid_on_after` (OAS-v1); v1 filters on transactions and customers were not checked and are
refused too, so a client can never rely on a v1 filter Chargebee might silently ignore.

List invoices (v2) also filters on `date` (timestamp: after, before, on, between), `total` and
`amount_due` (in cents: is, is_not, lt, lte, gt, gte, between), as REF list invoices and NODE's
`Invoice.ListInputParam` document them. There is no `due_date` filter (neither REF, NODE nor PY's
`Invoice.ListParams` has one), so the sandbox refuses it like any unknown filter. List invoices for
a customer takes only `limit` and `offset`, in v1 and v2 (PY `InvoicesForCustomerParams`, NODE
`InvoicesForCustomerInputParam`).
"""

from __future__ import annotations

from typing import Final

from service.chargebee_sandbox.listing import Field, ListSpec
from service.chargebee_sandbox.payments import PAYMENT_METHODS
from service.chargebee_sandbox.resources import INVOICE_STATUSES, Customer, Invoice, Transaction

_STRING_IN = frozenset({"is", "is_not", "starts_with", "in", "not_in"})
_STRING_PRESENT_IN = _STRING_IN | {"is_present"}
_STRING = frozenset({"is", "is_not", "starts_with", "is_present"})
_ENUM = frozenset({"is", "is_not", "in", "not_in"})
_NUMBER = frozenset({"is", "is_not", "lt", "lte", "gt", "gte", "between"})
_TIMESTAMP = frozenset({"after", "before", "on", "between"})
_V1_NOTE = " in API v1 (the sandbox refuses v2-style filters on /api/v1; use /api/v2)"
_FOR_CUSTOMER_NOTE = (
    ": list invoices for a customer takes only limit and offset"
    " (to filter, GET /invoices?customer_id[is]=...)"
)

# The Transaction resource's own payment_method enum is wider than record_payment's; the sandbox
# only ever creates transactions with record_payment's methods, so those are the values it knows.
_TXN_METHODS = PAYMENT_METHODS["v1"] | PAYMENT_METHODS["v2"]
_TXN_TYPES = frozenset({"authorization", "payment", "refund", "payment_reversal"})
_TXN_STATUSES = frozenset(
    {"in_progress", "success", "voided", "failure", "timeout", "needs_attention", "late_failure"}
)

INVOICES_V2: Final = ListSpec[Invoice](
    fields={
        "id": Field(lambda i: i.id, _STRING_IN),
        "customer_id": Field(lambda i: i.customer_id, _STRING_IN),
        "status": Field(lambda i: i.status, _ENUM, "enum", INVOICE_STATUSES["v2"]),
        "date": Field(lambda i: i.date, _TIMESTAMP, "timestamp"),
        "total": Field(lambda i: i.total, _NUMBER, "number"),
        "amount_due": Field(lambda i: i.amount_due, _NUMBER, "number"),
    },
    sorts={"date": lambda i: i.date, "updated_at": lambda i: i.updated_at},
    flags=frozenset({"include_deleted"}),
)
INVOICES_V1: Final = ListSpec[Invoice](timestamps=frozenset({"paid_on_after"}), note=_V1_NOTE)
# GET /customers/{id}/invoices, v1 and v2 alike.
INVOICES_FOR_CUSTOMER: Final = ListSpec[Invoice](note=_FOR_CUSTOMER_NOTE)

TRANSACTIONS_V2: Final = ListSpec[Transaction](
    fields={
        "id": Field(lambda t: t.id, _STRING_IN),
        "customer_id": Field(lambda t: t.customer_id, _STRING_PRESENT_IN),
        "reference_number": Field(lambda t: t.reference_number, _STRING),
        "amount": Field(lambda t: t.amount, _NUMBER, "number"),
        "payment_method": Field(lambda t: t.payment_method, _ENUM, "enum", _TXN_METHODS),
        "type": Field(lambda t: "payment", _ENUM, "enum", _TXN_TYPES),
        "status": Field(
            lambda t: "success",
            _ENUM,
            "enum",
            _TXN_STATUSES,
        ),
    },
    sorts={"date": lambda t: t.date, "updated_at": lambda t: t.updated_at},
    flags=frozenset({"include_deleted"}),
)
TRANSACTIONS_V1: Final = ListSpec[Transaction](note=_V1_NOTE)

CUSTOMERS_V2: Final = ListSpec[Customer](
    fields={
        "id": Field(lambda c: c.id, _STRING_IN),
        "first_name": Field(lambda c: c.first_name, _STRING),
        "last_name": Field(lambda c: c.last_name, _STRING),
        "email": Field(lambda c: c.email, _STRING),
        "company": Field(lambda c: c.company, _STRING),
    },
    sorts={"created_at": lambda c: c.created_at, "updated_at": lambda c: c.updated_at},
    flags=frozenset({"include_deleted"}),
)
CUSTOMERS_V1: Final = ListSpec[Customer](note=_V1_NOTE)
