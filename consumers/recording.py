"""Recording one event: its plan, then per part a claim, reconciliation, the invoice check, the call.

`Recorder.record` never raises a `PaymentError`: it returns what it recorded and, if it had to
stop, where and why (`Stopped`), so that the worker decides the message's fate once. Parts are
recorded in order; a failure stops the event there, and a retry or replay resumes at the first
part the ledger does not hold as recorded.

Before a `record_payment` whose earlier attempt may have reached Chargebee (the ledger's
`reconcile` mark: a lost answer, a 5xx, a crash mid-call, a replay) or whose idempotency key
Chargebee may have forgotten, the payment is looked for in Chargebee first (`reconcile.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from consumers import confirmations
from consumers.chargebee import ChargebeeClient, RecordResult
from consumers.errors import (
    Busy,
    NeedsReview,
    OutcomeUnknown,
    Overpayment,
    PaymentError,
    TransientError,
    UnmatchedInvoice,
    UnreadableAnswer,
)
from consumers.invoices import InvoiceBook
from consumers.mapping import (
    Part,
    RecordPayment,
    find_invoice,
    named_shares,
    parts_of,
    reference_ids,
    share,
    to_request,
)
from consumers.matching.matcher import Applied, Matcher, teach_of
from consumers.reconcile import find_recorded
from service import tracing
from service.events import FILE_ATTRIBUTES, MAX_ATTRIBUTE_CHARS, Event, attribute_text
from service.ledger import WHOLE, EventKey, History, Ledger, Provenance, Recorded
from service.metrics import Metrics
from service.money import to_major_string
from service.review.model import Allocation, Suggestion
from service.review.service import ReaderUnavailable
from service.settings import LEASE_MARGIN_SECONDS, Settings

log = logging.getLogger("payrelay.consumer")

# Chargebee keeps an idempotency key for 30 minutes. A key older than this (less a margin for the
# rate limiter and the call itself) is not resent before looking for the payment.
IDEMPOTENCY_WINDOW = timedelta(minutes=30)
_WINDOW_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True, slots=True)
class Stopped:
    """Where and why recording an event stopped; `claimed`: the ledger holds this delivery's claim."""

    error: PaymentError
    part: str = WHOLE
    claimed: bool = False
    invoice_id: str | None = None  # the invoice it was being recorded on, named or found


@dataclass(frozen=True, slots=True)
class Plan:
    """The event's parts, and how cash application (or a person) found them, if it did."""

    parts: list[Part]
    match: dict[str, Any] | None = None  # what confirmations carry as `match` (SPEC §5)
    allow_excess: bool = False  # a person decided to record an overpayment


@dataclass(slots=True)
class Attempt:
    """What one delivery achieved: the recorded parts' stored confirmations, and where it stopped."""

    recorded: list[tuple[str, bytes]] = field(default_factory=list)  # (part, confirmations)
    new: int = 0  # parts Chargebee recorded (or reconciliation found) in this delivery
    stopped: Stopped | None = None


class Lease:
    """Keeps a claim's lease long enough for the next call: renewed after each rate-limit permit."""

    def __init__(self, ledger: Ledger, key: EventKey, part: str, owner: str, seconds: float, call: float):
        self.ledger, self.key, self.part, self.owner, self.seconds = ledger, key, part, owner, seconds
        self._spare = seconds - call - LEASE_MARGIN_SECONDS  # how long it may run before a call
        self._since = time.monotonic()

    async def keep(self) -> None:
        if time.monotonic() - self._since <= self._spare:
            return
        if not await self.ledger.renew(
            self.key, owner=self.owner, lease_seconds=self.seconds, part=self.part
        ):
            raise Busy("this delivery's lease on the payment was taken over while it waited")
        self._since = time.monotonic()


def must_reconcile(history: History, now: datetime, call_seconds: float) -> bool:
    """Whether to look in Chargebee before calling: maybe recorded, or a key Chargebee may forget."""
    horizon = IDEMPOTENCY_WINDOW - _WINDOW_MARGIN - timedelta(seconds=call_seconds)
    return history.reconcile or now - history.key_first_used_at > horizon


def provenance(event: Event) -> Provenance:
    """Where the event's payment came from: its reference number and, if any, its bank file's story."""
    file_id, file_format, file_entry = (attribute_text(event.raw, name) for name in FILE_ATTRIBUTES)
    reference = event.payment.reference_number[:MAX_ATTRIBUTE_CHARS]
    return Provenance(reference or None, file_id, file_format, file_entry)


