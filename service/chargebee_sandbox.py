"""The local Chargebee stand-in (like stripe-mock): invoices, `record_payment`, idempotency, faults.

Faithful to Chargebee's documented API, not to payrelay's client. Everything lives in memory in one
`Sandbox` owned by the app (`app.state.sandbox`); one event loop, so a check and the update it guards
never have an `await` between them.

API, v1 and v2 (HTTP Basic: username = the API key; the password is not checked):
  POST /api/{v1|v2}/invoices/{id}/record_payment   form-encoded
  GET  /api/{v1|v2}/invoices/{id}                   {"invoice"}
  GET  /api/{v1|v2}/invoices?limit=10&offset=       {"list": [{"invoice"}], "next_offset"?}

record_payment checks, in order: API version (404), authentication (401 api_authentication_failed),
rate limit (429 api_request_limit_exceeded + Retry-After), configured latency, injected faults,
then `chargebee-idempotency-key` (replay with `chargebee-idempotency-replayed: true`, or 422 when the
key came with another request), parameters (400 param_wrong_value with `param`), the invoice
(404 resource_not_found), its status (409 invalid_state_for_request unless payment_due/not_paid)
and the amount against amount_due (400). Responses from the idempotency step on are stored under
the key for 30 minutes, errors included; 401, 429 and injected faults are not, because Chargebee
never processed those requests. Error bodies carry `message`, `type` (only for the invalid_request /
payment / operation_failed groups, as documented), `api_error_code`, `param`, and the deprecated
`error_code`, `error_msg`, `error_param`, `http_status_code` that live responses still include.

Sandbox admin (no auth, JSON; errors are problem+json):
  GET    /sandbox/health
  POST   /sandbox/invoices        {"id", "total", "amount_due"?, "currency_code": "USD",
                                   "status": "payment_due", "customer_id"?}
                                  -> 201 {"invoice"} (v2 shape); 409 if the id exists
  POST   /sandbox/invoices/bulk   {"prefix", "count", "total": 1000, "currency_code": "USD",
                                   "status": "payment_due"}
                                  -> 201 {"created", "first", "last"}: ids prefix1..prefixN; 409 if any exists
  GET    /sandbox/requests[?invoice_id=]  -> {"requests": [{"invoice_id", "api_version", "form", "headers",
                                   "status", "replayed", "at"}], "dropped": n}; status 0 = connection dropped
  DELETE /sandbox/requests        -> {"cleared": n}
  POST   /sandbox/faults          {"status"?, "count": 1, "invoice_id"?, "api_error_code"?, "message"?,
                                   "retry_after"?, "latency_ms"?, "disconnect"?, "after_commit"?} -> 201
  GET    /sandbox/faults          -> {"faults": [{...spec, "remaining"}]}
  DELETE /sandbox/faults          -> {"cleared": n}
  PUT    /sandbox/api-key         {"api_key"} -> 204
  POST   /sandbox/reset           -> {"invoices": n}: starting state again (config's key, seeds, empty logs)

A fault applies to the next `count` record_payment calls (for `invoice_id` only, if given): it
sleeps `latency_ms`, then answers `status` with a Chargebee error body (or drops the connection
without a byte when `disconnect`), without recording. Latency alone delays a normal call. With
`after_commit` the payment is recorded and stored under the idempotency key first, and only the
answer is lost: the "did Chargebee get it?" case.

Seeded invoices (SandboxConfig.seed), customer `cust_<invoice id>`:
  INV-1001..INV-1010  USD payment_due, totals 10000 12550 19999 25000 30000 45000 50000 64990 80000 100000
  INV-2001 JPY 150000 payment_due (exponent 0)     INV-3001 BHD 125500 payment_due (exponent 3)
  INV-4001 USD 20000 not_paid
  INV-9001 USD 5000 paid   INV-9002 USD 7500 voided   INV-9003 USD 9000 pending   INV-9004 USD 12000 posted
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, Self, TypeVar
from urllib.parse import parse_qsl

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from service.problems import problem

Json = dict[str, Any]
InvoiceStatus = Literal["payment_due", "not_paid", "paid", "voided", "pending", "posted"]

IDEMPOTENCY_HEADER: Final = "chargebee-idempotency-key"
REPLAYED_HEADER: Final = "chargebee-idempotency-replayed"
IDEMPOTENCY_WINDOW_SECONDS: Final = 30 * 60
RATE_WINDOW_SECONDS: Final = 60.0
API_VERSIONS: Final = frozenset({"v1", "v2"})
PAYABLE: Final = frozenset({"payment_due", "not_paid"})
PAYMENT_METHODS: Final = frozenset(
    "card cash check chargeback bank_transfer amazon_payments paypal_express_checkout direct_debit "
    "alipay unionpay apple_pay wechat_pay ach_credit sepa_credit ideal google_pay sofort bancontact "
    "giropay dotpay upi netbanking_emandates custom boleto venmo pay_to faster_payments "
    "sepa_instant_transfer automated_bank_transfer klarna_pay_now online_banking_poland other".split()
)
_MAX_REFERENCE = 100
_MAX_IDEMPOTENCY_KEY = 100  # documented limit: "Idempotency keys can be up to 100 characters"
_JSON: Final = "application/json"
_DAY = 86_400

# api_error_code -> (type, message). Only the invalid_request / payment / operation_failed groups
# carry a `type`; authentication, rate-limit and server errors have none.
_ERRORS: Final[Mapping[str, tuple[str | None, str]]] = {
    "api_authentication_failed": (None, "Sorry, authentication failed. Invalid api key"),
    "api_authorization_failed": (None, "Sorry, the api key is not authorized for this operation"),
    "resource_not_found": ("invalid_request", "Sorry, we couldn't find that resource"),
    "invalid_state_for_request": (
        "invalid_request",
        "The resource is not in a state that allows this request",
    ),
    "param_wrong_value": ("invalid_request", "A parameter has a wrong value"),
    "invalid_request": ("invalid_request", "The request is not valid"),
    "http_method_not_supported": (None, "Sorry, the HTTP method is not supported for this URL"),
    "api_request_limit_exceeded": (
        None,
        "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits. "
        "Please try after some time.",
    ),
    "lock_timeout": (None, "Another request is updating this resource; please retry"),
    "payment_processing_failed": ("payment", "The payment could not be processed"),
    "internal_error": (None, "Sorry, something went wrong when trying to process the request"),
    "internal_temporary_error": (None, "Sorry, a temporary error occurred; please retry"),
    "site_not_ready": (None, "The site is not ready to accept API requests; please retry later"),
}
_STATUS_CODES: Final[Mapping[int, str]] = {
    400: "invalid_request",
    401: "api_authentication_failed",
    403: "api_authorization_failed",
    404: "resource_not_found",
    405: "http_method_not_supported",
    409: "invalid_state_for_request",
    422: "invalid_request",
    429: "api_request_limit_exceeded",
    500: "internal_error",
    502: "internal_temporary_error",
    503: "site_not_ready",
    504: "internal_temporary_error",
}


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; built by the CLI (`payrelay sandbox`, `payrelay dev`) or by tests."""

    api_key: str = "test_sandbox_key"  # HTTP Basic username; wrong or missing -> 401
    latency_ms: float = 0.0  # added to every API call
    rate_limit: int = 0  # API requests per rolling minute per api key; 0 = unlimited
    seed: bool = True  # create the demo invoices
    clock: Callable[[], float] = field(default=time.time)  # wall clock; tests inject one to skip 30 minutes
    request_log_limit: int = 100_000  # newest record_payment requests kept for GET /sandbox/requests


# --- replies and Chargebee errors ------------------------------------------------------------------


class ConnectionDropped(RuntimeError):
    """Raised in-process (httpx ASGITransport, TestClient), where a real server closes the socket."""


class _DroppedConnection(Response):
    """Ends the exchange without a single byte, like a proxy or a server dying mid-request."""

    def __init__(self) -> None:
        super().__init__(status_code=0)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            # ASGI has no "abort". uvicorn marks the response started, cannot encode status 0 and
            # writes nothing; returning without a body then makes it close the transport.
            await send({"type": "http.response.start", "status": 0, "headers": []})
        except Exception:  # the server refused the status line: nothing was sent
            return
        raise ConnectionDropped("injected fault: the sandbox dropped this connection")


@dataclass(frozen=True, slots=True)
class Reply:
    """What an API call answers; status 0 drops the connection instead."""

    status: int
    body: bytes = b""
    headers: Mapping[str, str] | None = None
    replayed: bool = False

    def response(self) -> Response:
        if self.status == 0:
            return _DroppedConnection()
        return Response(self.body, status_code=self.status, media_type=_JSON, headers=self.headers)


def json_reply(status: int, body: Json, headers: Mapping[str, str] | None = None) -> Reply:
    return Reply(status, orjson.dumps(body), headers)


