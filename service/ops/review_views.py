"""View models of the review pages (SPEC §10): the list, one item's page, and what a decision says.

Pure functions of what `Reviews` returns, every figure formatted here: amounts as
`to_major_string` and the currency, scores to two places, ages to the unit people care about. Only
the payer's name is shown, never an account number (events carry none in full).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import quote

from service.messages import rfc3339
from service.ops import views
from service.ops.dead_letter_pages import Fact, file_facts, pretty
from service.ops.layout import Form, first
from service.ops.views import DASH, Badge, Cell
from service.review.model import WHY, Allocation, ReviewItem
from service.review.service import InvoiceFacts

STATE_TONE: Final = {"open": "warn", "accepted": "good", "assigned": "good", "rejected": "bad"}
STATE_CHOICES: Final = (
    ("open", "Open"),
    ("accepted", "Accepted"),
    ("assigned", "Assigned"),
    ("rejected", "Rejected"),
    ("all", "All"),
)
AMOUNT_FIELD: Final = "amount:"  # the assign form's field for one listed invoice: amount:<invoice id>


def detail_href(item_id: str) -> str:
    return f"/review/{quote(item_id, safe='')}"


def state_badge(state: str) -> Badge:
    return Badge(state, STATE_TONE.get(state, "info"))


def score(value: float) -> str:
    return f"{value:.2f}"


def day(timestamp: int | None) -> str:
    """A Chargebee date (unix seconds) as its UTC day."""
    return DASH if timestamp is None else datetime.fromtimestamp(timestamp, UTC).date().isoformat()


def shares(allocations: Sequence[Allocation], currency: str) -> str:
    """Where the money goes: "GX-1003 (60.00 USD), GX-1004 (40.00 USD)"."""
    return ", ".join(f"{a.invoice_id} ({views.money(a.amount, currency)})" for a in allocations)


def waited(item: ReviewItem, now: datetime) -> float:
    return (now - item.created_at).total_seconds()


@dataclass(frozen=True, slots=True)
class ReviewRow:
    id: str
    href: str
    age: str
    created: Cell
    origin: str
    amount: str
    payer: str
    why: str
    best_score: str
    state: Badge


def review_row(item: ReviewItem, now: datetime) -> ReviewRow:
    best = max((s.score for s in item.suggestions), default=None)
    return ReviewRow(
        id=item.id,
        href=detail_href(item.id),
        age=views.age(waited(item, now)),
        created=views.when(rfc3339(item.created_at)),
        origin=item.origin,
        amount=views.money(item.amount, item.currency),
        payer=item.payer or DASH,
        why=WHY.get(item.why, item.why),
        best_score=DASH if best is None else score(best),
        state=state_badge(item.state),
    )


@dataclass(frozen=True, slots=True)
class SuggestionView:
    index: int
    allocations: tuple[tuple[str, str], ...]  # (invoice id, amount as shown)
    score: str
    reasons: str
    method: str


@dataclass(frozen=True, slots=True)
class InvoiceRow:
    id: str
    date: str
    due_date: str
    amount_due: str
    status: str
    field: str  # the assign form's input for this invoice
    entered: str  # what was typed in it before a refusal, to type it again less


@dataclass(frozen=True, slots=True)
class ReviewDetail:
    id: str
    href: str
    state: Badge
    is_open: bool
    why: str
    why_text: str
    problem: str | None  # why the last decision was refused
    decision: str | None  # who decided what, once decided
    facts: tuple[Fact, ...]
    event: str  # the inbound CloudEvent, as indented JSON
    suggestions: tuple[SuggestionView, ...]
    invoices: tuple[InvoiceRow, ...]
    customer: str
    other_invoice: str
    other_amount: str
    note: str


def _text(data: dict[str, Any], *names: str) -> str | None:
    """The first of `names` that the (untrusted) event data holds as text."""
    for name in names:
        value = data.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def payment_facts(item: ReviewItem, now: datetime) -> tuple[Fact, ...]:
    data = item.event.get("data")
    data = data if isinstance(data, dict) else {}
    references = data.get("references")
    named = ", ".join(r for r in references if isinstance(r, str)) if isinstance(references, list) else None
    return (
        Fact("Amount", views.text(views.money(item.amount, item.currency))),
        Fact("Payer", views.text(item.payer)),
        Fact("Remittance text", views.text(_text(data, "remittance_information", "memo"))),
        Fact("Reference", views.text(_text(data, "bank_reference", "check_number"))),
        Fact("Remitter's references", views.text(named)),
        Fact("Customer", views.text(item.customer_id)),
        Fact("Origin (configured source)", views.text(item.origin)),
        Fact("CloudEvent source", views.text(item.key[1])),
        Fact("Event id", views.lookup_link(item.key[2])),
        Fact("Type", views.text(_text(item.event, "type"))),
        Fact("Came in", views.when(rfc3339(item.created_at))),
        Fact("Waiting", views.text(views.age(waited(item, now)) if item.is_open else None)),
        *file_facts(item.event),
    )


def decision_text(item: ReviewItem) -> str | None:
    if item.is_open:
        return None
    who = item.decided_by or "someone"
    at = f" at {views.when(rfc3339(item.decided_at)).text}" if item.decided_at else ""
    decision = item.decision or {}
    if item.state == "rejected":
        note = decision.get("note")
        return f"Rejected by {who}{at}" + (f": {note}" if note else ".")
    allocations = [Allocation(str(i), int(a)) for i, a in decision.get("allocations", [])]
    return f"{item.state.capitalize()} by {who}{at}: {shares(allocations, item.currency)}."


def suggestion_views(item: ReviewItem) -> tuple[SuggestionView, ...]:
    return tuple(
        SuggestionView(
            index=n,
            allocations=tuple((a.invoice_id, views.money(a.amount, item.currency)) for a in s.allocations),
            score=score(s.score),
            reasons=", ".join(s.reasons),
            method=s.method,
        )
        for n, s in enumerate(item.suggestions)
    )


def invoice_row(invoice: InvoiceFacts, entered: Form) -> InvoiceRow:
    field = AMOUNT_FIELD + invoice.id
    return InvoiceRow(
        id=invoice.id,
        date=day(invoice.date),
        due_date=day(invoice.due_date),
        amount_due=views.money(invoice.amount_due, invoice.currency),
        status=invoice.status,
        field=field,
        entered=first(entered, field),
    )


def review_detail(
    item: ReviewItem, invoices: Sequence[InvoiceFacts], now: datetime, entered: Form | None = None
) -> ReviewDetail:
    """One item's page; `entered` is the form a refused decision came with, shown again."""
    typed = entered or {}
    return ReviewDetail(
        id=item.id,
        href=detail_href(item.id),
        state=state_badge(item.state),
        is_open=item.is_open,
        why=item.why,
        why_text=WHY.get(item.why, item.why),
        problem=item.problem,
        decision=decision_text(item),
        facts=payment_facts(item, now),
        event=pretty(item.event),
        suggestions=suggestion_views(item),
        invoices=tuple(invoice_row(i, typed) for i in invoices),
        customer=item.customer_id or "",
        other_invoice=first(typed, "other_invoice"),
        other_amount=first(typed, "other_amount"),
        note=first(typed, "note"),
    )


