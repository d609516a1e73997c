"""The ops pages' view models and templates, without a server: formatting, escaping, the partial."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from service.dead_letters import Filter, FilterError, Letter, decode
from service.ledger import Entry
from service.messages import DEAD_LETTER_REASONS
from service.ops import lookup_views, views
from service.ops.dead_letter_pages import REASONS, came_from, options
from service.ops.layout import Frame, templates
from service.ops.operations import Outcomes, Story, dead_letter_rate, error_rate

PREFIX = "p"
WATCHED = [
    ("p.record-payment", "Work queue"),
    ("p.retry.5s", "Retry after 5s"),
    ("p.dead-letter", "Dead letters"),
]
ATTACK = "<script>alert(1)</script>"


def overview(**changes: Any) -> dict[str, Any]:
    """An `Ops.overview()` answer: two queues reported, one missing, one recent outcome."""
    queue = {"unacked": 0, "consumers": 0, "publish_rate": 0.25, "deliver_rate": None}
    data: dict[str, Any] = {
        "generated_at": "2024-05-01T10:11:12.345678Z",
        "broker": "open",
        "queues": [
            {**queue, "name": "p.record-payment", "role": "work", "ready": 4, "consumers": 2},
            {**queue, "name": "p.dead-letter", "role": "dead_letter", "ready": 3},
        ],
        "consumers": 2,
        "consumers_healthy": True,
        "dead_letters": 3,
        "ledger": {
            "since": "2024-05-01T09:11:12Z",
            "counts": {"recorded": 2, "dead_lettered": 1},
            "reached_chargebee": 2,
        },
        "chargebee_error_rate": 0.0,
        "dead_letter_rate": 1 / 3,
        "recent": [
            {
                "updated_at": "2024-05-01T10:00:00Z",
                "event_id": "evt-1",
                "origin": "acme-bank",
                "invoice_id": None,
                "state": "dead_lettered",
                "attempts": 3,
                "transaction_id": None,
                "reason": None,
                "last_error": ATTACK + "x" * 100,
                "amount": None,
                "currency": None,
            },
            {
                "updated_at": "2024-05-01T09:59:00Z",
                "event_id": "evt-0",
                "origin": "acme-bank",
                "invoice_id": "INV-1042",
                "state": "recorded",
                "attempts": 1,
                "transaction_id": "txn_1",
                "reason": None,
                "last_error": None,
                "amount": 9_999_999_900,
                "currency": "USD",
            },
        ],
    }
    return data | changes


def dashboard(**changes: Any) -> views.Dashboard:
    return views.dashboard(overview(**changes), WATCHED, PREFIX, management=True)


@pytest.mark.parametrize(
    ("function", "value", "shown"),
    [
        (views.count, None, "—"),
        (views.count, 0, "0"),
        (views.rate, None, "—"),
        (views.rate, 0.25, "0.2"),
        (views.rate, 12, "12.0"),
        (views.percent, None, "—"),
        (views.percent, 1 / 3, "33.3%"),
        (views.percent, 0, "0.0%"),
    ],
)
def test_figures_are_formatted_once_here(function: Any, value: Any, shown: str) -> None:
    """Python's rounding (0.25 -> "0.2"), which a JavaScript copy (toFixed: "0.3") would not match."""
    assert function(value) == shown


def test_times_links_and_badges() -> None:
    assert views.when("2024-05-01T10:11:12.5Z") == views.Cell(
        "2024-05-01 10:11:12 UTC", datetime="2024-05-01T10:11:12.5Z"
    )
    assert views.when(None) == views.Cell("—")
    assert views.lookup_link("INV 1&2") == views.Cell("INV 1&2", href="/lookup?q=INV+1%262")
    assert views.lookup_link("") == views.Cell("—")
    assert views.state_badge("dead_lettered") == views.Badge("dead lettered", "bad")
    assert views.state_badge("something_new") == views.Badge("something new", "info")
    assert views.short("abcdef", 4) == "abc…"
    assert views.short("abcd", 4) == "abcd"
    assert views.detail_href("evt/1 2") == "/dead-letters/evt%2F1%202"


def test_the_dashboard_view_model() -> None:
    model = dashboard()
    assert (model.generated_label, model.broker_open) == ("10:11:12 UTC", True)
    assert (model.health_state, model.health_label, model.consumers) == ("good", "Healthy", "2")
    assert (model.dead_state, model.dead_letters) == ("bad", "3")
    assert (model.work_ready, model.work_unacked) == ("4", "0")
    assert (model.error_rate, model.reached) == ("0.0%", "2 payments")
    assert (model.dead_letter_rate, model.settled) == ("33.3%", "3 payments")
    work, retry, _ = model.queues
    assert work.key == "record-payment"
    assert dict(work.figures) == {
        "ready": "4", "unacked": "0", "consumers": "2", "publish_rate": "0.2", "deliver_rate": "—",
    }  # fmt: skip
    assert (retry.key, dict(retry.figures)["ready"]) == ("retry-5s", "—")  # not reported: unknown
    assert [(c.state, c.n) for c in model.counts] == [
        ("recorded", 2), ("failed", 0), ("dead_lettered", 1), ("in_progress", 0),
    ]  # fmt: skip
    recent, recorded = model.recent
    assert recent.detail == views.short(ATTACK + "x" * 100, 80)
    assert recent.detail_title == ATTACK + "x" * 100
    assert (recent.invoice, recent.amount) == (views.Cell("—"), "—")  # nothing recorded yet
    assert (recorded.amount, recorded.detail) == ("99999999.00 USD", "txn_1")


