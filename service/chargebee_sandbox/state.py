"""All sandbox state (invoices, customers, transactions, faults, the request log) and its config."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from starlette.requests import Request

from service.chargebee_sandbox import demo_book
from service.chargebee_sandbox.gate import Gate
from service.chargebee_sandbox.idempotency import Idempotency
from service.chargebee_sandbox.replies import Json
from service.chargebee_sandbox.resources import SEEDS, Customer, Invoice, Transaction
from service.chargebee_sandbox.specs import CustomerSpec, FaultSpec, InvoiceSpec

_DAY: Final = 86_400


@dataclass(frozen=True)
class SandboxConfig:
    """How the sandbox behaves; built by the CLI (`payrelay sandbox`, `payrelay dev`) or by tests."""

    api_key: str = "test_sandbox_key"  # HTTP Basic username; wrong or missing -> 401
    latency_ms: float = 0.0  # added to every API call
    rate_limit: int = 0  # API requests per rolling minute per api key; 0 = unlimited
    seed: bool = True  # create the demo invoices and their customers
    demo_book: bool = False  # also create demo_book's payers and invoices, for cash application
    clock: Callable[[], float] = field(default=time.time)  # wall clock; tests inject one to skip 30 minutes
    request_log_limit: int = (
        100_000  # newest API requests (of every operation) kept for GET /sandbox/requests
    )


@dataclass(slots=True)
class Armed:
    """An injected fault and how many more matching calls it applies to."""

    spec: FaultSpec
    remaining: int


class Sandbox:
    """All sandbox state and the rules that change it; one per app, used from one event loop."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.clock = config.clock
        self.gate = Gate(config.api_key, config.rate_limit, config.clock)
        self.idempotency = Idempotency(config.clock)
        self.invoices: dict[str, Invoice] = {}
        self.customers: dict[str, Customer] = {}
        self.transactions: list[Transaction] = []  # creation order, as list transactions answers
        self.requests: deque[Json] = deque(maxlen=config.request_log_limit or None)
        self.dropped = 0
        self.faults: list[Armed] = []
        self._last_version = 0
        self.reset()

    def reset(self) -> None:
        self.gate.set_api_key(self.config.api_key)
        self.gate.clear()
        self.idempotency.clear()
        self.invoices.clear()
        self.customers.clear()
        self.transactions.clear()
        self.requests.clear()
        self.dropped = 0
        self.faults.clear()
        if self.config.seed:
            for invoice_id, currency, total, status in SEEDS:
                self.add_invoice(
                    InvoiceSpec(id=invoice_id, total=total, currency_code=currency, status=status)
                )
        if self.config.demo_book:
            self._add_demo_book()

    def _add_demo_book(self) -> None:
        for customer_id, company, first_name, last_name, email in demo_book.CUSTOMERS:
            self.add_customer(
                CustomerSpec(
                    id=customer_id, company=company, first_name=first_name, last_name=last_name, email=email
                )
            )
        now = int(self.clock())
        for invoice_id, customer_id, currency, total, days_ago, status in demo_book.INVOICES:
            spec = InvoiceSpec(
                id=invoice_id,
                total=total,
                currency_code=currency,
                status=status,
                customer_id=customer_id,
                date=now - days_ago * _DAY,
            )
            self.add_invoice(spec)

    def next_version(self) -> int:
        """Chargebee's resource_version: milliseconds, strictly increasing."""
        self._last_version = max(self._last_version + 1, int(self.clock() * 1000))
        return self._last_version

    # faults

    def add_fault(self, spec: FaultSpec) -> Armed:
        armed = Armed(spec, spec.count)
        self.faults.append(armed)
        return armed

    def take_fault(self, operation: str, invoice_id: str | None = None) -> FaultSpec | None:
        """The first armed fault for this call, counted down (and disarmed at zero)."""
        for armed in self.faults:
            if armed.spec.matches(operation, invoice_id):
                armed.remaining -= 1
                if armed.remaining == 0:
                    self.faults.remove(armed)
                return armed.spec
        return None

    # customers and invoices

    def add_customer(self, spec: CustomerSpec) -> Customer:
        now = int(self.clock())
        customer = Customer(
            id=spec.id,
            first_name=spec.first_name,
            last_name=spec.last_name,
            company=spec.company,
            email=spec.email,
            created_at=now,
            updated_at=now,
            resource_version=self.next_version(),
        )
        self.customers[spec.id] = customer
        return customer

    def add_invoice(self, spec: InvoiceSpec) -> Invoice:
        """A new invoice, and its customer if that does not exist yet."""
        now = int(self.clock())
        customer_id = spec.customer_id or f"cust_{spec.id}"
        if customer_id not in self.customers:
            self.add_customer(CustomerSpec(id=customer_id))
        due = spec.amount_due if spec.amount_due is not None else (0 if spec.status == "paid" else spec.total)
        date = spec.date if spec.date is not None else now - 20 * _DAY
        invoice = Invoice(
            id=spec.id,
            customer_id=customer_id,
            currency_code=spec.currency_code,
            total=spec.total,
            amount_paid=spec.total - due,
            amount_due=due,
            status=spec.status,
            date=date,
            due_date=date + 30 * _DAY,
            updated_at=now,
            resource_version=self.next_version(),
            paid_at=date + _DAY if spec.status == "paid" else None,
        )
        self.invoices[spec.id] = invoice
        return invoice

    # the request log

    def log_request(self, entry: Json) -> None:
        if len(self.requests) == self.requests.maxlen:
            self.dropped += 1
        self.requests.append(entry)


def sandbox_of(request: Request) -> Sandbox:
    """The app's one `Sandbox` (`app.state.sandbox`), for the route handlers."""
    sandbox: Sandbox = request.app.state.sandbox
    return sandbox