class Recorder:
    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger,
        chargebee: ChargebeeClient,
        invoices: InvoiceBook,
        metrics: Metrics,
        matcher: Matcher | None = None,
    ) -> None:
        self.settings = settings
        self.ledger = ledger
        self.chargebee = chargebee
        self.invoices = invoices
        self.metrics = metrics
        self.matcher = matcher  # None: cash application is off (payments naming nothing are dead letters)

    async def record(
        self,
        event: Event,
        key: EventKey,
        *,
        generation: int,
        owner: str,
        traceparent: str | None,
        reviewed: bool = False,
    ) -> Attempt:
        """`reviewed`: the event comes back from a person's decision, which its stored plan holds."""
        attempt = Attempt()
        try:
            plan = await self._plan(event, key, traceparent, reviewed)
        except PaymentError as error:
            attempt.stopped = Stopped(error)
            return attempt
        for part in plan.parts:
            try:
                stored, new = await self._record_part(event, key, part, plan, generation, owner, traceparent)
            except Busy as error:
                attempt.stopped = Stopped(error, part.name, invoice_id=part.invoice_id)
                return attempt
            except Overpayment as error:  # only with overpayment = "review": for a person
                attempt.stopped = Stopped(
                    _overpaid(error, plan), part.name, claimed=True, invoice_id=part.invoice_id
                )
                return attempt
            except PaymentError as error:
                attempt.stopped = Stopped(error, part.name, claimed=True, invoice_id=part.invoice_id)
                return attempt
            attempt.recorded.append((part.name, stored))
            attempt.new += new
        return attempt

    async def _plan(self, event: Event, key: EventKey, traceparent: str | None, reviewed: bool) -> Plan:
        """The parts of the event: named by it, or decided once (from its references, by cash
        application, or by a person) and kept."""
        payment = event.payment
        pattern = self.settings.source(key[0]).invoice_pattern
        named = named_shares(payment, pattern)
        if named is not None and not reviewed:
            return Plan(parts_of(named))
        stored = await self.ledger.stored_plan(key)
        if stored is not None:
            matched = await self.ledger.stored_match(key)
            match, allow_excess = matched if matched is not None else (None, False)
            return Plan(parts_of(stored), match or None, allow_excess)
        if named is not None:
            return Plan(parts_of(named))
        proposed: list[tuple[str, int]] = []
        if payment.references:
            candidates = await self.invoices.candidates(reference_ids(payment), payment.currency, traceparent)
            if candidates:
                proposed = share(payment.amount, candidates)
            else:
                found = find_invoice(payment, pattern)
                proposed = [] if found is None else [(found, payment.amount)]
        if proposed:
            return Plan(parts_of(await self.ledger.plan(key, proposed)))
        if self.matcher is None:
            raise UnmatchedInvoice(
                "no invoice_id, no reference that names a payable "
                f"{payment.currency} invoice, and invoice_pattern found none"
            )
        return await self._matched(event, key, traceparent)

    async def _matched(self, event: Event, key: EventKey, traceparent: str | None) -> Plan:
        """Cash application (SPEC §10): applied and kept as the event's plan, or sent to a person."""
        assert self.matcher is not None
        waiting = await self.ledger.reviews.by_key(key)
        if waiting is not None:  # a redelivery or a resend of a payment already in review
            raise NeedsReview(f"already in review as {waiting.id}", why=waiting.why)
        try:
            outcome = await self.matcher.match(event.payment, traceparent)
        except ReaderUnavailable as exc:
            raise TransientError(f"cannot read Chargebee's customers or invoices: {exc}") from None
        if isinstance(outcome, Applied):
            suggestion = outcome.suggestion
            self.metrics.matches.labels(suggestion.method, "auto").inc()
            proposed = [(a.invoice_id, a.amount) for a in suggestion.allocations]
            stored = await self.ledger.plan(key, proposed, match=suggestion.match())
            log.info(
                "matched %r from %r to %s (%s, score %.2f)",
                event.id,
                key[0],
                ", ".join(a.invoice_id for a in suggestion.allocations),
                suggestion.method,
                suggestion.score,
            )
            return Plan(parts_of(stored), suggestion.match())
        best = outcome.suggestions[0].method if outcome.suggestions else "none"
        self.metrics.matches.labels(best, "review").inc()
        raise NeedsReview(
            f"cash application sent it to review: {outcome.why}",
            why=outcome.why,
            suggestions=outcome.suggestions,
            customer_id=outcome.customer_id,
        )

    async def _record_part(
        self,
        event: Event,
        key: EventKey,
        part: Part,
        plan: Plan,
        generation: int,
        owner: str,
        traceparent: str | None,
    ) -> tuple[bytes, int]:
        """Record one part; returns its stored confirmations and 1 if this delivery recorded it."""
        lease_seconds = self.settings.ledger.lease_seconds
        claim = await self.ledger.claim(
            key,
            owner=owner,
            lease_seconds=lease_seconds,
            invoice_id=part.invoice_id,
            generation=generation,
            part=part.name,
            provenance=provenance(event),
        )
        if claim.status == "recorded":
            assert claim.recorded is not None
            return claim.recorded.confirmation, 0
        if claim.status == "busy":
            raise Busy("another consumer is recording this payment")
        assert claim.history is not None
        timeout = self.settings.chargebee.timeout_seconds
        lease = Lease(self.ledger, key, part.name, owner, lease_seconds, timeout)
        try:
            result = await self._call(event, key, part, plan, generation, claim.history, traceparent, lease)
        except asyncio.CancelledError:
            await self._cancelled(key, part, owner)
            raise
        now = datetime.now(UTC)
        payment = event.payment
        stored = confirmations.encode(
            confirmations.build(
                key, event, part.invoice_id, result, now, part=part.name, amount=part.amount, match=plan.match
            )
        )
        recorded = Recorded(
            transaction_id=result.transaction_id,
            invoice_id=part.invoice_id,
            invoice_status=result.invoice_status,
            amount_due=result.amount_due,
            amount=part.amount,
            currency=payment.currency,
            recorded_at=now,
            confirmation=stored,
        )
        await self.ledger.record_success(key, recorded, owner=owner, part=part.name)
        await self._learn(event, part, result)
        # Invoice ids match INVOICE_ID before they become parts; Chargebee's strings are escaped.
        log.info(
            "recorded %r from %r on %s: %s %s, transaction %r, invoice %r%s%s",
            event.id,
            key[0],
            part.invoice_id,
            to_major_string(part.amount, payment.currency),
            payment.currency,
            result.transaction_id,
            result.invoice_status,
            f", {to_major_string(result.excess, payment.currency)} {payment.currency} to excess payments"
            if result.excess
            else "",
            tracing.log_suffix(traceparent),
        )
        return stored, 1

    async def _call(
        self,
        event: Event,
        key: EventKey,
        part: Part,
        plan: Plan,
        generation: int,
        history: History,
        traceparent: str | None,
        lease: Lease,
    ) -> RecordResult:
        """Find the payment in Chargebee if it may be there, check the invoice, then record it."""
        payment = event.payment
        request = to_request(
            self.settings, key, payment, part.invoice_id, generation, part=part.name, amount=part.amount
        )
        if must_reconcile(history, datetime.now(UTC), self.settings.chargebee.timeout_seconds):
            found = await self._find(key, part, request, traceparent, lease)
            if found is not None:
                return found
            if history.unreadable_200:
                raise OutcomeUnknown(
                    "Chargebee answered an earlier attempt 200 unreadably, and no such payment can be found"
                )
        await self.invoices.check(
            part.invoice_id,
            payment.currency,
            part.amount,
            traceparent,
            lease.keep,
            allow_excess=plan.allow_excess,
        )
        try:
            return await self.chargebee.record_payment(request, traceparent, lease.keep)
        except UnreadableAnswer as unreadable:
            try:
                found = await self._find(key, part, request, traceparent, lease)
            except PaymentError:
                raise unreadable from None  # cannot read Chargebee now: retry, remembering the 200
            if found is not None:
                return found
            raise OutcomeUnknown(f"{unreadable}, and no such payment can be found") from None

    async def _learn(self, event: Event, part: Part, result: RecordResult) -> None:
        """Every recorded payment teaches the payer map who paid (SPEC §10); a failure here is logged."""
        if self.matcher is not None:
            self.matcher.forget(part.invoice_id)
        teach = teach_of(event.payment)
        if not teach or result.customer_id is None:
            return
        try:
            await self.ledger.payers.learn(teach, result.customer_id, "payment")
        except Exception as exc:
            log.warning("could not teach the payer map from %r: %s", event.id, type(exc).__name__)

    async def _find(
        self, key: EventKey, part: Part, request: RecordPayment, traceparent: str | None, lease: Lease
    ) -> RecordResult | None:
        return await find_recorded(
            self.chargebee, self.ledger, self.metrics, key, part.name, request, traceparent, lease.keep
        )

    async def _cancelled(self, key: EventKey, part: Part, owner: str) -> None:
        """Shutdown cut an attempt short: what Chargebee did is unknown, so its successor looks first."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                self.ledger.record_failure(
                    key,
                    owner=owner,
                    error="cancelled while recording",
                    reason=None,
                    final=False,
                    part=part.name,
                    maybe_recorded=True,
                ),
                timeout=2.0,
            )


def _overpaid(error: Overpayment, plan: Plan) -> NeedsReview:
    """With `overpayment = "review"`: the event's own parts, for a person to accept or redirect."""
    named = tuple(Allocation(part.invoice_id, part.amount) for part in plan.parts)
    suggestion = Suggestion(named, 1.0, ("named_by_payment", "more_than_amount_due"), "overpayment")
    return NeedsReview(str(error), why="overpayment", suggestions=(suggestion,), named=named)