def error_body(
    status: int,
    code: str,
    message: str | None = None,
    *,
    param: str | None = None,
    error_code: str | None = None,
) -> Json:
    """A Chargebee error body; parameter errors read "param : message" as Chargebee's do."""
    type_, default = _ERRORS.get(code, (None, "Sorry, the request failed"))
    text = message or default
    body: Json = {"message": f"{param} : {text}" if param else text}
    if type_:
        body["type"] = type_
    body["api_error_code"] = code
    if param:
        body["param"] = param
    # Deprecated attributes that live responses still carry; older clients read them.
    body["error_code"] = error_code or code
    body["error_msg"] = text
    if param:
        body["error_param"] = param
    body["http_status_code"] = status
    return body


def error_reply(
    status: int,
    code: str,
    message: str | None = None,
    *,
    param: str | None = None,
    error_code: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> Reply:
    return json_reply(status, error_body(status, code, message, param=param, error_code=error_code), headers)


def _invoice_not_found(invoice_id: str) -> Reply:
    return error_reply(404, "resource_not_found", f"Sorry, we couldn't find the invoice {invoice_id}")


class ParamError(Exception):
    """A record_payment parameter Chargebee would reject with 400 param_wrong_value."""

    def __init__(self, param: str, message: str, error_code: str = "param_wrong_value") -> None:
        super().__init__(f"{param} : {message}")
        self.param, self.message, self.error_code = param, message, error_code

    def reply(self) -> Reply:
        return error_reply(
            400, "param_wrong_value", self.message, param=self.param, error_code=self.error_code
        )


# --- record_payment parameters (pure) --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Names:
    amount: str
    payment_method: str
    reference_number: str
    date: str
    note: str


_NAMES: Final[Mapping[str, _Names]] = {
    "v1": _Names("amount", "payment_method", "reference_number", "paid_at", "memo"),
    "v2": _Names(
        "transaction[amount]",
        "transaction[payment_method]",
        "transaction[reference_number]",
        "transaction[date]",
        "comment",
    ),
}


@dataclass(frozen=True, slots=True)
class Payment:
    amount: int | None  # None: the whole amount due
    payment_method: str
    reference_number: str | None
    date: int
    note: str | None


def _integer(text: str) -> int | None:
    """Chargebee integers: optional minus and ASCII digits, within a signed 64-bit long."""
    digits = text[1:] if text[:1] == "-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    return int(text)


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise ParamError(name, "cannot be blank", "param_not_present")
    return value


def _required_int(form: Mapping[str, str], name: str) -> int:
    text = _required(form, name)
    value = _integer(text)
    if value is None:
        raise ParamError(name, f"invalid integer value '{text}'")
    return value


def _optional_int(form: Mapping[str, str], name: str) -> int | None:
    return _required_int(form, name) if form.get(name) else None


def parse_payment(form: Mapping[str, str], version: str) -> Payment:
    """The payment a record_payment form asks for, or `ParamError` for the first bad parameter."""
    names = _NAMES[version]
    method = _required(form, names.payment_method)
    if method not in PAYMENT_METHODS:
        raise ParamError(names.payment_method, f"invalid value '{method}'")
    date = _required_int(form, names.date)
    amount = _optional_int(form, names.amount)
    if amount is not None and amount <= 0:
        raise ParamError(names.amount, "should be greater than 0")
    reference = form.get(names.reference_number) or None
    if reference is not None and len(reference) > _MAX_REFERENCE:
        raise ParamError(names.reference_number, f"cannot be more than {_MAX_REFERENCE} characters")
    return Payment(amount, method, reference, date, form.get(names.note) or None)


# --- invoices and transactions -----------------------------------------------------------------------


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


# --- admin bodies (trust boundary) ----------------------------------------------------------------

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
        code = self.api_error_code or _STATUS_CODES.get(self.status) or _fallback_code(self.status)
        headers = {"Retry-After": str(self.retry_after)} if self.retry_after is not None else None
        return error_reply(self.status, code, self.message, headers=headers)


def _fallback_code(status: int) -> str:
    return "internal_error" if status >= 500 else "invalid_request"


@dataclass(slots=True)
class _Armed:
    spec: FaultSpec
    remaining: int


@dataclass(frozen=True, slots=True)
class _Stored:
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    reply: Reply
    at: float


_SEEDS: Final[tuple[tuple[str, str, int, InvoiceStatus], ...]] = (
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


# --- the state ------------------------------------------------------------------------------------


def _basic(api_key: str) -> str:
    return "Basic " + base64.b64encode(f"{api_key}:".encode()).decode()


class Sandbox:
    """All sandbox state and the rules that change it; one per app, used from one event loop."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.invoices: dict[str, Invoice] = {}
        self.requests: deque[Json] = deque(maxlen=config.request_log_limit or None)
        self.dropped = 0
        self.faults: list[_Armed] = []
        self._idempotency: dict[str, _Stored] = {}  # insertion order is age order: expiry pops the front
        self._calls: dict[str, deque[float]] = {}
        self._last_version = 0
        self.reset()

    def reset(self) -> None:
        self.set_api_key(self.config.api_key)
        self.invoices.clear()
        self.requests.clear()
        self.dropped = 0
        self.faults.clear()
        self._idempotency.clear()
        self._calls.clear()
        if self.config.seed:
            for invoice_id, currency, total, status in _SEEDS:
                self.add_invoice(
                    InvoiceSpec(id=invoice_id, total=total, currency_code=currency, status=status)
                )

    def set_api_key(self, api_key: str) -> None:
        self.api_key = api_key
        self._expected_auth = _basic(api_key)

    # gate: authentication and rate limit

    def authenticates(self, authorization: str | None) -> bool:
        if authorization == self._expected_auth:  # the common case, without decoding
            return True
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            username = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")[0]
        except (binascii.Error, UnicodeDecodeError):
            return False
        return bool(username) and secrets.compare_digest(username, self.api_key)

    def admit(self) -> int | None:
        """None if another API request fits in the rolling minute, else seconds until one does."""
        limit = self.config.rate_limit
        if limit <= 0:
            return None
        now = self.clock()
        window = self._calls.setdefault(self.api_key, deque())
        while window and window[0] <= now - RATE_WINDOW_SECONDS:
            window.popleft()
        if len(window) >= limit:
            return max(1, math.ceil(window[0] + RATE_WINDOW_SECONDS - now))
        window.append(now)
        return None

    def gate(self, version: str, authorization: str | None) -> Reply | None:
        if version not in API_VERSIONS:
            return error_reply(404, "resource_not_found", f"Sorry, API version {version!r} does not exist")
        if not self.authenticates(authorization):
            return error_reply(401, "api_authentication_failed")
        retry_after = self.admit()
        if retry_after is not None:
            return error_reply(429, "api_request_limit_exceeded", headers={"Retry-After": str(retry_after)})
        return None

    # faults

    def add_fault(self, spec: FaultSpec) -> None:
        self.faults.append(_Armed(spec, spec.count))

    def take_fault(self, invoice_id: str) -> FaultSpec | None:
        for armed in self.faults:
            if armed.spec.invoice_id in (None, invoice_id):
                armed.remaining -= 1
                if armed.remaining == 0:
                    self.faults.remove(armed)
                return armed.spec
        return None

    # record_payment: everything below runs without an await

    def record(self, invoice_id: str, version: str, form: Mapping[str, str], key: str | None) -> Reply:
        """Replays, refuses or processes one record_payment call, storing the answer under `key`."""
        if key is None:
            return self._process(invoice_id, version, form)
        if len(key) > _MAX_IDEMPOTENCY_KEY:
            message = f"cannot be more than {_MAX_IDEMPOTENCY_KEY} characters"
            return error_reply(400, "param_wrong_value", message, param=IDEMPOTENCY_HEADER)
        fingerprint = (version, invoice_id, tuple(sorted(form.items())))
        stored = self._remembered(key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                message = f"The idempotency key {key!r} was already used with a different request"
                return error_reply(422, "invalid_request", message)
            replayed = stored.reply
            return Reply(replayed.status, replayed.body, {REPLAYED_HEADER: "true"}, replayed=True)
        reply = self._process(invoice_id, version, form)
        self._idempotency[key] = _Stored(fingerprint, reply, self.clock())
        return reply

    def _remembered(self, key: str) -> _Stored | None:
        horizon = self.clock() - IDEMPOTENCY_WINDOW_SECONDS
        stored = self._idempotency
        while stored:
            oldest = next(iter(stored))
            if stored[oldest].at > horizon:
                break
            del stored[oldest]
        return stored.get(key)

    def _process(self, invoice_id: str, version: str, form: Mapping[str, str]) -> Reply:
        try:
            payment = parse_payment(form, version)
        except ParamError as exc:
            return exc.reply()
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            return _invoice_not_found(invoice_id)
        if invoice.status not in PAYABLE:
            message = (
                f"Invoice {invoice_id} is {invoice.status}; "
                "payments can be recorded only when it is payment_due or not_paid"
            )
            return error_reply(409, "invalid_state_for_request", message)
        amount = invoice.amount_due if payment.amount is None else payment.amount
        if not 0 < amount <= invoice.amount_due:
            message = f"should be between 1 and the amount due ({invoice.amount_due})"
            return error_reply(400, "param_wrong_value", message, param=_NAMES[version].amount)
        txn = self._apply(invoice, payment, amount)
        body = {
            "invoice": invoice_json(invoice, version),
            "transaction": transaction_json(txn, invoice, version),
        }
        return json_reply(200, body)

    def _apply(self, invoice: Invoice, payment: Payment, amount: int) -> Transaction:
        now, version = int(self.clock()), self._next_version()
        txn = Transaction(
            id="txn_" + secrets.token_hex(8),
            invoice_id=invoice.id,
            customer_id=invoice.customer_id,
            amount=amount,
            currency_code=invoice.currency_code,
            payment_method=payment.payment_method,
            reference_number=payment.reference_number,
            note=payment.note,
            date=payment.date,
            updated_at=now,
            resource_version=version,
        )
        invoice.amount_paid += amount
        invoice.amount_due -= amount
        invoice.status = "paid" if invoice.amount_due == 0 else "payment_due"
        invoice.paid_at = payment.date if invoice.amount_due == 0 else None
        invoice.updated_at, invoice.resource_version = now, version
        invoice.payments.append(txn)
        return txn

    def _next_version(self) -> int:
        """Chargebee's resource_version: milliseconds, strictly increasing."""
        self._last_version = max(self._last_version + 1, int(self.clock() * 1000))
        return self._last_version

    # invoices and the request log

    def add_invoice(self, spec: InvoiceSpec) -> Invoice:
        now = int(self.clock())
        due = spec.amount_due if spec.amount_due is not None else (0 if spec.status == "paid" else spec.total)
        date = now - 20 * _DAY
        invoice = Invoice(
            id=spec.id,
            customer_id=spec.customer_id or f"cust_{spec.id}",
            currency_code=spec.currency_code,
            total=spec.total,
            amount_paid=spec.total - due,
            amount_due=due,
            status=spec.status,
            date=date,
            due_date=date + 30 * _DAY,
            updated_at=now,
            resource_version=self._next_version(),
            paid_at=date + _DAY if spec.status == "paid" else None,
        )
        self.invoices[spec.id] = invoice
        return invoice

    def log_request(self, entry: Json) -> None:
        if len(self.requests) == self.requests.maxlen:
            self.dropped += 1
        self.requests.append(entry)


# --- HTTP: the Chargebee API ------------------------------------------------------------------------


def _sandbox(request: Request) -> Sandbox:
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox


def _form(content_type: str | None, body: bytes) -> dict[str, str]:
    """Form fields, last value winning; like Chargebee, any other content type carries no params."""
    if not (content_type or "").lower().startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True))


def _recorded_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    # Never the authorization header: the log is for tests and the dev walkthrough to read.
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in raw
        if name.startswith(b"chargebee-") or name in (b"content-type", b"traceparent")
    }


async def record_payment(request: Request) -> Response:
    sandbox = _sandbox(request)
    received = sandbox.clock()
    form = _form(request.headers.get("content-type"), await request.body())
    reply = await _record_payment(sandbox, request, form)
    sandbox.log_request(
        {
            "invoice_id": request.path_params["invoice_id"],
            "api_version": request.path_params["version"],
            "form": form,
            "headers": _recorded_headers(request.headers.raw),
            "status": reply.status,
            "replayed": reply.replayed,
            "at": received,
        }
    )
    return reply.response()


async def _record_payment(sandbox: Sandbox, request: Request, form: dict[str, str]) -> Reply:
    version, invoice_id = request.path_params["version"], request.path_params["invoice_id"]
    refused = sandbox.gate(version, request.headers.get("authorization"))
    if refused is not None:
        return refused
    if sandbox.config.latency_ms:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    fault = sandbox.take_fault(invoice_id)
    if fault is None:
        return sandbox.record(invoice_id, version, form, key)
    committed = sandbox.record(invoice_id, version, form, key) if fault.after_commit else None
    if fault.latency_ms:
        await asyncio.sleep(fault.latency_ms / 1000)
    if fault.breaks:
        return fault.reply()
    # Latency only: the state is checked and changed after the sleep, with no await in between.
    return committed if committed is not None else sandbox.record(invoice_id, version, form, key)


