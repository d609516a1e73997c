"""The cash-application benchmark runs at a small size, reports every figure, and its counts add up.

No rate or time is asserted, with one exception that is about correctness, not speed: at this size
and with the default `[matching]` settings, nothing is auto-applied wrongly.
"""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest

from tests.benchmarks import matching
from tests.benchmarks.book_generator import MIX

SMALL = ["--customers", "50", "--invoices", "200", "--payments", "100"]
FIGURES = {
    "straight_through", "auto_wrong", "auto_wrong_rate", "reviews", "review_right_first",
    "review_right_anywhere", "review_right_none", "review_correct", "time.median_ms", "time.p95_ms",
    "time.p99_ms", "time.max_ms", "payments_per_s", "calls.customers", "calls.open_invoices",
    "calls.open_invoices_fresh", "calls.requests",
}  # fmt: skip


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """(what `main` returned, what it wrote with --json) for one small run."""
    path = tmp_path_factory.mktemp("bench") / "matching.json"
    printed = matching.main([*SMALL, "--json", str(path)])
    return printed, orjson.loads(path.read_bytes())


def test_the_json_is_the_report_with_every_figure_a_number(
    run: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    printed, report = run
    assert report == orjson.loads(orjson.dumps(printed))
    figures = {item["id"]: item for item in report["figures"]}
    assert set(figures) == FIGURES
    for key, item in figures.items():
        value = item["figure"]
        assert isinstance(value, int | float) and math.isfinite(value) and value >= 0, key
        assert item["what"] and item["unit"], key
    assert report["machine"]["cores"] >= 1 and report["machine"]["memory_gib"] > 0
    assert "--customers 50" in report["command"] and report["seed"] == 7
    assert report["settings"]["auto_threshold"] == 0.9  # the defaults, as the report states them
    assert [m["category"] for m in report["mix"]] == [name for name, _, _ in MIX]
    assert math.isclose(sum(m["share"] for m in report["mix"]), 1.0)


def test_every_count_adds_up_to_the_payments(run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    _, report = run
    total, outcomes = report["payments"], report["outcomes"]
    assert total == 100 and set(outcomes) == set(matching.OUTCOMES)
    assert sum(outcomes.values()) == total
    categories = report["by_category"]
    assert list(categories) == [name for name, _, _ in MIX]
    assert sum(c["payments"] for c in categories.values()) == total
    for name, c in categories.items():
        assert sum(c[k] for k in matching.OUTCOMES) == c["payments"], name
        assert sum(c["review_why"].values()) == c["payments"] - c["auto_correct"] - c["auto_wrong"], name
    for key, count in outcomes.items():
        assert sum(c[key] for c in categories.values()) == count, key
    reviews = total - outcomes["auto_correct"] - outcomes["auto_wrong"]
    assert sum(report["review_why"].values()) == reviews
    assert {f["id"]: f["figure"] for f in report["figures"]}["reviews"] == reviews
    assert sum(p["payments"] for p in report["call_patterns"]) == total
    assert len(report["wrong"]) == outcomes["auto_wrong"]
    book = report["book"]
    assert book["customers"] == 50 and book["open_invoices"] == sum(book["currencies"].values())


def test_the_markdown_names_every_outcome_figure_and_category(
    run: tuple[dict[str, Any], dict[str, Any]],
) -> None:
    _, report = run
    text = matching.markdown(report)
    for needle in [
        *matching.OUTCOMES.values(), *(f["what"] for f in report["figures"]), *report["by_category"],
        "cores", report["command"], "## Wrong auto-applications",
    ]:  # fmt: skip
        assert needle in text, needle


def test_nothing_is_auto_applied_wrongly_at_this_size(run: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Correctness, not speed: every wrong auto-application is a finding about the matcher."""
    _, report = run
    assert report["outcomes"]["auto_wrong"] == 0, report["wrong"]
