"""View models of the ops pages: plain data with every figure already formatted as it is shown.

Pure functions of what `Ops` returns, and no markup: the templates in `templates/` lay these
out. The dashboard's live refresh renders the same partial from the same `Dashboard`, so a
figure is formatted here and nowhere else (not in `static/ops.js`). Here: the formatting every
page shares, the dashboard and dead-letter rows; the lookup and audit pages' models are in
`lookup_views.py`, and those only the dead-letter browser's own pages use in `dead_letter_pages.py`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from service.dead_letters import Letter, chargebee_figures
from service.money import AmountError, to_major_string

DASH = "—"
LEDGER_STATES = (
    ("recorded", "Recorded"),
    ("failed", "Failed, retrying"),
    ("dead_lettered", "Dead-lettered"),
    ("in_progress", "In progress"),
)
STATE_TONE = {"recorded": "good", "failed": "warn", "dead_lettered": "bad", "in_progress": "info"}
QUEUE_FIGURES = ("ready", "unacked", "consumers", "publish_rate", "deliver_rate")


def count(value: int | None) -> str:
    return DASH if value is None else str(value)


def rate(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def dead_letters_noun(n: int) -> str:
    return "dead letter" if n == 1 else "dead letters"


def payments(n: int) -> str:
    return f"{n} payment" if n == 1 else f"{n} payments"


def age(seconds: float | None) -> str:
    """How long something has waited, to the unit people care about: 45s, 12m, 3h 5m, 2d 4h."""
    if seconds is None:
        return DASH
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if hours == 0:
        return f"{minutes}m"
    if days == 0:
        return f"{hours}h {minutes % 60}m"
    return f"{days}d {hours % 24}h"


def money(minor: int | None, currency: str | None) -> str:
    """Minor units as people read them: 2500 USD -> "25.00 USD" (— when nothing was recorded)."""
    if minor is None or not currency:
        return DASH
    try:
        return f"{to_major_string(minor, currency)} {currency}"
    except AmountError:  # a currency payrelay does not know: say what the figure is
        return f"{minor} {currency} (minor units)"


@dataclass(frozen=True, slots=True)
class Cell:
    """One value as shown: plain text, or a link (`href`), or a `<time>` (`datetime`, RFC 3339)."""

    text: str
    href: str | None = None
    datetime: str | None = None


def text(value: str | int | None) -> Cell:
    return Cell(DASH if value is None or value == "" else str(value))


def when(value: str | None) -> Cell:
    """An RFC 3339 time shown to the second in UTC; the exact value stays in `datetime`."""
    if not value:
        return Cell(DASH)
    return Cell(value.replace("T", " ")[:19] + " UTC", datetime=value)


def lookup_link(value: str | None) -> Cell:
    """An id as a link to its story on the lookup page."""
    if not value:
        return Cell(DASH)
    return Cell(value, href=f"/lookup?{urlencode({'q': value})}")


@dataclass(frozen=True, slots=True)
class Badge:
    label: str
    tone: str  # good, warn, bad or info: the badge's colour


def state_badge(state: str) -> Badge:
    return Badge(state.replace("_", " "), STATE_TONE.get(state, "info"))


# -- the dashboard ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One watched queue; `key` names its cells' ids (`q-retry-5s-ready`), `figures` is (field, shown)."""

    name: str
    label: str
    key: str
    figures: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class LedgerCount:
    state: str
    label: str
    n: int


@dataclass(frozen=True, slots=True)
class RecentRow:
    updated: Cell
    event: Cell
    origin: str
    invoice: Cell
    amount: str  # recorded, in major units with the currency
    state: Badge
    attempts: int
    detail: str
    detail_title: str | None  # the whole detail when `detail` is cut short


@dataclass(frozen=True, slots=True)
class Dashboard:
    """Everything the dashboard shows, for the full page and for its live fragment alike."""

    generated_at: str
    generated_label: str
    broker_open: bool
    health_state: str
    health_label: str
    consumers: str
    dead_state: str
    dead_letters: str
    work_ready: str
    work_unacked: str
    error_rate: str  # Chargebee's own: payments it failed, of those that reached it
    reached: str  # "3 payments"
    dead_letter_rate: str  # payrelay's: payments dead-lettered for any reason, of those settled
    settled: str
    queues: tuple[QueueRow, ...]
    management: bool  # False: unacked counts and rates cannot be known
    counts: tuple[LedgerCount, ...]
    recent: tuple[RecentRow, ...]
    review_state: str  # "good" when no payment waits for a person, else "waiting"
    review_open: str
    review_oldest: str  # how long the oldest open review item has waited


