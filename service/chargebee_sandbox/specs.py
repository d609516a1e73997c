"""The sandbox admin request bodies (a trust boundary): invoices, bulk invoices, faults, the api key."""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from service.chargebee_sandbox.invoices import InvoiceStatus
from service.chargebee_sandbox.replies import STATUS_CODES, Reply, error_reply

_ID = r"^[^/\s?#]+$"  # an invoice id must fit in one URL path segment


class InvoiceSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    id: str = Field(min_length=1, max_length=50, pattern=_ID)
    total: int = Field(ge=0)
    amount_due: int | None = Field(default=None, ge=0)
    currency_code: str = Field(default="USD", pattern=r"^[A-Z]{3}$")
    status: InvoiceStatus = "payment_due"
    customer_id: str | None = Field(default=None, min_length=1, max_length=50)

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


class FaultSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    status: int | None = Field(default=None, ge=400, le=599)
    count: int = Field(default=1, ge=1)
    invoice_id: str | None = None
    api_error_code: str | None = None
    message: str | None = None
    retry_after: int | None = Field(default=None, ge=0)
    latency_ms: float = Field(default=0.0, ge=0, le=600_000)
    disconnect: bool = False
    after_commit: bool = False

    @model_validator(mode="after")
    def _does_something(self) -> Self:
        if self.status is None and not self.disconnect and not self.latency_ms:
            raise ValueError("a fault needs status, latency_ms or disconnect")
        if self.status is not None and self.disconnect:
            raise ValueError("status and disconnect exclude each other")
        return self

    @property
    def breaks(self) -> bool:
        """Whether the caller gets something other than the normal answer."""
        return self.status is not None or self.disconnect

    def reply(self) -> Reply:
        if self.status is None:
            return Reply(0)
        code = self.api_error_code or STATUS_CODES.get(self.status) or _fallback_code(self.status)
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return error_reply(self.status, code, self.message, headers=headers)


def _fallback_code(status: int) -> str:
    return "internal_error" if status >= 500 else "invalid_request"


class ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    api_key: str = Field(min_length=1, max_length=200)
