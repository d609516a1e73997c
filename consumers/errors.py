"""What can go wrong while recording a payment, and what the worker loop does about it.

```
PaymentError
├── PermanentError (reason)        the message's fault: dead-letter it with `reason`
│   ├── InvalidEvent               invalid_event          the body breaks the contract
│   ├── UnmatchedInvoice           unmatched_invoice      no invoice id found
│   ├── InvoiceNotFound            invoice_not_found      Chargebee 404 resource_not_found
│   ├── InvoiceNotPayable          invoice_not_payable    Chargebee 409 invalid_state_for_request
│   └── RejectedByChargebee        rejected_by_chargebee  any other Chargebee 400/422
├── TransientError (retry_after)   nobody's fault: retry later, then retries_exhausted
│                                  429 (also lock_timeout), 5xx, timeouts, connection errors
└── ConfigurationFault             our fault: 401/403 — pause consuming, dead-letter nothing
```
Handlers raise; only the worker loop maps a class to ack, retry or dead-letter.
"""

from __future__ import annotations

from typing import Any


class PaymentError(Exception):
    """Base class; `chargebee` holds Chargebee's error body when there was one."""

    def __init__(
        self, message: str, *, chargebee: dict[str, Any] | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        self.chargebee = chargebee
        self.status = status


class PermanentError(PaymentError):
    reason = "rejected_by_chargebee"


class InvalidEvent(PermanentError):
    reason = "invalid_event"


class UnmatchedInvoice(PermanentError):
    reason = "unmatched_invoice"


class InvoiceNotFound(PermanentError):
    reason = "invoice_not_found"


class InvoiceNotPayable(PermanentError):
    reason = "invoice_not_payable"


class RejectedByChargebee(PermanentError):
    reason = "rejected_by_chargebee"


class TransientError(PaymentError):
    """Worth retrying; `retry_after` is the server's hint in seconds, if it gave one."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        chargebee: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message, chargebee=chargebee, status=status)
        self.retry_after = retry_after


class ConfigurationFault(PaymentError):
    """Chargebee refuses our credentials (401/403); no message is at fault."""
