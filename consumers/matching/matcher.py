"""Cash application (SPEC §10): who paid, which of their invoices are open, which amounts fit.

In the order of the SPEC: the payer becomes a customer through the payer map (fingerprint, then
normalised name), else through Chargebee's customers (the exact normalised company or person
name, else the closest names at or above `name_threshold`); that customer's open invoices in the
payment's currency; then one invoice whose amount due equals the amount, else the smallest exact
set of at most `max_invoices`, else one within `tolerance`. Each suggestion is scored
(`scoring.py`); the best is applied only at or above `auto_threshold` with no rival within 0.1,
and only after the customer's open invoices, read afresh, still say what they said. Anything
else goes to a person with up to three suggestions. When in doubt, review.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from consumers.directory import CustomerFacts
from consumers.matching.amounts import (
    OpenInvoice,
    by_age,
    exact_single,
    parse_tolerance,
    smallest_sets,
    within_tolerance,
)
from consumers.matching.normalise import closest_names, invoice_key, invoice_numbers_in, payer_key
from consumers.matching.scoring import Evidence, PayerHow, Scored, auto_applies, score
from service.event_data import Payment
from service.ledger.reviews import PayerHit
from service.money import to_major_string
from service.review.model import MAX_SUGGESTIONS, Allocation, Suggestion
from service.review.service import InvoiceFacts
from service.settings import MatchingSettings

MAX_CUSTOMERS: Final = 3  # candidate customers for one payer name
SET_BUDGET: Final = 200_000  # search steps for a set of invoices when no single one fits (~0.1 s)
RIVAL_BUDGET: Final = 20_000  # ... and for a rival set when one does: running out means unsure
_TEXT_LIMIT: Final = 2000


class Book(Protocol):
    async def customers(self, traceparent: str | None = None) -> list[CustomerFacts]: ...

    async def open_invoices(
        self, customer_id: str, currency: str, *, fresh: bool = False, traceparent: str | None = None
    ) -> list[InvoiceFacts]: ...

    def forget(self, invoice_id: str) -> None: ...


class Payers(Protocol):
    async def lookup(self, teach: Sequence[tuple[str, str]]) -> PayerHit | None: ...


@dataclass(frozen=True, slots=True)
class Applied:
    suggestion: Suggestion
    customer_id: str


@dataclass(frozen=True, slots=True)
class ToReview:
    why: str  # a key of service.review.model.WHY
    suggestions: tuple[Suggestion, ...]
    customer_id: str | None


Outcome = Applied | ToReview


@dataclass(frozen=True, slots=True)
class _Payer:
    customer_id: str
    how: PayerHow
    similarity: float = 1.0


@dataclass(frozen=True, slots=True)
class _Ranked:
    suggestion: Suggestion
    customer_id: str
    age: tuple[int, ...]
    unsure: bool = False  # the search for a set that fits as well ran out of budget


def teach_of(payment: Payment) -> tuple[tuple[str, str], ...]:
    """What the payer map knows a payer by: the account's fingerprint, the normalised name."""
    pairs: list[tuple[str, str]] = []
    if payment.payer_fingerprint:
        pairs.append(("fingerprint", payment.payer_fingerprint))
    key = payer_key(payment.payer_name) if payment.payer_name else ""
    if key:
        pairs.append(("name", key))
    return tuple(pairs)


def text_of(payment: Payment) -> str:
    parts = [payment.remittance_information or "", payment.memo or "", *payment.references]
    return " ".join(p for p in parts if p)[:_TEXT_LIMIT]


