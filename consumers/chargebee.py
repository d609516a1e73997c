"""The Chargebee edge: `record_payment` (API v1 and v2) over one pooled aiohttp session.

Responses are parsed into typed models; every failure is raised as a class of `errors.py`, with
Chargebee's error body (`message`, `type`, `api_error_code`, `param`) kept on it. A process-wide
`RateLimiter` spaces requests so the configured requests-per-minute is never exceeded.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Any

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
)
from consumers.mapping import RecordPayment, form_fields
from service.metrics import Metrics


class RateLimiter:
    """Evenly spaced permits: at most `per_minute` requests in any minute, for every caller.

    Spacing (rather than a bucket that refills) means no burst can ever exceed the limit, which
    is what Chargebee counts. `per_minute == 0` disables it.
    """

    def __init__(self, per_minute: int, metrics: Metrics | None = None) -> None:
        # A hair over 60/N so that clock granularity can never fit N+1 requests in a minute.
        self.interval = 60.0 / per_minute * 1.001 if per_minute > 0 else 0.0
        self._last = -float("inf")
        self._lock = asyncio.Lock()
        self._metrics = metrics

    async def acquire(self) -> None:
        if not self.interval:
            return
        started = time.monotonic()
        # One caller at a time, in arrival order; the next permit is spaced from the moment this
        # one is actually granted, so a timer that fires late can never bunch two permits up.
        async with self._lock:
            # A deadline, not an event to wait for: loop because sleep may wake a hair early.
            while (wait := self._last + self.interval - time.monotonic()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            self._last = time.monotonic()
        if self._metrics is not None:
            self._metrics.rate_limit_wait.observe(self._last - started)


class Invoice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    status: str
    amount_due: int = 0
    amount_paid: int = 0
    total: int = 0
    currency_code: str | None = None


class Transaction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str
    amount: int | None = None
    currency_code: str | None = None
    status: str | None = None


class RecordPaymentResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    invoice: Invoice
    transaction: Transaction


@dataclass(frozen=True, slots=True)
class RecordResult:
    """The outcome of a successful `record_payment`."""

    transaction_id: str
    invoice_id: str
    invoice_status: str
    amount_due: int
    currency: str | None
    replayed: bool


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


def classify(status: int, body: dict[str, Any], retry_after: float | None) -> PaymentError:
    """Map a non-200 answer to the error tree (SPEC §4). Pure, so it is tested exhaustively."""
    code = body.get("api_error_code")
    message = f"Chargebee {status} {code or ''}: {body.get('message', '')}".strip()
    if status in (401, 403):
        return ConfigurationFault(message, chargebee=body, status=status)
    if status == 429 or code == "lock_timeout" or status >= 500:
        return TransientError(message, retry_after=retry_after, chargebee=body, status=status)
    if status == 404:
        return InvoiceNotFound(message, chargebee=body, status=status)
    if status == 409 or code == "invalid_state_for_request":
        return InvoiceNotPayable(message, chargebee=body, status=status)
    if 400 <= status < 500:
        return RejectedByChargebee(message, chargebee=body, status=status)
    return TransientError(message, chargebee=body, status=status)


class ChargebeeClient:
    """record_payment and a credentials check, over a session the caller owns."""

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

    async def record_payment(self, request: RecordPayment, traceparent: str | None = None) -> RecordResult:
        url = f"{self.api_base}/invoices/{request.invoice_id}/record_payment"
        headers = {"chargebee-idempotency-key": request.idempotency_key, **request.headers}
        if traceparent:
            headers["traceparent"] = traceparent
        status, response_headers, raw = await self._call(
            "POST", url, headers, form_fields(request, self.api_version)
        )
        if status != 200:
            raise classify(status, _error_body(raw), _retry_after(response_headers))
        try:
            parsed = RecordPaymentResponse.model_validate_json(raw)
        except ValidationError as exc:
            # Chargebee said 200 but we cannot read it: the payment may exist. A retry with the
            # same idempotency key gets the same answer, never a second payment.
            raise TransientError(f"unreadable Chargebee response: {exc.error_count()} errors") from None
        return RecordResult(
            transaction_id=parsed.transaction.id,
            invoice_id=parsed.invoice.id,
            invoice_status=parsed.invoice.status,
            amount_due=parsed.invoice.amount_due,
            currency=parsed.invoice.currency_code or parsed.transaction.currency_code,
            replayed=response_headers.get("chargebee-idempotency-replayed") == "true",
        )

    async def check_auth(self) -> None:
        """Raise ConfigurationFault if the key is refused, TransientError if Chargebee is unreachable."""
        status, headers, raw = await self._call(
            "GET", f"{self.api_base}/invoices", {}, None, params={"limit": "1"}
        )
        if status != 200:
            raise classify(status, _error_body(raw), _retry_after(headers))

    async def _call(
        self,
        method: str,
        url: str,
        headers: dict[str, str],
        form: dict[str, str] | None,
        params: dict[str, str] | None = None,
    ) -> tuple[int, Any, bytes]:
        headers = {**headers, "Authorization": self._authorization}
        await self.limiter.acquire()
        started = time.perf_counter()
        status = "error"
        try:
            async with self.session.request(
                method, url, data=form, headers=headers, params=params, timeout=self._timeout
            ) as response:
                raw = await response.read()
                status = str(response.status)
                return response.status, response.headers, raw
        except TimeoutError:
            status = "timeout"
            raise TransientError("Chargebee did not answer in time") from None
        except aiohttp.ClientError as exc:
            raise TransientError(f"cannot reach Chargebee: {type(exc).__name__}") from None
        finally:
            self.metrics.chargebee_duration.labels(status).observe(time.perf_counter() - started)