@pytest.mark.parametrize(
    ("minor", "currency", "shown"),
    [
        (2500, "USD", "25.00 USD"),
        (5, "EUR", "0.05 EUR"),
        (1200, "JPY", "1200 JPY"),
        (1234, "BHD", "1.234 BHD"),
        (None, "USD", "—"),
        (2500, None, "—"),
        (2500, "ZZZ", "2500 ZZZ (minor units)"),
    ],
)
def test_recorded_amounts_read_in_major_units(minor: int | None, currency: str | None, shown: str) -> None:
    """The ledger keeps minor units; people read 25.00 USD."""
    assert views.money(minor, currency) == shown


UNMATCHED = ("dead_lettered", "unmatched_invoice")


@pytest.mark.parametrize(
    ("outcomes", "errors", "dead_letters"),
    [
        ({}, None, None),
        ({("in_progress", None): 4}, None, None),
        # The dashboard: no Chargebee error at all, most events never reached Chargebee.
        ({("recorded", None): 12, UNMATCHED: 7}, 0.0, 0.3684),
        ({UNMATCHED: 3}, None, 1.0),  # nothing reached Chargebee: its error rate is unknown
        ({("recorded", None): 3, ("failed", None): 1}, 0.25, 0.0),
        (
            {
                ("recorded", None): 5,
                ("dead_lettered", "retries_exhausted"): 1,
                ("dead_lettered", "rejected_by_chargebee"): 1,
                ("dead_lettered", "outcome_unknown"): 1,
                ("dead_lettered", "invoice_not_found"): 2,
                ("dead_lettered", "invoice_not_payable"): 1,
                ("dead_lettered", "invalid_event"): 1,
            },
            0.375,
            0.5833,
        ),
    ],
)
def test_chargebee_errors_and_dead_letters_are_two_rates(
    outcomes: Outcomes, errors: float | None, dead_letters: float | None
) -> None:
    """Chargebee's rate counts only payments whose outcome was Chargebee's; every dead letter counts
    in payrelay's."""
    counts: dict[str, int] = {}
    for (state, _), n in outcomes.items():
        counts[state] = counts.get(state, 0) + n
    assert error_rate(outcomes) == errors
    assert dead_letter_rate(counts) == dead_letters


def test_a_dashboard_without_the_broker_says_what_it_cannot_know() -> None:
    model = dashboard(broker="closed", queues=[], consumers=None, consumers_healthy=False, dead_letters=None)
    assert (model.broker_open, model.health_label, model.dead_state) == (False, "No consumer", "unknown")
    assert model.dead_letters == model.work_ready == model.consumers == "—"
    assert all(shown == "—" for q in model.queues for _, shown in q.figures)


def test_templates_autoescape_html() -> None:
    env = templates().env
    assert callable(env.autoescape) and env.autoescape("dashboard.html") is True
    assert env.from_string("{{ v }}").render(v=ATTACK) == "&lt;script&gt;alert(1)&lt;/script&gt;"


def render(name: str, **context: Any) -> str:
    return templates().get_template(name).render(**context)


def test_the_fragment_is_the_partial_the_page_includes() -> None:
    """One template renders the live part, so the refresh and the first render cannot disagree."""
    model = dashboard()
    frame = Frame(PREFIX, "csrf-token", (), "Signed in as Ann", True)
    fragment = render("_overview.html", dashboard=model)
    page = render("dashboard.html", dashboard=model, frame=frame)
    assert fragment in page
    assert re.search(r'<td[^>]*data-queue="p.dead-letter" data-field="ready"[^>]*>3</td>', fragment)
    assert 'id="q-retry-5s-ready" data-queue="p.retry.5s" data-field="ready">—</td>' in fragment
    assert 'data-generated-label="10:11:12 UTC"' in fragment
    assert 'data-broker="open"' in fragment
    # A time breaks between its date and its clock, never inside either.
    assert (
        '<time datetime="2024-05-01T10:00:00Z"><span class="nowrap">2024-05-01</span> '
        '<span class="nowrap">10:00:00 UTC</span></time>'
    ) in fragment


def test_text_in_the_fragment_is_escaped() -> None:
    fragment = render("_overview.html", dashboard=dashboard())
    assert ATTACK not in fragment
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in fragment
    assert 'title="&lt;script&gt;alert(1)&lt;/script&gt;xxx' in fragment


def test_no_template_has_inline_script_or_style() -> None:
    """The Content-Security-Policy forbids both; a template that needed them would break in browsers."""
    env = templates().env
    assert env.loader is not None
    for name in env.list_templates():
        source = env.loader.get_source(env, name)[0]
        assert "<style" not in source, name
        assert " style=" not in source, name
        assert not re.search(r"\son[a-z]+=", source), name  # no onclick= and the like
        assert re.findall(r"<script[^>]*>", source) in ([], ['<script src="/static/ops.js" defer>']), name


