"""The ops pages' view models and templates, without a server: formatting, escaping, the partial."""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.ops import views
from service.ops.layout import Frame, templates

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
        "ledger": {"since": "2024-05-01T09:11:12Z", "counts": {"recorded": 2, "dead_lettered": 1}},
        "chargebee_error_rate": 1 / 3,
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
            }
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
    assert (model.error_rate, model.settled) == ("33.3%", 3)
    work, retry, _ = model.queues
    assert work.key == "record-payment"
    assert dict(work.figures) == {
        "ready": "4", "unacked": "0", "consumers": "2", "publish_rate": "0.2", "deliver_rate": "—",
    }  # fmt: skip
    assert (retry.key, dict(retry.figures)["ready"]) == ("retry-5s", "—")  # not reported: unknown
    assert [(c.state, c.n) for c in model.counts] == [
        ("recorded", 2), ("failed", 0), ("dead_lettered", 1), ("in_progress", 0),
    ]  # fmt: skip
    (recent,) = model.recent
    assert recent.detail == views.short(ATTACK + "x" * 100, 80)
    assert recent.detail_title == ATTACK + "x" * 100
    assert recent.invoice == views.Cell("—")


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
    assert '<time datetime="2024-05-01T10:00:00Z">2024-05-01 10:00:00 UTC</time>' in fragment


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