def dom_key(queue: str, prefix: str) -> str:
    """A queue name as an id fragment: `p.retry.5s` -> `retry-5s`."""
    return queue.removeprefix(prefix + ".").replace(".", "-")


def queue_row(name: str, label: str, stat: dict[str, Any] | None, prefix: str) -> QueueRow:
    """One queue's figures; all unknown (—) when the broker did not report the queue."""
    figures = []
    for field in QUEUE_FIGURES:
        value = stat.get(field) if stat else None
        figures.append((field, rate(value) if field.endswith("_rate") else count(value)))
    return QueueRow(name, label, dom_key(name, prefix), tuple(figures))


def recent_row(entry: dict[str, Any]) -> RecentRow:
    detail = str(entry.get("transaction_id") or entry.get("reason") or entry.get("last_error") or "")
    return RecentRow(
        updated=when(entry["updated_at"]),
        event=lookup_link(entry["event_id"]),
        origin=entry["origin"],
        invoice=lookup_link(entry.get("invoice_id")),
        amount=money(entry.get("amount"), entry.get("currency")),
        state=state_badge(entry["state"]),
        attempts=entry["attempts"],
        detail=short(detail, 80),
        detail_title=detail or None,
    )


def dashboard(
    overview: dict[str, Any], watched: Sequence[tuple[str, str]], prefix: str, *, management: bool
) -> Dashboard:
    """The dashboard from `Ops.overview()`; `watched` is (queue, label) of each queue shown, in order."""
    known = {q["name"]: q for q in overview["queues"]}
    work: dict[str, Any] = next((q for q in overview["queues"] if q["role"] == "work"), {})
    ledger: dict[str, Any] = overview["ledger"]
    counts: dict[str, int] = ledger["counts"]
    healthy = overview["consumers_healthy"]
    dead = overview["dead_letters"]
    review: dict[str, Any] = overview.get("review") or {}
    waiting = review.get("open")
    return Dashboard(
        generated_at=overview["generated_at"],
        generated_label=overview["generated_at"][11:19] + " UTC",
        broker_open=overview["broker"] == "open",
        health_state="good" if healthy else "bad",
        health_label="Healthy" if healthy else "No consumer",
        consumers=count(overview["consumers"]),
        dead_state="unknown" if dead is None else "bad" if dead else "good",
        dead_letters=count(dead),
        work_ready=count(work.get("ready")),
        work_unacked=count(work.get("unacked")),
        error_rate=percent(overview["chargebee_error_rate"]),
        reached=payments(ledger["reached_chargebee"]),
        dead_letter_rate=percent(overview["dead_letter_rate"]),
        settled=payments(sum(counts.get(s, 0) for s in ("recorded", "failed", "dead_lettered"))),
        queues=tuple(queue_row(name, label, known.get(name), prefix) for name, label in watched),
        management=management,
        counts=tuple(LedgerCount(state, label, counts.get(state, 0)) for state, label in LEDGER_STATES),
        recent=tuple(recent_row(e) for e in overview["recent"]),
        review_state="unknown" if waiting is None else "waiting" if waiting else "good",
        review_open=count(waiting),
        review_oldest=age(review.get("oldest_age_seconds")),
    )


# -- dead letters -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LetterRow:
    id: str  # the letter's own id (dl-17)
    event_id: str
    state: str  # dead, replayed, purged
    href: str
    reason: str
    error: str
    error_title: str | None
    attempts: int
    failed_at: Cell
    origin: str
    type: str
    invoice: str
    amount: str


def detail_href(letter_id: str) -> str:
    return f"/dead-letters/{quote(letter_id, safe='')}"


def amount(letter: Letter) -> str:
    return f"{letter.amount} {letter.currency or ''}".strip() if letter.amount else DASH


def letter_row(letter: Letter) -> LetterRow:
    return LetterRow(
        id=letter.id,
        event_id=letter.event_id,
        state=letter.state,
        href=detail_href(letter.id),
        reason=letter.reason,
        error=short(chargebee_figures(letter.error, letter.currency), 90),
        error_title=chargebee_figures(letter.error, letter.currency) or None,
        attempts=letter.attempts,
        failed_at=when(letter.failed_at),
        origin=letter.origin or DASH,
        type=letter.type or DASH,
        invoice=letter.invoice_id or DASH,
        amount=amount(letter),
    )


def letter_rows(letters: Iterable[Letter]) -> list[LetterRow]:
    return [letter_row(letter) for letter in letters]