def assigned(form: Form) -> list[tuple[str, str | None]]:
    """The assign form's (invoice, amount): each listed invoice given an amount, in the form's
    order, then the other invoice typed in (its amount left out: it takes the rest)."""
    pairs: list[tuple[str, str | None]] = [
        (name.removeprefix(AMOUNT_FIELD), first(form, name))
        for name in form
        if name.startswith(AMOUNT_FIELD) and first(form, name)
    ]
    if other := first(form, "other_invoice"):
        pairs.append((other, first(form, "other_amount") or None))
    return pairs


def decided_notice(item: ReviewItem, done: str | None) -> str:
    """What the page says after a decision redirected to it; "" unless the item is in state `done`
    (so a link carrying `done` can never claim what did not happen)."""
    if item.is_open or done != item.state:
        return ""
    if item.state == "rejected":
        went = "went" if item.queued_at else "goes, once the broker is back,"
        return f"Rejected: the payment {went} to the dead letters as unmatched_invoice."
    decision = item.decision or {}
    allocations = [Allocation(str(i), int(a)) for i, a in decision.get("allocations", [])]
    on_its_way = (
        "goes to Chargebee through the work queue"
        if item.queued_at
        else "waits for the broker, then goes to Chargebee"
    )
    where = shares(allocations, item.currency)
    return f"{item.state.capitalize()}: recorded on {where}; the payment {on_its_way}."