async def _api_call(request: Request) -> tuple[Sandbox, Reply | None]:
    sandbox = _sandbox(request)
    refused = sandbox.gate(request.path_params["version"], request.headers.get("authorization"))
    if refused is None and sandbox.config.latency_ms:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    return sandbox, refused


async def retrieve_invoice(request: Request) -> Response:
    sandbox, refused = await _api_call(request)
    if refused is not None:
        return refused.response()
    invoice_id = request.path_params["invoice_id"]
    invoice = sandbox.invoices.get(invoice_id)
    if invoice is None:
        return _invoice_not_found(invoice_id).response()
    return json_reply(200, {"invoice": invoice_json(invoice, request.path_params["version"])}).response()


async def list_invoices(request: Request) -> Response:
    sandbox, refused = await _api_call(request)
    if refused is not None:
        return refused.response()
    limit = _integer(request.query_params.get("limit", "10"))
    if limit is None or not 1 <= limit <= 100:
        return error_reply(400, "param_wrong_value", "should be between 1 and 100", param="limit").response()
    offset = _integer(request.query_params.get("offset") or "0")
    if offset is None or offset < 0:
        return error_reply(400, "param_wrong_value", "invalid value", param="offset").response()
    invoices = list(sandbox.invoices.values())
    page = invoices[offset : offset + limit]
    body: Json = {"list": [{"invoice": invoice_json(i, request.path_params["version"])} for i in page]}
    if offset + limit < len(invoices):
        body["next_offset"] = str(offset + limit)  # opaque to clients, as Chargebee's is
    return json_reply(200, body).response()


