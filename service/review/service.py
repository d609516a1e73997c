"""What people do with review items (SPEC §10), for the CLI, the ops pages and the JSON API alike.

A decision is checked against Chargebee as it is now (each invoice read afresh: it exists, it is
in the payment's currency, it is payable, and — unless the item is an overpayment a person means
to record — its amount due still covers its share), then stored in one ledger transaction (the
item, the event's plan, the audit, the payer map), then carried out: the event goes back to the
work queue, where the consumer records the plan exactly like any event (ledger, reconciliation,
confirmations); a rejection goes to the dead letters as `unmatched_invoice`. A broker outage
between the two leaves the item decided but not queued: `requeue_decided` (run by the consumer's
keeper) sends it later, and the ledger makes a second send harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import orjson

from service import messages
from service.broker import BrokerUnavailable, Outgoing, Publisher
from service.event_data import INVOICE_ID
from service.ledger import Ledger
from service.ledger.reviews import Decision
from service.metrics import Metrics
from service.money import to_major_string, to_minor_units
from service.review.model import (
    Allocation,
    Conflict,
    NotFound,
    Refused,
    ReviewItem,
    Unavailable,
)
from service.topology import Topology

log = logging.getLogger("payrelay.review")

# Where Chargebee lets record_payment in: v1 "for 'payment_due' or 'not_paid' invoices" (OAS-v1);
# v2 "The invoice status must be payment_due, posted, or not_paid" (OAS-v2).
PAYABLE: Final = {
    "v1": frozenset({"payment_due", "not_paid"}),
    "v2": frozenset({"payment_due", "not_paid", "posted"}),
}
REVIEW_HEADER: Final = "x-payrelay-review"  # the decided item an event comes back from
MAX_ASSIGNED: Final = 50
OVER_METHODS: Final = frozenset({"over_payment", "overpayment"})


@dataclass(frozen=True, slots=True)
class InvoiceFacts:
    """An invoice as Chargebee has it now: what a decision is checked against."""

    id: str
    customer_id: str | None
    status: str
    currency: str
    amount_due: int
    total: int = 0
    date: int | None = None
    due_date: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "customer_id": self.customer_id,
            "status": self.status,
            "currency": self.currency,
            "amount_due": to_major_string(self.amount_due, self.currency),
            "total": to_major_string(self.total, self.currency),
            "date": self.date,
            "due_date": self.due_date,
        }


class ReaderUnavailable(Exception):
    """Chargebee cannot be read now (down, rate-limited, refusing the key)."""


class InvoiceReader(Protocol):
    async def invoice(self, invoice_id: str) -> InvoiceFacts | None: ...  # None: Chargebee has none

    async def open_invoices(self, customer_id: str, currency: str) -> list[InvoiceFacts]: ...


class Reviews:
    def __init__(
        self,
        ledger: Ledger,
        publisher: Publisher,
        topology: Topology,
        reader: InvoiceReader | None,
        *,
        api_version: str,
        metrics: Metrics | None = None,
    ) -> None:
        self.ledger = ledger
        self.publisher = publisher
        self.topology = topology
        self.reader = reader
        self.payable = PAYABLE[api_version]
        self.metrics = metrics

    # -- reading -----------------------------------------------------------------------------

    async def browse(self, state: str | None = "open", limit: int = 100) -> list[ReviewItem]:
        return await self.ledger.reviews.select(state, limit)

    async def get(self, wanted: str) -> ReviewItem:
        item = await self.ledger.reviews.get(wanted)
        if item is None:
            raise NotFound(f"no review item {wanted!r} (ids look like rv-17)")
        return item

    async def summary(self) -> tuple[int, datetime | None]:
        return await self.ledger.reviews.summary()

    async def open_invoices(self, item: ReviewItem) -> list[InvoiceFacts]:
        """The customer's open invoices in the payment's currency, for a person choosing; [] if unknown."""
        if item.customer_id is None or self.reader is None:
            return []
        try:
            invoices = await self.reader.open_invoices(item.customer_id, item.currency)
        except ReaderUnavailable:
            return []
        return [i for i in invoices if i.status in self.payable and i.amount_due > 0]

    # -- deciding ----------------------------------------------------------------------------

    async def accept(self, wanted: str, *, suggestion: int, actor: str) -> ReviewItem:
        item = await self._open(wanted)
        if not 0 <= suggestion < len(item.suggestions):
            count = len(item.suggestions)
            raise Refused(
                f"review {item.id} has no suggestion {suggestion}"
                + (f" (it has {count}: 0 to {count - 1})" if count else " (it has none: assign or reject it)")
            )
        chosen = item.suggestions[suggestion]
        anticipated = item.why == "overpayment" or chosen.method in OVER_METHODS
        customer, over = await self._checked(item, chosen.allocations, allow_over=anticipated)
        match = {
            "method": "review",
            "score": chosen.score,
            "reasons": [*chosen.reasons, f"accepted_suggestion {suggestion}"],
        }
        decision = Decision("accepted", actor, chosen.allocations, match, over, customer)
        return await self._decide(item, decision)

    async def assign(
        self, wanted: str, *, allocations: Sequence[tuple[str, str | None]], actor: str
    ) -> ReviewItem:
        """Invoices and amounts by hand (decimal strings, major units); one amount left out takes the rest."""
        item = await self._open(wanted)
        shares = self._shares(item, allocations)
        if len(item.named) > 1:
            raise Refused(
                f"the event of review {item.id} names its own allocations: accept them or reject it"
            )
        if len(item.named) == 1 and len(shares) > 1:
            raise Refused(
                f"the event of review {item.id} names invoice {item.named[0].invoice_id}: assign it to "
                "one invoice, or reject it and replay it with allocations"
            )
        customer, over = await self._checked(item, shares, allow_over=item.why == "overpayment")
        reasons = ["assigned_by_person"]
        match = {"method": "review", "score": 1.0, "reasons": reasons}
        decision = Decision("assigned", actor, shares, match, over, customer)
        return await self._decide(item, decision)

    async def reject(self, wanted: str, *, actor: str, note: str | None = None) -> ReviewItem:
        item = await self._open(wanted)
        return await self._decide(item, Decision("rejected", actor, note=note))

    async def requeue_decided(self) -> int:
        """Send the events of decided items that have not gone back to a queue; how many went."""
        sent = 0
        for item in await self.ledger.reviews.unqueued():
            try:
                await self._send(item)
            except BrokerUnavailable:
                break
            sent += 1
        return sent

    # -- the steps ---------------------------------------------------------------------------

    async def _open(self, wanted: str) -> ReviewItem:
        item = await self.get(wanted)
        if not item.is_open:
            self._count("conflict")
            who = f" by {item.decided_by}" if item.decided_by else ""
            raise Conflict(f"review {item.id} is {item.state} already{who}", item)
        return item

    def _shares(self, item: ReviewItem, given: Sequence[tuple[str, str | None]]) -> tuple[Allocation, ...]:
        ids = _invoice_ids(given)
        open_amounts = [amount for _, amount in given if amount is None]
        if len(open_amounts) > 1:
            raise Refused("leave the amount out for one invoice at most (it takes the rest)")
        known: dict[str, int] = {}
        for invoice, amount in given:
            if amount is None:
                continue
            try:
                known[invoice] = to_minor_units(amount, item.currency)  # refuses zero and below
            except ValueError as exc:
                raise Refused(f"amount {amount!r} for {invoice}: {exc}") from None
        rest = item.amount - sum(known.values())
        total = self._money(item, sum(known.values()))
        if open_amounts:
            if rest <= 0:
                raise Refused(
                    f"the amounts given already make {total} {item.currency} of the payment's "
                    f"{self._money(item, item.amount)}: nothing is left for the invoice without one"
                )
        elif rest != 0:
            raise Refused(
                f"the amounts sum to {total} {item.currency} but the payment is "
                f"{self._money(item, item.amount)} {item.currency}: they must be equal"
            )
        return tuple(Allocation(i, known.get(i, rest)) for i in ids)

    async def _checked(
        self, item: ReviewItem, shares: Sequence[Allocation], *, allow_over: bool
    ) -> tuple[str | None, bool]:
        """Each invoice as Chargebee has it now; refused (and noted on the item) if one does not fit.

        A share above the invoice's amount due now is refused unless `allow_over` (the item is an
        overpayment, or the suggestion accepted was one): an invoice paid in part meanwhile must not
        quietly turn a payment into excess. Returns the customer the invoices belong to (None if
        several) and whether an invoice gets more than its amount due.
        """
        if self.reader is None:
            raise Unavailable("this process cannot read Chargebee's invoices: decide from the CLI or ops app")
        customers: set[str | None] = set()
        over = False
        problems: list[str] = []
        for share in shares:
            try:
                facts = await self.reader.invoice(share.invoice_id)
            except ReaderUnavailable as exc:
                raise Unavailable(f"Chargebee cannot be read now ({exc}); nothing was decided") from None
            if facts is None:
                problems.append(f"Chargebee has no invoice {share.invoice_id}")
                continue
            customers.add(facts.customer_id)
            if facts.currency != item.currency:
                problems.append(f"invoice {facts.id} is in {facts.currency}, the payment in {item.currency}")
            elif facts.status not in self.payable:
                problems.append(f"invoice {facts.id} is {facts.status} now: it cannot take a payment")
            elif share.amount > facts.amount_due:
                if not allow_over:
                    problems.append(
                        f"invoice {facts.id} has {self._money(item, facts.amount_due)} {item.currency} "
                        f"due now, less than its share {self._money(item, share.amount)}"
                    )
                over = True
        if problems:
            problem = "; ".join(problems)
            await self.ledger.reviews.note_problem(item.id, problem)
            self._count("refused")
            raise Refused(f"review {item.id} stays open: {problem}")
        return (customers.pop() if len(customers) == 1 else None), over

    async def _decide(self, item: ReviewItem, decision: Decision) -> ReviewItem:
        try:
            decided = await self.ledger.reviews.decide(item.id, decision)
        except Conflict:
            self._count("conflict")
            raise
        except LookupError:
            raise NotFound(f"no review item {item.id!r}") from None
        self._count(decision.state)
        log.info(
            "review %s %s by %r%s",
            decided.id,
            decision.state,
            decision.actor,
            "".join(f", {a.invoice_id} {self._money(item, a.amount)}" for a in decision.allocations),
        )
        try:
            await self._send(decided)
        except BrokerUnavailable as exc:
            log.warning("review %s decided; its event waits for the broker (%s)", decided.id, exc)
        return await self.get(decided.id)

    async def _send(self, item: ReviewItem) -> None:
        await self.publisher.publish([self._outgoing(item)])
        await self.ledger.reviews.mark_queued(item.id)

    def _outgoing(self, item: ReviewItem) -> Outgoing:
        headers = {k: v for k, v in item.headers.items() if k.startswith("x-payrelay-") or k == "traceparent"}
        headers[REVIEW_HEADER] = item.id
        if item.state == "rejected":
            who = item.decided_by or "a person"
            note = (item.decision or {}).get("note")
            headers |= {
                messages.REASON: "unmatched_invoice",
                messages.ERROR: f"rejected in review {item.id} by {who}" + (f": {note}" if note else ""),
                messages.ATTEMPTS: messages.count(headers, messages.ATTEMPTS),
                messages.FAILED_AT: messages.rfc3339(datetime.now(UTC)),
            }
            exchange, routing_key = "", self.topology.dead_letter  # the queue, by the default exchange
        else:
            exchange, routing_key = "", self.topology.work_queue
        return Outgoing(
            exchange=exchange,
            routing_key=routing_key,
            body=orjson.dumps(item.event),
            message_id=item.key[2],
            headers=headers,
            content_type="application/cloudevents+json",
            type=str(item.event.get("type") or ""),
        )

    @staticmethod
    def _money(item: ReviewItem, minor: int) -> str:
        return to_major_string(minor, item.currency)

    def _count(self, decision: str) -> None:
        if self.metrics is not None:
            self.metrics.review_decisions.labels(decision).inc()


def _invoice_ids(given: Sequence[tuple[str, str | None]]) -> list[str]:
    """The invoices an assignment names: at least one, each once, each a well-formed id."""
    if not given:
        raise Refused("name at least one invoice (INVOICE or INVOICE=AMOUNT)")
    if len(given) > MAX_ASSIGNED:
        raise Refused(f"at most {MAX_ASSIGNED} invoices in one assignment")
    ids = [invoice for invoice, _ in given]
    for invoice in ids:
        if not INVOICE_ID.match(invoice):
            raise Refused(f"{invoice[:60]!r} is not an invoice id (1-50 letters, digits, '_', '-' or '.')")
    if len(set(ids)) != len(ids):
        raise Refused("an invoice is named twice: give each invoice once, with its whole share")
    return ids