# -- the lookup page --------------------------------------------------------------------------

T0 = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)


def entry(event_id: str, state: str, **fields: Any) -> Entry:
    values: dict[str, Any] = {
        "invoice_id": "INV-1042", "attempts": 1, "transaction_id": None, "invoice_status": None,
        "last_error": None, "reason": None, "created_at": T0, "updated_at": T0, "generation": 0,
        "reconcile": False, "confirmed_at": None,
    }  # fmt: skip
    return Entry(
        key=("acme-bank", "urn:acme:core-banking", event_id), part="", state=state, **values | fields
    )


def letter(number: int, event_id: str, state: str, reason: str = "invoice_not_payable") -> Letter:
    headers = {"x-payrelay-reason": reason, "x-payrelay-error": "invoice INV-1042 is voided"}
    body = orjson.dumps({"id": event_id, "data": {"invoice_id": "INV-1042", "amount": "25.00"}})
    return replace(decode(event_id, headers, body), id=f"dl-{number}", state=state)


def replayed_and_recorded() -> Story:
    """The issue's event: voided, dead-lettered, replayed, and since recorded by Chargebee."""
    recorded = entry(
        "evt-7", "recorded", attempts=2, transaction_id="txn_77", invoice_status="paid",
        reason="invoice_not_payable", last_error="invoice INV-1042 is voided",
    )  # fmt: skip
    failing = entry("evt-8", "dead_lettered", reason="invoice_not_found", last_error="no INV-1042")
    letters = [letter(1, "evt-7", "replayed"), letter(2, "evt-8", "dead", "invoice_not_found")]
    return Story(query="INV-1042", entries=[recorded, failing], dead_letters=letters, audit=[])


def test_the_lookup_puts_the_current_state_first_and_earlier_failures_in_history() -> None:
    model = lookup_views.lookup(replayed_and_recorded())
    recorded, failing = model.entries
    assert (recorded.state.label, recorded.transaction) == ("recorded", "txn_77")
    assert recorded.invoice == views.Cell("INV-1042", href="/lookup?q=INV-1042")
    assert (recorded.reason, recorded.last_error) == ("—", "—")  # not its state any more
    assert (failing.reason, failing.last_error) == ("invoice_not_found", "no INV-1042")  # its state now
    assert model.earlier == [
        lookup_views.Earlier("evt-7", "INV-1042", "invoice_not_payable", "invoice INV-1042 is voided")
    ]
    assert model.waiting is not None and [r.id for r in model.waiting] == ["dl-2"]
    assert model.settled is not None and [(r.id, r.state) for r in model.settled] == [("dl-1", "replayed")]


def test_the_lookup_page_shows_history_after_the_current_state_labelled_as_such() -> None:
    frame = Frame(PREFIX, "csrf-token", (), "Signed in as Ann", True)
    page = render(
        "lookup.html", q="INV-1042", story=lookup_views.lookup(replayed_and_recorded()), frame=frame
    )
    current, history = page.split('<h2 id="history-heading">History</h2>')
    assert '<h2 id="current-heading">Current state</h2>' in current
    assert "txn_77" in current and "voided" not in current.split('id="waiting-table"')[0]
    assert "Earlier failures" in history and "invoice INV-1042 is voided" in history
    settled = history.split('id="settled-table"')[1]
    assert re.search(r'data-letter-state="replayed"><span class="badge info">replayed</span>', settled)
    assert "dl-2" not in history  # still waiting: the current state, not history


def test_a_refusal_leads_back_to_where_the_action_came_from() -> None:
    frame = Frame(PREFIX, "csrf-token", (), "Signed in as Ann", True)
    page = render(
        "message.html", heading="Nothing was changed", message="no", back="/dead-letters/dl-4", frame=frame
    )
    assert '<a href="/dead-letters/dl-4">Back to the dead letter</a>' in page
    page = render(
        "message.html", heading="x", message="no", back="/dead-letters?reason=overpayment", frame=frame
    )
    assert '<a href="/dead-letters?reason=overpayment">Back to the dead letters</a>' in page


def test_a_refused_action_knows_the_page_it_came_from() -> None:
    assert came_from({"ids": ["dl-4"], "action": ["replay"]}) == "/dead-letters/dl-4"
    assert (
        came_from({"ids": ["dl-4", "dl-5"], "reason": ["overpayment"]}) == "/dead-letters?reason=overpayment"
    )
    assert came_from({"all": ["1"]}) == "/dead-letters"


def test_the_reason_filter_offers_the_known_reasons_and_any() -> None:
    assert [o.value for o in options(REASONS, None)] == ["", *DEAD_LETTER_REASONS]
    assert [o.label for o in options(REASONS, "overpayment") if o.selected] == ["overpayment"]
    assert Filter.from_text({"reason": "overpayment"}).reason == "overpayment"
    with pytest.raises(FilterError, match="unknown reason 'voided'; the reasons are: invalid_event, "):
        Filter.from_text({"reason": "voided"})