class Matcher:
    def __init__(self, settings: MatchingSettings, book: Book, payers: Payers) -> None:
        self.settings = settings
        self.book = book
        self.payers = payers
        self.tolerance = parse_tolerance(settings.tolerance)
        self._index: tuple[int, dict[str, str], dict[str, list[str]]] | None = None

    def forget(self, invoice_id: str) -> None:
        """A payment was recorded on the invoice: its customer's open invoices are read afresh."""
        self.book.forget(invoice_id)

    async def match(self, payment: Payment, traceparent: str | None = None) -> Outcome:
        payers = await self._who(payment, traceparent)
        if not payers:
            return ToReview("no_payer", (), None)
        numbers = invoice_numbers_in(text_of(payment))
        ranked: list[_Ranked] = []
        any_open = False
        for payer in payers:
            invoices = await self.book.open_invoices(
                payer.customer_id, payment.currency, traceparent=traceparent
            )
            any_open = any_open or bool(invoices)
            ranked += self._suggest(payment, payer, invoices, numbers)
        ranked.sort(key=lambda r: (-r.suggestion.score, r.age, r.customer_id))
        only = payers[0].customer_id if len(payers) == 1 else None
        if not ranked:
            return ToReview("no_amount" if any_open else "no_invoices", (), only)
        shown = tuple(r.suggestion for r in ranked[:MAX_SUGGESTIONS])
        scored = [r.suggestion.score for r in ranked]
        best = ranked[0]
        if best.unsure or not auto_applies(_as_scored(ranked), self.settings.auto_threshold):
            # `unsure`: too many open invoices to rule out a set that fits as well, so a rival
            why = "rivals" if scored[0] >= self.settings.auto_threshold else "low_score"
            return ToReview(why, shown, only or best.customer_id)
        if not await self._still_so(best, payment.currency, traceparent):
            return ToReview("changed", shown, best.customer_id)
        return Applied(best.suggestion, best.customer_id)

    # -- who paid ----------------------------------------------------------------------------

    async def _who(self, payment: Payment, traceparent: str | None) -> list[_Payer]:
        teach = teach_of(payment)
        hit = await self.payers.lookup(teach)
        if hit is not None and hit.kind == "fingerprint":
            return [_Payer(hit.customer_id, "fingerprint")]
        key = dict(teach).get("name")
        if not key:
            return []
        names, by_key = await self._customer_index(traceparent)
        exact = by_key.get(key, [])
        if hit is not None:
            # A name the map knows, unless several customers go by it: then the map cannot tell
            # them apart (a decision for one of them taught it), and each is a candidate.
            if set(exact) <= {hit.customer_id}:
                return [_Payer(hit.customer_id, "payer_map_name")]
        if exact:
            return [_Payer(c, "customer_exact") for c in sorted(set(exact))[:MAX_CUSTOMERS]]
        close = closest_names(key, names, self.settings.name_threshold, limit=MAX_CUSTOMERS * 2)
        found: dict[str, float] = {}
        for choice, similarity in close:
            customer = choice.split("\x00", 1)[0]
            found[customer] = max(found.get(customer, 0.0), similarity)
        best = sorted(found.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_CUSTOMERS]
        return [_Payer(c, "customer_fuzzy", s) for c, s in best]

    async def _customer_index(self, traceparent: str | None) -> tuple[dict[str, str], dict[str, list[str]]]:
        """Every customer's normalised names: `choice -> key` for fuzzy search, `key -> ids` for exact."""
        customers = await self.book.customers(traceparent)
        if self._index is not None and self._index[0] == id(customers):
            return self._index[1], self._index[2]
        names: dict[str, str] = {}
        by_key: dict[str, list[str]] = {}
        for customer in customers:
            for n, name in enumerate(customer.names):
                key = payer_key(name)
                if key:
                    names[f"{customer.id}\x00{n}"] = key
                    by_key.setdefault(key, []).append(customer.id)
        self._index = (id(customers), names, by_key)
        return names, by_key

    # -- which invoices and amounts ----------------------------------------------------------

    def _suggest(
        self, payment: Payment, payer: _Payer, invoices: Sequence[InvoiceFacts], numbers: set[str]
    ) -> list[_Ranked]:
        open_ = [
            OpenInvoice(i.id, i.amount_due, i.date or 0, i.due_date) for i in invoices if i.amount_due > 0
        ]
        keys = {i.id: invoice_key(i.id) for i in open_}
        named_ids = {i.id for i in open_ if keys[i.id] in numbers}
        amount = payment.amount
        found: list[tuple[tuple[OpenInvoice, ...], str, str]] = []  # (set, how, difference)
        for invoice in exact_single(amount, open_):
            found.append(((invoice,), "exact_amount", ""))
        named = by_age(i for i in open_ if i.id in named_ids)
        if 1 < len(named) <= self.settings.max_invoices and sum(i.amount_due for i in named) == amount:
            found.append((tuple(named), "sum", ""))  # the invoices the remittance lists, in full
        # Sets are searched even when one invoice fits: a set that fits as well is a rival (two
        # invoices of 500.00 or one of 1,000.00, and nothing to say which), not something to ignore.
        sets = {frozenset(i.id for i in chosen) for chosen, _, _ in found}
        search = smallest_sets(
            amount, open_, self.settings.max_invoices, budget=RIVAL_BUDGET if found else SET_BUDGET
        )
        for chosen in search.sets:
            if frozenset(i.id for i in chosen) not in sets:
                found.append((chosen, "sum", ""))
        unsure = search.truncated and bool(found)
        if not found:
            for invoice, off in within_tolerance(amount, open_, self.tolerance):
                how = "over_payment" if off > 0 else "short_payment"
                found.append(
                    ((invoice,), how, f"{to_major_string(abs(off), payment.currency)} {payment.currency}")
                )
        ranked = []
        for chosen, how, difference in found:
            ids = {i.id for i in chosen}
            evidence = Evidence(
                payer=payer.how,
                payer_similarity=payer.similarity,
                amount=how,  # type: ignore[arg-type]
                invoices=len(chosen),
                named=len(ids & named_ids),
                named_elsewhere=len(named_ids - ids),
                difference=difference,
            )
            scored = score(evidence)
            # A short or over payment is recorded as paid: the whole amount on the one invoice.
            allocations = (
                tuple(Allocation(i.id, i.amount_due) for i in chosen)
                if how in ("exact_amount", "sum")
                else (Allocation(chosen[0].id, amount),)
            )
            suggestion = Suggestion(allocations, scored.score, scored.reasons, scored.method)
            age = tuple(sorted(i.date for i in chosen))
            ranked.append(_Ranked(suggestion, payer.customer_id, age, unsure))
        return ranked

    async def _still_so(self, best: _Ranked, currency: str, traceparent: str | None) -> bool:
        """The customer's open invoices read afresh still owe what the suggestion assumed."""
        now = await self.book.open_invoices(best.customer_id, currency, fresh=True, traceparent=traceparent)
        due = {i.id: i.amount_due for i in now}
        allocations = best.suggestion.allocations
        if len(allocations) == 1 and best.suggestion.method != "exact_amount":
            return allocations[0].invoice_id in due
        return all(due.get(a.invoice_id) == a.amount for a in allocations)


def _as_scored(ranked: Sequence[_Ranked]) -> list[Scored]:
    return [Scored(r.suggestion.score, r.suggestion.reasons, r.suggestion.method) for r in ranked]
