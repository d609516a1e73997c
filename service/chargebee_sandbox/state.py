"""All sandbox state (invoices, idempotency, faults, rate limit) and the rules that change it."""

from __future__ import annotations

import base64
import binascii
import math
import secrets
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from starlette.requests import Request

from service.chargebee_sandbox.invoices import (
    SEEDS,
    Invoice,
    Transaction,
    invoice_json,
    transaction_json,
)
from service.chargebee_sandbox.payments import NAMES, Payment, parse_payment
from service.chargebee_sandbox.replies import (
    Json,
    ParamError,
    Reply,
    error_reply,
    invoice_not_found,
    json_reply,
)
from service.chargebee_sandbox.specs import FaultSpec, InvoiceSpec

IDEMPOTENCY_HEADER: Final = "chargebee-idempotency-key"
REPLAYED_HEADER: Final = "chargebee-idempotency-replayed"
IDEMPOTENCY_WINDOW_SECONDS: Final = 30 * 60
RATE_WINDOW_SECONDS: Final = 60.0
API_VERSIONS: Final = frozenset({"v1", "v2"})
PAYABLE: Final = frozenset({"payment_due", "not_paid"})
_MAX_IDEMPOTENCY_KEY = 100  # documented limit: "Idempotency keys can be up to 100 characters"
_DAY = 86_400


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; built by the CLI (`payrelay sandbox`, `payrelay dev`) or by tests."""

    api_key: str = "test_sandbox_key"  # HTTP Basic username; wrong or missing -> 401
    latency_ms: float = 0.0  # added to every API call
    rate_limit: int = 0  # API requests per rolling minute per api key; 0 = unlimited
    seed: bool = True  # create the demo invoices
    clock: Callable[[], float] = field(default=time.time)  # wall clock; tests inject one to skip 30 minutes
    request_log_limit: int = 100_000  # newest record_payment requests kept for GET /sandbox/requests


@dataclass(slots=True)
class Armed:
    """An injected fault and how many more record_payment calls it applies to."""

    spec: FaultSpec
    remaining: int


@dataclass(frozen=True, slots=True)
class _Stored:
    fingerprint: tuple[str, str, tuple[tuple[str, str], ...]]
    reply: Reply
    at: float


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
        self.faults: list[Armed] = []
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
            for invoice_id, currency, total, status in SEEDS:
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
        self.faults.append(Armed(spec, spec.count))

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
            return invoice_not_found(invoice_id)
        if invoice.status not in PAYABLE:
            message = (
                f"Invoice {invoice_id} is {invoice.status}; "
                "payments can be recorded only when it is payment_due or not_paid"
            )
            return error_reply(409, "invalid_state_for_request", message)
        amount = invoice.amount_due if payment.amount is None else payment.amount
        if not 0 < amount <= invoice.amount_due:
            message = f"should be between 1 and the amount due ({invoice.amount_due})"
            return error_reply(400, "param_wrong_value", message, param=NAMES[version].amount)
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


def sandbox_of(request: Request) -> Sandbox:
    """The app's one `Sandbox` (`app.state.sandbox`), for the route handlers."""
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox
