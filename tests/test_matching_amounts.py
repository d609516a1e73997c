"""Which open invoices an amount pays: exactly one, the smallest set summing to it, or within tolerance."""

from __future__ import annotations

import time
from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.matching.amounts import (
    OpenInvoice,
    Tolerance,
    by_age,
    exact_single,
    parse_tolerance,
    smallest_sets,
    within_tolerance,
)

DAY = 86_400


def inv(id: str, amount_due: int, day: int = 0, due_day: int | None = None) -> OpenInvoice:
    return OpenInvoice(id, amount_due, 1_700_000_000 + day * DAY, None if due_day is None else due_day * DAY)


def ids(invoices: tuple[OpenInvoice, ...] | list[OpenInvoice]) -> list[str]:
    return [invoice.id for invoice in invoices]


def age_order(invoices: tuple[OpenInvoice, ...]) -> list[tuple[int, int, str]]:
    """The tie rule's sort key for a set: its invoices' ages, oldest first."""
    return sorted((i.date, i.due_date or 0, i.id) for i in invoices)


# -- by_age, exact_single, within_tolerance ------------------------------------------------------


def test_by_age_orders_by_date_then_due_date_then_id() -> None:
    """Oldest first; on the same date the earlier due date (none counts as 0), then the id."""
    invoices = [
        inv("d", 1, day=2),
        inv("c", 1, day=1, due_day=9),
        inv("b", 1, day=1, due_day=5),
        inv("a", 1, day=1),
    ]
    assert ids(by_age(invoices)) == ["a", "b", "c", "d"]
    assert ids(by_age([inv("y", 1), inv("x", 1)])) == ["x", "y"]


def test_exact_single_is_every_equal_invoice_oldest_first() -> None:
    """All invoices due exactly the amount, oldest first; others and non-positive ones are not."""
    invoices = [inv("new", 5000, day=9), inv("other", 4999), inv("old", 5000, day=1), inv("zero", 0)]
    assert ids(exact_single(5000, invoices)) == ["old", "new"]
    assert exact_single(1234, invoices) == []
    assert exact_single(0, invoices) == []


def test_within_tolerance_by_minor_units() -> None:
    """Differences of 1..allowed count, signed (negative: short), closest first then oldest."""
    invoices = [
        inv("exact", 10_000),
        inv("over_by_3", 9_997, day=5),
        inv("short_by_3", 10_003, day=1),
        inv("short_by_5", 10_005),
        inv("too_far", 10_006),
    ]
    found = within_tolerance(10_000, invoices, Tolerance(minor=5))
    assert [(i.id, d) for i, d in found] == [("short_by_3", -3), ("over_by_3", 3), ("short_by_5", -5)]


def test_within_tolerance_by_percent_of_the_payment() -> None:
    """A percentage is of the payment amount, floored; the larger of both allowances applies."""
    invoices = [inv("a", 102_300), inv("b", 102_301)]
    assert [i.id for i, _ in within_tolerance(100_000, invoices, Tolerance(percent=2.3))] == ["a"]
    assert Tolerance(percent=2.3).allowed(1000) == 23  # not 22 by float drift
    assert Tolerance(percent=0.5).allowed(999) == 4
    assert Tolerance(minor=10, percent=0.5).allowed(999) == 10
    assert Tolerance(minor=10, percent=0.5).allowed(100_000) == 500
    assert within_tolerance(100, [inv("a", 101)], Tolerance()) == []


@pytest.mark.parametrize(
    ("text", "tolerance"),
    [
        ("0", Tolerance()),
        ("500", Tolerance(minor=500)),
        (" 500 ", Tolerance(minor=500)),
        (500, Tolerance(minor=500)),
        (500.0, Tolerance(minor=500)),
        ("2%", Tolerance(percent=2.0)),
        ("0.5%", Tolerance(percent=0.5)),
        ("0.5 %", Tolerance(percent=0.5)),
        ("50%", Tolerance(percent=50.0)),
    ],
)
def test_parse_tolerance(text: str | int | float, tolerance: Tolerance) -> None:
    """Minor units, or a percentage of the payment."""
    assert parse_tolerance(text) == tolerance


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("-5", "negative"),
        ("-2%", "negative"),
        (-5, "negative"),
        ("50.01%", "at most 50%"),
        ("", "minor units like '500' or a percentage"),
        ("5.5", "minor units like '500' or a percentage"),
        ("abc", "minor units like '500' or a percentage"),
        ("2%%", "minor units like '500' or a percentage"),
        ("1e3", "minor units like '500' or a percentage"),
        ("nan%", "minor units like '500' or a percentage"),
        (0.5, "must be whole"),
        (True, "minor units or a percentage"),
    ],
)
def test_parse_tolerance_refuses(text: str | int | float, needle: str) -> None:
    """Anything else is a ValueError with a one-line message."""
    with pytest.raises(ValueError, match=needle) as raised:
        parse_tolerance(text)
    assert "\n" not in str(raised.value)


def test_tolerance_refuses_impossible_values() -> None:
    """A Tolerance built by hand is checked like a parsed one."""
    with pytest.raises(ValueError, match="negative"):
        Tolerance(minor=-1)
    with pytest.raises(ValueError, match="percent"):
        Tolerance(percent=51)


# -- smallest_sets: examples ---------------------------------------------------------------------


def test_smallest_sets_prefers_the_fewest_invoices() -> None:
    """A pair wins over a triple; sets come oldest-first inside."""
    invoices = [inv("a", 100, 3), inv("b", 200, 2), inv("c", 300, 1), inv("d", 600, 4), inv("e", 500, 5)]
    found = smallest_sets(600, invoices, 5)
    assert found.size == 2 and not found.truncated
    assert [ids(s) for s in found.sets] == [["a", "e"]]
    assert [ids(s) for s in smallest_sets(600, invoices[:3], 5).sets] == [["c", "b", "a"]]


def test_smallest_sets_ties_go_to_the_oldest() -> None:
    """Of equal-size sets, the one holding the oldest invoice comes first, then its next-oldest."""
    invoices = [inv("new1", 50, 9), inv("new2", 50, 8), inv("mid", 70, 5), inv("old", 30, 1), inv("x", 50, 2)]
    found = smallest_sets(100, invoices, 3)
    assert [ids(s) for s in found.sets] == [["old", "mid"], ["x", "new2"], ["x", "new1"]]
    assert [ids(s) for s in smallest_sets(100, invoices, 3, limit=1).sets] == [["old", "mid"]]


def test_same_amounts_are_distinct_invoices() -> None:
    """Two invoices of the same amount make a pair; one invoice is never used twice."""
    assert [ids(s) for s in smallest_sets(200, [inv("a", 100), inv("b", 100)], 5).sets] == [["a", "b"]]
    assert smallest_sets(200, [inv("a", 100), inv("c", 300)], 5).sets == ()


def test_smallest_sets_without_an_answer() -> None:
    """No set, a max size below 2, non-positive invoices or amounts: nothing, not truncated."""
    invoices = [inv("a", 100), inv("b", 250), inv("z", 0), inv("n", -50)]
    for amount, max_size in [(125, 5), (350, 1), (50, 5), (0, 5), (-50, 5)]:
        assert smallest_sets(amount, invoices, max_size) == smallest_sets(amount, [], max_size)
    assert smallest_sets(125, invoices, 5).size == 0


def test_smallest_sets_keeps_to_max_size() -> None:
    """A sum needing more than max_size invoices is not found."""
    invoices = [inv(str(i), 10) for i in range(6)]
    assert smallest_sets(60, invoices, 5).sets == ()
    assert smallest_sets(60, invoices, 6).size == 6


def test_smallest_sets_refuses_duplicate_ids_and_a_zero_limit() -> None:
    """The same invoice twice, or asking for no sets, is a mistake of the caller."""
    with pytest.raises(ValueError, match="distinct"):
        smallest_sets(200, [inv("a", 100), inv("a", 100)], 5)
    with pytest.raises(ValueError, match="limit"):
        smallest_sets(200, [inv("a", 100)], 5, limit=0)


