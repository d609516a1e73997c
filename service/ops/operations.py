"""What the JSON API and the pages both do: the overview, dead-letter selection, replay, purge, lookup.

`Ops` holds the app's resources (opened in the lifespan). Dead letters are read from the ledger
database (`DeadLetterStore`), after taking in what still waits in the queue; an action previews
its selection and then acts on exactly the letters it found. Review items (SPEC §10) are read and
decided through `Ops.reviews` (`service.review`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.broker import Broker, BrokerUnavailable
from service.dead_letter_queue import Keeper
from service.dead_letter_store import DeadLetterStore
from service.dead_letters import SELECTORS, Filter, FilterError, Letter, Outcome, parse_age
from service.ledger import AuditRecord, Entry, EventKey, Ledger
from service.ledger.letters import letter_number
from service.messages import rfc3339
from service.metrics import Metrics
from service.queue_stats import QueueStat, queue_stats
from service.review.service import InvoiceReader, Reviews
from service.settings import Settings
from service.topology import Topology

log = logging.getLogger("payrelay.ops")

DEFAULT_LIST_LIMIT = 100
LETTER_STATES = ("dead", "replayed", "purged")  # a story tells of every letter, settled or not
RECENT_OUTCOMES = 20
# What a lookup's query may be, in the order its entries are listed; a file may hold many payments.
LOOKUP_FIELDS = ("event_id", "invoice_id", "reference_number", "file_id")
LOOKUP_LIMIT = 1000


class BadRequest(ValueError):
    """A parameter the caller got wrong (answered 422); the message says which and how."""


def selection_filter(values: Any, *, ids: tuple[str, ...] = (), everything: bool = False) -> Filter:
    """`Filter.from_text`, with an unreadable value a BadRequest (a 422, or the form's notice)."""
    try:
        return Filter.from_text(values, ids=ids, everything=everything)
    except FilterError as exc:
        raise BadRequest(str(exc)) from None


class Selection(BaseModel):
    """Which dead letters an action applies to (the JSON body of replay and purge)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    ids: list[str] = Field(default_factory=list, max_length=10_000)
    reason: str | None = None
    source: str | None = None
    type: str | None = None
    invoice: str | None = None
    older_than: str | None = None
    newer_than: str | None = None
    everything: bool = Field(default=False, alias="all")

    @field_validator("older_than", "newer_than")
    @classmethod
    def _check_age(cls, value: str | None) -> str | None:
        parse_age(value)  # a FilterError is a ValueError: pydantic reports it on the field
        return value

    def filter(self) -> Filter:
        named = self.model_dump(include=set(SELECTORS))
        return selection_filter(named, ids=tuple(self.ids), everything=self.everything)


class ReplayRequest(Selection):
    edits: dict[str, str] = Field(default_factory=dict, alias="set")
    dry_run: bool = False


class PurgeRequest(Selection):
    confirm: bool = False
    dry_run: bool = False


class SelectsNothing(BadRequest):
    """An action with no selector and no `all`: refused rather than read as "everything"."""


@dataclass
class Ops:
    """The ops app's resources; the lifespan fills in what it opens."""

    settings: Settings
    topology: Topology
    broker: Broker
    metrics: Metrics
    ledger_: Ledger | None = None
    http: aiohttp.ClientSession | None = None
    letters_: DeadLetterStore | None = None
    invoices: InvoiceReader | None = None  # Chargebee's invoices, that review decisions check against
    reviews_: Reviews | None = None

    @property
    def ledger(self) -> Ledger:
        assert self.ledger_ is not None, "the ledger is opened in the lifespan"
        return self.ledger_

    @property
    def letters(self) -> DeadLetterStore:
        """The dead letters in the ledger (built on first use: the ledger opens in the lifespan)."""
        if self.letters_ is None:
            keeper = Keeper(self.broker, self.topology, self.ledger, self.metrics)
            self.letters_ = DeadLetterStore(keeper, self.broker, self.topology, self.ledger)
        return self.letters_

    @property
    def reviews(self) -> Reviews:
        """Review items, read and decided (built on first use, like `letters`)."""
        if self.reviews_ is None:
            self.reviews_ = Reviews(
                self.ledger,
                self.broker,
                self.topology,
                self.invoices,
                api_version=self.settings.chargebee.api_version,
                metrics=self.metrics,
            )
        return self.reviews_

    async def review_summary(self, now: datetime) -> dict[str, Any]:
        """How many review items wait and since when; sets the review gauges as it goes."""
        waiting, oldest = await self.reviews.summary()
        age = max(0.0, (now - oldest).total_seconds()) if oldest is not None else None
        self.metrics.review_open.set(waiting)
        self.metrics.review_oldest_age.set(age or 0.0)
        return {
            "open": waiting,
            "oldest_created_at": rfc3339(oldest) if oldest is not None else None,
            "oldest_age_seconds": None if age is None else round(age, 3),
        }

    def role(self, queue: str) -> tuple[str, str]:
        """(role, label) of one watched queue, for people."""
        if queue == self.topology.work_queue:
            return "work", "Work queue"
        if queue == self.topology.dead_letter:
            return "dead_letter", "Dead letters"
        tier = queue.removeprefix(f"{self.topology.prefix}.retry.")
        return "retry", f"Retry after {tier}"

    async def queues(self) -> list[QueueStat]:
        return await queue_stats(self.settings, self.broker, self.http, self.metrics)

    def queue_dict(self, stat: QueueStat) -> dict[str, Any]:
        role, label = self.role(stat.name)
        return {**stat.as_dict(), "role": role, "label": label}

    async def overview(self) -> dict[str, Any]:
        """Everything the dashboard shows, in one JSON-ready dict."""
        now = datetime.now(UTC)
        since = now - timedelta(hours=1)
        waiting = await self.letters.count()  # first: it takes in what the queue still holds
        try:
            stats: list[QueueStat] | None = await self.queues()
        except BrokerUnavailable:
            stats = None
        outcomes = await self.ledger.outcomes_since(since)
        counts: dict[str, int] = {}
        for (state, _), n in outcomes.items():
            counts[state] = counts.get(state, 0) + n
        work = next((s for s in stats or [] if s.name == self.topology.work_queue), None)
        return {
            "generated_at": rfc3339(now),
            "broker": "open" if self.broker.ready else "closed",
            "queues": [self.queue_dict(s) for s in stats or []],
            "consumers": work.consumers if work else None,
            "consumers_healthy": bool(work and work.consumers > 0),
            "dead_letters": waiting,
            "ledger": {
                "since": rfc3339(since),
                "counts": counts,
                "reached_chargebee": reached_chargebee(outcomes)[1],
            },
            "chargebee_error_rate": error_rate(outcomes),
            "dead_letter_rate": dead_letter_rate(counts),
            "recent": [e.as_dict() for e in await self.ledger.recent(RECENT_OUTCOMES)],
            "review": await self.review_summary(now),
        }

    async def list_dead_letters(self, selector: Filter | None, limit: int) -> list[Letter]:
        return await self.letters.browse(selector, limit=limit)

    async def dead_letter(self, wanted: str) -> Letter | None:
        """The letter with this letter id, else the newest of this event id's letters."""
        found = await self.letters.show(wanted)
        exact = [letter for letter in found if letter.id == wanted]
        newest_first = exact or found[::-1]
        return newest_first[0] if newest_first else None

    async def replay(self, request: ReplayRequest, actor: str) -> Outcome:
        """Preview the selection; unless a dry run, replay exactly the letters it found."""
        selector = _selected(request)
        edits = request.edits or None
        preview = await self.letters.preview(selector, edits=edits)
        if request.dry_run:
            return preview
        ids = [letter.id for letter in preview.matched]
        outcome = await self.letters.replay(ids, actor=actor, selector=selector.describe(), edits=edits)
        self.metrics.replays.inc(outcome.moved)
        log.info("%s replayed %d dead letter(s) (%s)", actor, outcome.moved, selector.describe())
        return outcome

    async def purge(self, request: PurgeRequest, actor: str) -> Outcome:
        selector = _selected(request)
        preview = await self.letters.preview(selector)
        if request.dry_run:
            return preview
        ids = [letter.id for letter in preview.matched]
        outcome = await self.letters.purge(ids, actor=actor, selector=selector.describe())
        log.info("%s purged %d dead letter(s) (%s)", actor, outcome.moved, selector.describe())
        return outcome

    async def lookup(self, query: str) -> Story:
        """An event's whole story: the ledger entries whose event id, invoice id, reference number
        or bank file id is `query`, the dead letters in every state of `query` or of those events,
        and the audit records naming it."""
        entries: dict[tuple[EventKey, str], Entry] = {}
        for name in LOOKUP_FIELDS:
            for entry in await self.ledger.find(**{name: query}, limit=LOOKUP_LIMIT):
                entries.setdefault((entry.key, entry.part), entry)
        audit = [r for r in await self.ledger.audit(limit=1000) if _mentions(r, query)]
        found = await self.letters.show(query)  # first: it takes in what the queue still holds
        now, table = datetime.now(UTC), self.letters.table
        found += await table.select(Filter(invoice=query), now=now, limit=1000, states=LETTER_STATES)
        if event_ids := tuple({key[2] for key, _ in entries}):  # their letters may name no invoice
            found += await table.select(Filter(ids=event_ids), now=now, limit=1000, states=LETTER_STATES)
        letters = {letter.id: letter for letter in found}
        return Story(
            query=query,
            entries=list(entries.values()),
            dead_letters=sorted(letters.values(), key=lambda letter: letter_number(letter.id) or 0),
            audit=audit,
        )


@dataclass(frozen=True, slots=True)
class Story:
    """Everything payrelay knows about one event id, invoice id, reference number or bank file."""

    query: str
    entries: list[Entry]
    dead_letters: list[Letter] | None  # every state: what waits, and what was replayed or purged
    audit: list[AuditRecord]

    def as_dict(self) -> dict[str, Any]:
        return {
            "q": self.query,
            "ledger": [e.as_dict() for e in self.entries],
            "dead_letters": None if self.dead_letters is None else [d.summary() for d in self.dead_letters],
            "audit": [r.as_dict() for r in self.audit],
        }


def _selected(request: Selection) -> Filter:
    selector = request.filter()
    if selector.empty and not selector.everything:
        raise SelectsNothing(
            'select dead letters by ids, reason, source, type, invoice or age, or say "all": true'
        )
    return selector


def _mentions(record: AuditRecord, query: str) -> bool:
    details = record.details or {}
    ids = details.get("ids") or []
    edits = details.get("edits") or {}
    named = {part.partition("=")[2] for part in record.selector.split()}
    return query in ids or query in edits.values() or query in named


# Why a payment stopped when it is Chargebee that failed, not the message: Chargebee refused the
# call (any 400/422 but the invoice's own problems), kept failing until the retries ran out (429,
# 5xx, timeouts, no connection), or answered 200 unreadably and the payment is not there.
CHARGEBEE_FAILURES = frozenset({"rejected_by_chargebee", "retries_exhausted", "outcome_unknown"})
Outcomes = dict[tuple[str, str | None], int]  # (state, reason) -> payments


def reached_chargebee(outcomes: Outcomes) -> tuple[int, int]:
    """(failed, reached): the payments Chargebee failed, of those whose outcome was Chargebee's.

    Failed: waiting for a retry (`failed`: the last call failed) or dead-lettered for a reason in
    `CHARGEBEE_FAILURES`. Reached: those, plus the payments Chargebee recorded. Payments stopped
    by payrelay's own checks or by the invoice (invalid_event, unmatched_invoice,
    invoice_not_found, invoice_not_payable, currency_mismatch, overpayment, RabbitMQ's
    delivery_limit_exceeded) are in neither: they say nothing about Chargebee, and the
    dead-letter rate counts them. Payments still in progress are left out.
    """
    failed = sum(
        n
        for (state, reason), n in outcomes.items()
        if state == "failed" or (state == "dead_lettered" and reason in CHARGEBEE_FAILURES)
    )
    recorded = sum(n for (state, _), n in outcomes.items() if state == "recorded")
    return failed, failed + recorded


def error_rate(outcomes: Outcomes) -> float | None:
    """Chargebee's own error rate, 0..1: failed over reached (`reached_chargebee`); None if none."""
    failed, reached = reached_chargebee(outcomes)
    return round(failed / reached, 4) if reached else None


def dead_letter_rate(counts: dict[str, int]) -> float | None:
    """payrelay's dead-letter rate, 0..1: of the settled payments (recorded, failed, dead-lettered),
    those now dead-lettered, for any reason. None when nothing settled."""
    dead = counts.get("dead_lettered", 0)
    settled = dead + counts.get("recorded", 0) + counts.get("failed", 0)
    return round(dead / settled, 4) if settled else None
