"""What can go wrong while recording a payment, and what the worker loop does about it.

```
PaymentError
├── PermanentError (reason)        the message's fault: dead-letter it with `reason`
│   ├── InvalidEvent               invalid_event          the body breaks the contract
│   ├── UnmatchedInvoice           unmatched_invoice      no invoice id found
│   ├── InvoiceNotFound            invoice_not_found      Chargebee 404 resource_not_found
│   ├── InvoiceNotPayable          invoice_not_payable    the invoice's status, or Chargebee 409
│   ├── CurrencyMismatch           currency_mismatch      the payment is not in the invoice's currency
│   ├── Overpayment                overpayment            above amount_due, with overpayment = "review"
│   │                                                     (sent to review, not dead-lettered)
│   ├── OutcomeUnknown             outcome_unknown        an unreadable 200, and the payment not found
│   └── RejectedByChargebee        rejected_by_chargebee  any other Chargebee 400/422
├── TransientError (retry_after)   nobody's fault: retry later, then retries_exhausted
│   │                              429 (also lock_timeout), 5xx, timeouts, connection errors;
│   │                              `maybe_recorded` when Chargebee may have recorded it anyway
│   └── UnreadableAnswer           a 200 that cannot be read: reconciled at once
├── NeedsReview                    cash application cannot decide: a person will (SPEC §10)
├── Busy                           another delivery holds the payment's lease: look again soon
└── ConfigurationFault             our fault: 401/403, a redirect, a 404 that is not about the
                                   invoice — pause consuming, dead-letter nothing
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


class CurrencyMismatch(PermanentError):
    reason = "currency_mismatch"


class Overpayment(PermanentError):
    reason = "overpayment"


class OutcomeUnknown(PermanentError):
    reason = "outcome_unknown"


class RejectedByChargebee(PermanentError):
    reason = "rejected_by_chargebee"


class TransientError(PaymentError):
    """Worth retrying; `retry_after` is the server's hint in seconds, if it gave one.

    `maybe_recorded` marks a `record_payment` whose result is unknown (a timeout, a connection
    lost after the request went out, a 5xx): Chargebee may have recorded the payment, so no later
    attempt sends it again before looking for it.
    """

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        chargebee: dict[str, Any] | None = None,
        status: int | None = None,
        maybe_recorded: bool = False,
    ) -> None:
        super().__init__(message, chargebee=chargebee, status=status)
        self.retry_after = retry_after
        self.maybe_recorded = maybe_recorded


class UnreadableAnswer(TransientError):
    """Chargebee answered 200 to `record_payment` and the body could not be read: maybe recorded."""

    def __init__(self, message: str) -> None:
        super().__init__(message, status=200, maybe_recorded=True)


class NeedsReview(PaymentError):
    """Nobody's fault: the payment waits in review for a person, who decides where it goes."""

    def __init__(
        self,
        message: str,
        *,
        why: str,
        suggestions: tuple[Any, ...] = (),
        customer_id: str | None = None,
        named: tuple[Any, ...] = (),
    ) -> None:
        super().__init__(message)
        self.why = why
        self.suggestions = suggestions  # service.review.model.Suggestion
        self.customer_id = customer_id
        self.named = named  # service.review.model.Allocation: the event's own invoices


class Busy(PaymentError):
    """Another delivery holds the payment's lease (or took it over): nothing was attempted."""


class ConfigurationFault(PaymentError):
    """Chargebee refuses our credentials, redirects, or is not where we point: no message is at fault."""