# --- HTTP: sandbox admin ------------------------------------------------------------------------------


def _ok(body: Json, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=_JSON)


_Model = TypeVar("_Model", bound=BaseModel)


async def _parse(request: Request, model: type[_Model]) -> _Model | Response:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return problem(400, "invalid request body", errors=errors)


async def health(request: Request) -> Response:
    return _ok({"status": "ok"})


async def create_invoice(request: Request) -> Response:
    spec = await _parse(request, InvoiceSpec)
    if isinstance(spec, Response):
        return spec
    sandbox = _sandbox(request)
    if spec.id in sandbox.invoices:
        return problem(409, f"invoice {spec.id} already exists")
    return _ok({"invoice": invoice_json(sandbox.add_invoice(spec), "v2")}, 201)


async def create_invoices_bulk(request: Request) -> Response:
    spec = await _parse(request, BulkSpec)
    if isinstance(spec, Response):
        return spec
    sandbox = _sandbox(request)
    ids = [f"{spec.prefix}{n}" for n in range(1, spec.count + 1)]
    taken = next((i for i in ids if i in sandbox.invoices), None)
    if taken is not None:
        return problem(409, f"invoice {taken} already exists; nothing was created")
    for invoice_id in ids:
        sandbox.add_invoice(
            InvoiceSpec(id=invoice_id, total=spec.total, currency_code=spec.currency_code, status=spec.status)
        )
    return _ok({"created": len(ids), "first": ids[0], "last": ids[-1]}, 201)