def test_smallest_sets_is_bounded_on_200_invoices() -> None:
    """A hopeless search over 200 invoices stops at the budget, quickly, and says so."""
    invoices = [inv(f"i{n:03d}", 1000 + 2 * n, n) for n in range(200)]  # all even
    started = time.perf_counter()
    found = smallest_sets(5001, invoices, 5)  # odd: no set; within the bounds of 4 and 5 invoices
    assert time.perf_counter() - started < 2.0
    assert found.sets == () and found.truncated

    found = smallest_sets(invoices[7].amount_due + invoices[150].amount_due, invoices, 5)
    assert found.size == 2 and not found.truncated
    assert sum(i.amount_due for i in found.sets[0]) == invoices[7].amount_due + invoices[150].amount_due


def test_truncated_search_keeps_what_it_found() -> None:
    """Sets found before the budget ran out are returned, oldest first, with truncated set."""
    invoices = [inv(f"i{n}", 100, n) for n in range(30)]
    found = smallest_sets(200, invoices, 5, limit=3, budget=2)
    assert found.truncated and found.size == 2
    assert [ids(s) for s in found.sets] == [["i0", "i1"]]


# -- smallest_sets: properties against brute force ----------------------------------------------

INVOICES = st.lists(st.sampled_from([100, 150, 200, 250, 300, 500]), max_size=12).flatmap(
    lambda amounts: st.lists(st.integers(0, 4), min_size=len(amounts), max_size=len(amounts)).map(
        lambda days: [inv(f"i{n:02d}", a, day) for n, (a, day) in enumerate(zip(amounts, days, strict=True))]
    )
)


def brute_force(amount: int, invoices: list[OpenInvoice], max_size: int) -> list[tuple[OpenInvoice, ...]]:
    """All sets of the smallest size 2..max_size summing to amount."""
    for size in range(2, max_size + 1):
        found = [s for s in combinations(invoices, size) if sum(i.amount_due for i in s) == amount]
        if found:
            return found
    return []


@settings(max_examples=300, deadline=None)
@given(INVOICES, st.integers(200, 1500).map(lambda n: n // 50 * 50), st.integers(1, 6), st.integers(1, 4))
def test_smallest_sets_agrees_with_brute_force(
    invoices: list[OpenInvoice], amount: int, max_size: int, limit: int
) -> None:
    """Same minimal size as brute force, exact sums, distinct invoices, the oldest sets first."""
    expected = sorted(brute_force(amount, invoices, max_size), key=age_order)
    found = smallest_sets(amount, invoices, max_size, limit=limit, budget=10**9)
    assert not found.truncated
    assert found.size == (len(expected[0]) if expected else 0)
    assert [age_order(s) for s in found.sets] == [age_order(s) for s in expected[:limit]]
    for s in found.sets:
        assert sum(i.amount_due for i in s) == amount
        assert len({i.id for i in s}) == len(s) == found.size <= max_size
        assert list(s) == by_age(s)


@settings(max_examples=300, deadline=None)
@given(INVOICES, st.integers(200, 1500).map(lambda n: n // 50 * 50), st.integers(0, 20))
def test_a_tiny_budget_is_never_wrong(invoices: list[OpenInvoice], amount: int, budget: int) -> None:
    """With little budget: maybe nothing, never a wrong sum; a complete answer unless truncated."""
    found = smallest_sets(amount, invoices, 5, budget=budget)
    full = smallest_sets(amount, invoices, 5, budget=10**9)
    for s in found.sets:
        assert sum(i.amount_due for i in s) == amount and len(set(s)) == len(s) == found.size
    if found.truncated:
        assert found.sets == full.sets[: len(found.sets)]  # a prefix: still the oldest ones
        assert not found.sets or found.size == full.size
    else:
        assert found == full
