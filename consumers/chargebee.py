"""The Chargebee edge: invoices, transactions and `record_payment` (API v1 and v2) over one session.

Responses are parsed into typed models; every failure is raised as a class of `errors.py`, with
Chargebee's error body (`message`, `type`, `api_error_code`, `param`) kept on it. Every call
waits for a permit of the process-wide `RateLimiter` (unless its caller holds one: `permitted`);
`on_permit` runs once the permit is granted and before the request goes out (the worker renews
its ledger lease there). Redirects are never followed: a 3xx is a configuration fault, and aiohttp
would turn the POST into a GET.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlencode

import aiohttp
import orjson
from pydantic import BaseModel, ConfigDict, ValidationError

from consumers.errors import (
    ConfigurationFault,
    InvoiceNotFound,
    InvoiceNotPayable,
    PaymentError,
    RejectedByChargebee,
    TransientError,
    UnreadableAnswer,
)
from consumers.mapping import RecordPayment, form_fields
from consumers.rate_limit import RateLimiter
from service.metrics import Metrics
from service.settings import Settings

OnPermit = Callable[[], Awaitable[None]]
_AUTH_PROBE = "payrelay-credentials-check"  # an invoice id nobody has: 404 resource_not_found = accepted


class LinkedInvoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    invoice_id: str
    applied_amount: int = 0
    invoice_status: str | None = None


class LinkedPayment(BaseModel):
    """A transaction applied to an invoice: v2 `linked_payments[]`, v1 `linked_transactions[]`."""

    model_config = ConfigDict(extra="ignore")

    txn_id: str
    txn_amount: int | None = None
    txn_date: int | None = None
    txn_status: str | None = None
    txn_type: str | None = None  # v1 only


class Invoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    status: str
    amount_due: int = 0
    currency_code: str
    customer_id: str | None = None
    total: int | None = None  # v2
    amount: int | None = None  # v1's name for the total
    date: int | None = None  # v2
    start_date: int | None = None  # v1's name for the invoice date
    due_date: int | None = None
    linked_payments: list[LinkedPayment] = []
    linked_transactions: list[LinkedPayment] = []

    def payments(self) -> list[LinkedPayment]:
        return self.linked_payments or self.linked_transactions


class Transaction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    amount: int | None = None
    amount_unused: int | None = None
    currency_code: str | None = None
    status: str | None = None
    payment_method: str | None = None
    reference_number: str | None = None
    date: int | None = None
    linked_invoices: list[LinkedInvoice] = []

    def applied_to(self, invoice_id: str) -> LinkedInvoice | None:
        return next((link for link in self.linked_invoices if link.invoice_id == invoice_id), None)


_Model = TypeVar("_Model", bound=BaseModel)


class RecordPaymentResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    invoice: Invoice
    transaction: Transaction


class _InvoiceResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    invoice: Invoice


class _TransactionResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    transaction: Transaction


class _ListResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    list: list[dict[str, Any]]
    next_offset: str | None = None


@dataclass(frozen=True, slots=True)
class RecordResult:
    """A payment Chargebee holds: the answer to `record_payment`, or one found by reconciliation."""

    transaction_id: str
    invoice_id: str
    invoice_status: str
    amount_due: int  # the invoice's, after the payment
    currency: str | None
    replayed: bool  # Chargebee answered from its idempotency store
    excess: int = 0  # what Chargebee put in the customer's excess payments (minor units)
    customer_id: str | None = None  # the invoice's customer, when Chargebee said (the payer map learns it)


def excess_of(transaction: Transaction, invoice_id: str, amount: int) -> int:
    """How much of a payment went to excess payments rather than to the invoice."""
    if transaction.amount_unused is not None:
        return max(0, transaction.amount_unused)
    applied = transaction.applied_to(invoice_id)
    return max(0, amount - applied.applied_amount) if applied is not None else 0


def _retry_after(headers: Any) -> float | None:
    value = headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def _error_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {"message": raw[:500].decode(errors="replace")}
    return body if isinstance(body, dict) else {"message": str(body)[:500]}


def classify(
    status: int, body: dict[str, Any], retry_after: float | None, *, write: bool = True
) -> PaymentError:
    """Map a non-200 answer to the error tree (SPEC §4). Pure, so it is tested exhaustively.

    `write` says the request was a `record_payment`: then a 5xx may have recorded it.
    """
    code = body.get("api_error_code")
    message = f"Chargebee {status} {code or ''}: {body.get('message', '')}".strip()
    if status in (401, 403) or 300 <= status < 400:
        return ConfigurationFault(message, chargebee=body, status=status)
    if status == 429 or code == "lock_timeout":
        return TransientError(message, retry_after=retry_after, chargebee=body, status=status)
    if status >= 500:
        return TransientError(
            message, retry_after=retry_after, chargebee=body, status=status, maybe_recorded=write
        )
    if status == 404:
        if code == "resource_not_found":
            return InvoiceNotFound(message, chargebee=body, status=status)
        # site_not_found, a proxy's page, a wrong base path: every invoice would look missing.
        return ConfigurationFault(
            f"{message} (is PAYRELAY_CHARGEBEE_SITE or _BASE_URL right?)", chargebee=body, status=status
        )
    if status == 409 or code == "invalid_state_for_request":
        return InvoiceNotPayable(message, chargebee=body, status=status)
    if 400 <= status < 500:
        return RejectedByChargebee(message, chargebee=body, status=status)
    return TransientError(message, chargebee=body, status=status, maybe_recorded=write)


class ChargebeeClient:
    """The calls payrelay makes, over a session the caller owns."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        api_base: str,
        api_key: str,
        api_version: str,
        limiter: RateLimiter,
        metrics: Metrics,
        timeout: float = 30.0,
    ) -> None:
        self.session = session
        self.api_base = api_base.rstrip("/")
        self.api_version = api_version
        self.limiter = limiter
        self.metrics = metrics
        # HTTP Basic with the key as user name and no password, as Chargebee documents.
        self._authorization = "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    @classmethod
    def configured(
        cls, session: aiohttp.ClientSession, settings: Settings, metrics: Metrics
    ) -> ChargebeeClient:
        """The client `settings` describe, with a rate limiter of its own (one per process)."""
        chargebee = settings.chargebee
        return cls(
            session,
            api_base=chargebee.api_base,
            api_key=chargebee.api_key.get_secret_value(),
            api_version=chargebee.api_version,
            limiter=RateLimiter(chargebee.rate_limit, metrics),
            metrics=metrics,
            timeout=chargebee.timeout_seconds,
        )

    async def record_payment(
        self, request: RecordPayment, traceparent: str | None = None, on_permit: OnPermit | None = None
    ) -> RecordResult:
        url = f"{self.api_base}/invoices/{request.invoice_id}/record_payment"
        headers = {"chargebee-idempotency-key": request.idempotency_key, **request.headers}
        form = form_fields(request, self.api_version)
        status, response_headers, raw = await self._call(
            "POST", url, headers, traceparent, on_permit, form=form
        )
        if status != 200:
            raise classify(status, _error_body(raw), _retry_after(response_headers))
        try:
            parsed = RecordPaymentResponse.model_validate_json(raw)
        except ValidationError as exc:
            raise UnreadableAnswer(
                f"Chargebee answered 200 unreadably ({exc.error_count()} errors)"
            ) from None
        return RecordResult(
            transaction_id=parsed.transaction.id,
            invoice_id=parsed.invoice.id,
            invoice_status=parsed.invoice.status,
            amount_due=parsed.invoice.amount_due,
            currency=parsed.invoice.currency_code,
            replayed=response_headers.get("chargebee-idempotency-replayed") == "true",
            excess=excess_of(parsed.transaction, request.invoice_id, request.amount),
            customer_id=parsed.invoice.customer_id,
        )

    async def retrieve_invoice(
        self,
        invoice_id: str,
        traceparent: str | None = None,
        on_permit: OnPermit | None = None,
        *,
        permitted: bool = False,
    ) -> Invoice:
        """The invoice now; InvoiceNotFound if Chargebee has none of that id."""
        url = f"{self.api_base}/invoices/{invoice_id}"
        status, headers, raw = await self._call("GET", url, {}, traceparent, on_permit, permitted=permitted)
        if status != 200:
            raise classify(status, _error_body(raw), _retry_after(headers), write=False)
        return self._read(_InvoiceResponse, raw).invoice

    async def linked_like(
        self, request: RecordPayment, traceparent: str | None = None, on_permit: OnPermit | None = None
    ) -> tuple[Invoice, list[LinkedPayment]]:
        """The invoice now, and the successful payments linked to it with the request's amount and date.

        Read through the invoice's linked payments, which API v1 and v2 both offer (v1's
        transaction list takes no filters); `retrieve_transaction` tells the rest.
        """
        invoice = await self.retrieve_invoice(request.invoice_id, traceparent, on_permit)
        return invoice, [link for link in invoice.payments() if _may_be(link, request)]

    async def retrieve_transaction(
        self, transaction_id: str, traceparent: str | None = None, on_permit: OnPermit | None = None
    ) -> Transaction:
        url = f"{self.api_base}/transactions/{transaction_id}"
        status, headers, raw = await self._call("GET", url, {}, traceparent, on_permit)
        if status != 200:
            raise classify(status, _error_body(raw), _retry_after(headers), write=False)
        return self._read(_TransactionResponse, raw).transaction

    async def list_page(
        self,
        path: str,
        params: dict[str, str],
        traceparent: str | None = None,
        on_permit: OnPermit | None = None,
        *,
        permitted: bool = False,
    ) -> tuple[list[dict[str, Any]], str | None]:
        """One page of a list endpoint (`/customers`, `/invoices`...): its items and `next_offset`."""
        status, headers, raw = await self._call(
            "GET", f"{self.api_base}{path}", {}, traceparent, on_permit, params=params, permitted=permitted
        )
        if status != 200:
            raise classify(status, _error_body(raw), _retry_after(headers), write=False)
        page = self._read(_ListResponse, raw)
        return page.list, page.next_offset

    async def check_auth(self) -> None:
        """Raise ConfigurationFault if Chargebee refuses the key, TransientError if it cannot be reached.

        Retrieves an invoice that does not exist: a key that may record payments may read
        invoices (payrelay reads each one before paying it), and a 404 resource_not_found means
        the key, the site and the base path are all right.
        """
        status, headers, raw = await self._call(
            "GET", f"{self.api_base}/invoices/{_AUTH_PROBE}", {}, None, None
        )
        if status == 200:
            return
        error = classify(status, _error_body(raw), _retry_after(headers), write=False)
        if not isinstance(error, InvoiceNotFound):
            raise error

    @staticmethod
    def _read(model: type[_Model], raw: bytes) -> _Model:
        try:
            return model.model_validate_json(raw)
        except ValidationError as exc:
            raise TransientError(f"unreadable Chargebee response: {exc.error_count()} errors") from None

    async def _call(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        traceparent: str | None,
        on_permit: OnPermit | None,
        *,
        form: dict[str, str] | None = None,
        params: dict[str, str] | None = None,
        permitted: bool = False,
    ) -> tuple[int, Any, bytes]:
        """One request; `permitted`: the caller already holds this request's rate-limit permit."""
        headers = {**headers, "Authorization": self._authorization}
        body = None
        if form is not None:  # the bytes aiohttp's FormData would send, without its per-request machinery
            body = urlencode(form).encode("ascii")
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        if traceparent:
            headers["traceparent"] = traceparent
        if not permitted:
            await self.limiter.acquire()
        if on_permit is not None:
            await on_permit()
        write = method == "POST"
        started = time.perf_counter()
        status = "error"
        try:
            async with self.session.request(
                method,
                url,
                data=body,
                headers=headers,
                params=params,
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                raw = await response.read()
                status = str(response.status)
                return response.status, response.headers, raw
        except TimeoutError:
            status = "timeout"
            raise TransientError("Chargebee did not answer in time", maybe_recorded=write) from None
        except aiohttp.ClientConnectorError as exc:
            # Never connected: the request did not go out.
            raise TransientError(f"cannot reach Chargebee: {type(exc).__name__}") from None
        except aiohttp.ClientError as exc:
            # Connected, then lost: the request may have been read and acted on.
            raise TransientError(
                f"lost the connection to Chargebee: {type(exc).__name__}", maybe_recorded=write
            ) from None
        finally:
            self.metrics.chargebee_duration.labels(status).observe(time.perf_counter() - started)


def _may_be(link: LinkedPayment, request: RecordPayment) -> bool:
    return (
        link.txn_status in (None, "success")
        and link.txn_type in (None, "payment")
        and link.txn_amount == request.amount
        and link.txn_date in (None, request.paid_at)
    )


def is_the_payment(transaction: Transaction, request: RecordPayment) -> bool:
    """A successful payment of exactly this request: invoice, amount, reference, method and date."""
    return (
        transaction.status in (None, "success")
        and transaction.applied_to(request.invoice_id) is not None
        and transaction.amount == request.amount
        and transaction.reference_number == request.reference_number
        and transaction.payment_method == request.payment_method
        and transaction.date in (None, request.paid_at)
    )
