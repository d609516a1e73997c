"""The sandbox admin request bodies (a trust boundary): invoices, customers, faults, the api key."""

from __future__ import annotations

from typing import Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.chargebee_sandbox.replies import STATUS_CODES, Reply, error_reply
from service.chargebee_sandbox.resources import InvoiceStatus

_ID = r"^[^/\s?#]+$"  # an id must fit in one URL path segment

# The API operations the sandbox serves, as the request log names them.
OPERATIONS: Final = (
    "record_payment",
    "retrieve_invoice",
    "list_invoices",
    "list_transactions",
    "retrieve_transaction",
    "retrieve_customer",
    "list_customers",
    "invoices_for_customer",
)
FaultOperation = Literal[
    "record_payment",
    "retrieve_invoice",
    "list_invoices",
    "invoices_for_customer",
    "list_transactions",
    "retrieve_transaction",
    "customers",
    "reads",
    "any",
]
_COVERS: Final[dict[str, frozenset[str]]] = {
    "record_payment": frozenset({"record_payment"}),
    "retrieve_invoice": frozenset({"retrieve_invoice"}),
    "list_invoices": frozenset({"list_invoices"}),
    "invoices_for_customer": frozenset({"invoices_for_customer"}),
    "list_transactions": frozenset({"list_transactions"}),
    "retrieve_transaction": frozenset({"retrieve_transaction"}),
    "customers": frozenset({"retrieve_customer", "list_customers"}),
    "reads": frozenset(OPERATIONS) - {"record_payment"},
    "any": frozenset(OPERATIONS),
}
_NAMES_AN_INVOICE: Final = frozenset({"record_payment", "retrieve_invoice"})


class InvoiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(min_length=1, max_length=50, pattern=_ID)
    total: int = Field(ge=0)
    amount_due: int | None = Field(default=None, ge=0)
    currency_code: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    status: InvoiceStatus = "payment_due"
    customer_id: str | None = Field(default=None, min_length=1, max_length=50, pattern=_ID)
    date: int | None = Field(default=None, ge=0)  # unix seconds; default 20 days ago

    @model_validator(mode="after")
    def _due_within_total(self) -> Self:
        if self.amount_due is not None and self.amount_due > self.total:
            raise ValueError("amount_due cannot exceed total")
        return self


class BulkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    prefix: str = Field(min_length=1, max_length=40, pattern=_ID)
    count: int = Field(ge=1, le=1_000_000)
    total: int = Field(default=1000, ge=1)
    currency_code: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    status: InvoiceStatus = "payment_due"
    # One customer for them all (created if missing); by default each has its own cust_<id>.
    customer_id: str | None = Field(default=None, min_length=1, max_length=50, pattern=_ID)


class CustomerSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(min_length=1, max_length=50, pattern=_ID)
    first_name: str | None = Field(default=None, min_length=1, max_length=150)
    last_name: str | None = Field(default=None, min_length=1, max_length=150)
    company: str | None = Field(default=None, min_length=1, max_length=250)
    email: str | None = Field(default=None, min_length=3, max_length=70, pattern=r"^[^@\s]+@[^@\s]+$")


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    # 3xx: a redirect (Location: /moved), as a misconfigured proxy or base path would answer.
    status: int | None = Field(default=None, ge=300, le=599)
    count: int = Field(default=1, ge=1)
    operation: FaultOperation = "record_payment"
    invoice_id: str | None = None
    api_error_code: str | None = None
    message: str | None = None
    retry_after: int | None = Field(default=None, ge=0)
    latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    disconnect: bool = False
    # 200 with a body that is not Chargebee's JSON (a proxy's page, a truncated answer).
    unreadable: bool = False
    after_commit: bool = False

    @model_validator(mode="after")
    def _does_something(self) -> Self:
        if self.status is None and not self.disconnect and not self.unreadable and not self.latency_ms:
            raise ValueError("a fault needs status, latency_ms, disconnect or unreadable")
        if sum((self.status is not None, self.disconnect, self.unreadable)) > 1:
            raise ValueError("status, disconnect and unreadable exclude each other")
        if self.after_commit and self.operation != "record_payment":
            raise ValueError("after_commit applies to record_payment only: reads commit nothing")
        if self.invoice_id is not None and not _COVERS[self.operation] & _NAMES_AN_INVOICE:
            raise ValueError(f"{self.operation} calls name no invoice, so invoice_id would never match")
        return self

    def matches(self, operation: str, invoice_id: str | None) -> bool:
        """Whether this fault applies to a call of `operation` (naming `invoice_id`, if any)."""
        if operation not in _COVERS[self.operation]:
            return False
        return self.invoice_id is None or self.invoice_id == invoice_id

    @property
    def breaks(self) -> bool:
        """Whether the caller gets something other than the normal answer."""
        return self.status is not None or self.disconnect or self.unreadable

    def reply(self) -> Reply:
        if self.unreadable:
            return Reply(200, b"<html><body>Service temporarily unavailable</body></html>")
        if self.status is None:
            return Reply(0)
        if self.status < 400:
            return Reply(self.status, b"", {"Location": "/moved"})
        code = self.api_error_code or STATUS_CODES.get(self.status) or _fallback_code(self.status)
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return error_reply(self.status, code, self.message, headers=headers)


def _fallback_code(status: int) -> str:
    return "internal_error" if status >= 500 else "invalid_request"


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    api_key: str = Field(min_length=1, max_length=200)