async def list_requests(request: Request) -> Response:
    sandbox = _sandbox(request)
    invoice_id = request.query_params.get("invoice_id")
    entries = [e for e in sandbox.requests if invoice_id is None or e["invoice_id"] == invoice_id]
    return _ok({"requests": entries, "dropped": sandbox.dropped})


async def clear_requests(request: Request) -> Response:
    sandbox = _sandbox(request)
    cleared = len(sandbox.requests)
    sandbox.requests.clear()
    sandbox.dropped = 0
    return _ok({"cleared": cleared})


def _fault_json(armed: _Armed) -> Json:
    return {**armed.spec.model_dump(), "remaining": armed.remaining}


async def add_fault(request: Request) -> Response:
    spec = await _parse(request, FaultSpec)
    if isinstance(spec, Response):
        return spec
    sandbox = _sandbox(request)
    sandbox.add_fault(spec)
    return _ok({"fault": _fault_json(sandbox.faults[-1])}, 201)


async def list_faults(request: Request) -> Response:
    return _ok({"faults": [_fault_json(armed) for armed in _sandbox(request).faults]})


async def clear_faults(request: Request) -> Response:
    sandbox = _sandbox(request)
    cleared = len(sandbox.faults)
    sandbox.faults.clear()
    return _ok({"cleared": cleared})


class _ApiKey(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    api_key: str = Field(min_length=1, max_length=200)


async def set_api_key(request: Request) -> Response:
    spec = await _parse(request, _ApiKey)
    if isinstance(spec, Response):
        return spec
    _sandbox(request).set_api_key(spec.api_key)
    return Response(status_code=204)


async def reset(request: Request) -> Response:
    sandbox = _sandbox(request)
    sandbox.reset()
    return _ok({"invoices": len(sandbox.invoices)})


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods: Chargebee's error shape under /api, problem+json elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        code = "http_method_not_supported" if exc.status_code == 405 else "resource_not_found"
        return error_reply(exc.status_code, code, headers=exc.headers).response()
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


def create_app(config: SandboxConfig) -> Starlette:
    """The sandbox ASGI app; its state is `app.state.sandbox`, fresh (and seeded) per app."""
    api = "/api/{version}/invoices"
    routes = [
        Route(api + "/{invoice_id}/record_payment", record_payment, methods=["POST"]),
        Route(api + "/{invoice_id}", retrieve_invoice, methods=["GET"]),
        Route(api, list_invoices, methods=["GET"]),
        Route("/sandbox/health", health, methods=["GET"]),
        Route("/sandbox/invoices", create_invoice, methods=["POST"]),
        Route("/sandbox/invoices/bulk", create_invoices_bulk, methods=["POST"]),
        Route("/sandbox/requests", list_requests, methods=["GET"]),
        Route("/sandbox/requests", clear_requests, methods=["DELETE"]),
        Route("/sandbox/faults", add_fault, methods=["POST"]),
        Route("/sandbox/faults", list_faults, methods=["GET"]),
        Route("/sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/sandbox/api-key", set_api_key, methods=["PUT"]),
        Route("/sandbox/reset", reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sandbox = Sandbox(config)
    return app
