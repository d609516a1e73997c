"""The score of a suggestion, its reasons and method, and when the best one is applied."""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise, product
from typing import Any, get_args

import pytest

from consumers.matching.scoring import (
    WEIGHTS,
    AmountHow,
    Evidence,
    PayerHow,
    Scored,
    auto_applies,
    score,
)

PAYERS: tuple[PayerHow, ...] = get_args(PayerHow)
AMOUNTS: tuple[AmountHow, ...] = get_args(AmountHow)
SIMILARITIES = [n / 100 for n in range(101)]


def evidence(payer: PayerHow = "fingerprint", amount: AmountHow = "exact_amount", **fields: Any) -> Evidence:
    return Evidence(**{"payer_similarity": 1.0, "invoices": 1, **fields, "payer": payer, "amount": amount})


# -- the product's examples ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (evidence(), 0.95),
        (evidence(amount="sum", invoices=2), 0.90),
        (evidence("payer_map_name"), 0.90),
        (evidence("customer_exact"), 0.85),
        (evidence("customer_fuzzy", payer_similarity=0.9), 0.72),
        (evidence("customer_fuzzy", payer_similarity=0.9, named=1), 1.0),  # 1.02, clamped
        (evidence(amount="short_payment", named=1, difference="12.50 USD"), 0.85),  # 0.95, capped
        (evidence(amount="over_payment", difference="0.05 EUR"), 0.65),
        (evidence(named_elsewhere=2), 0.75),
        (evidence("customer_exact", "sum", invoices=5), 0.65),
        (evidence("customer_exact", "sum", invoices=3, named=1), 0.85),
        (evidence("customer_fuzzy", "sum", payer_similarity=0.0, invoices=5, named_elsewhere=1), 0.05),
    ],
)
def test_scores_by_the_weights(given: Evidence, expected: float) -> None:
    """Scores are the weighted evidence, capped for short/over, clamped, to two decimals."""
    assert score(given).score == expected


def test_the_weights_are_the_product_decision() -> None:
    """The weights the README quotes."""
    assert dict(WEIGHTS) == {
        "fingerprint": 0.50,
        "payer_map_name": 0.45,
        "customer_exact": 0.40,
        "customer_fuzzy": 0.30,
        "exact_amount": 0.45,
        "sum": 0.45,
        "sum_step": 0.05,
        "short_payment": 0.15,
        "over_payment": 0.15,
        "named": 0.30,
        "named_elsewhere": -0.20,
        "short_or_over_cap": 0.85,
    }


def test_a_long_sum_adds_nothing_but_takes_nothing() -> None:
    """The sum weight stops at 0 (sum_of_10 and beyond), it never turns negative."""
    assert score(evidence("customer_exact", "sum", invoices=10)).score == 0.40
    assert score(evidence("customer_exact", "sum", invoices=20)).score == 0.40


# -- reasons and method --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "reasons", "method"),
    [
        (evidence(), ("payer_fingerprint", "exact_amount"), "exact_amount"),
        (evidence("payer_map_name", "sum", invoices=3), ("payer_map_name", "sum_of_3"), "sum_of_3"),
        (evidence("customer_exact"), ("customer_name", "exact_amount"), "exact_amount"),
        (
            evidence("customer_fuzzy", payer_similarity=0.925, named=1),
            ("payer_name 0.93", "exact_amount", "invoice_number_in_text"),
            "exact_amount",
        ),
        (
            evidence(amount="short_payment", difference="12.50 USD", named_elsewhere=1),
            ("payer_fingerprint", "short_payment 12.50 USD", "text_names_another_invoice"),
            "short_payment",
        ),
        (evidence(amount="over_payment"), ("payer_fingerprint", "over_payment"), "over_payment"),
        (
            evidence(amount="sum", invoices=3, named=2, named_elsewhere=1),
            ("payer_fingerprint", "sum_of_3", "invoice_numbers_in_text 2/3", "text_names_another_invoice"),
            "sum_of_3",
        ),
        (
            evidence(amount="sum", invoices=2, named=2),
            ("payer_fingerprint", "sum_of_2", "invoice_number_in_text"),
            "sum_of_2",
        ),
    ],
)
def test_reasons_and_method(given: Evidence, reasons: tuple[str, ...], method: str) -> None:
    """Reasons in order: payer, amount, invoice numbers in the text, another invoice named."""
    scored = score(given)
    assert (scored.reasons, scored.method) == (reasons, method)


def test_similarity_counts_in_hundredths_in_score_and_reason() -> None:
    """0.925 is 0.93 in the reason and in the score (0.30 x 0.93 = 0.279), half up both times."""
    assert score(evidence("customer_fuzzy", payer_similarity=0.925)).score == 0.73  # 0.279 + 0.45
    assert score(evidence("customer_fuzzy", payer_similarity=0.29)).score == 0.54  # 0.087 + 0.45


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": "exact_amount", "invoices": 2},
        {"amount": "short_payment", "invoices": 2},
        {"amount": "sum", "invoices": 1},
        {"amount": "exact_amount", "invoices": 0},
        {"named": 2},
        {"named": -1},
        {"named_elsewhere": -1},
        {"payer_similarity": 1.01},
        {"payer_similarity": -0.1},
    ],
)
def test_impossible_evidence_is_refused(fields: dict[str, Any]) -> None:
    """Evidence that cannot describe a suggestion is a ValueError, not a strange score."""
    with pytest.raises(ValueError):
        evidence(**fields)


# -- exhaustive properties -----------------------------------------------------------------------


def every_evidence(similarity: float = 1.0) -> list[Evidence]:
    """Every payer x amount x invoices 1..5 x named 0..invoices x named_elsewhere {0, 1}."""
    found = []
    for payer, amount, invoices, elsewhere in product(PAYERS, AMOUNTS, range(1, 6), (0, 1)):
        if (amount == "sum") != (invoices >= 2):
            continue
        for named in range(invoices + 1):
            found.append(
                Evidence(payer, similarity, amount, invoices, named, elsewhere, difference="1.00 USD")
            )
    return found


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_every_score_is_in_range_and_monotone_in_named(similarity: float) -> None:
    """In [0, 1] with two decimals, and naming more of the invoices never lowers the score."""
    for given in every_evidence(similarity):
        scored = score(given)
        assert 0 <= scored.score <= 1 and scored.score == round(scored.score, 2)
        if given.amount in ("short_payment", "over_payment"):
            assert scored.score <= 0.85
        if given.named < given.invoices:
            assert score(replace(given, named=given.named + 1)).score >= scored.score
        if given.named_elsewhere == 0:
            assert score(replace(given, named_elsewhere=1)).score <= scored.score


def test_every_score_is_monotone_in_similarity() -> None:
    """A closer name never lowers the score, and never beats an exact customer match."""

    def fuzzy(similarity: float) -> list[Evidence]:
        return [e for e in every_evidence(similarity) if e.payer == "customer_fuzzy"]

    exact = [score(replace(e, payer="customer_exact")).score for e in fuzzy(1.0)]
    by_similarity = [[score(e).score for e in fuzzy(similarity)] for similarity in SIMILARITIES]
    for below, above in pairwise(by_similarity):
        assert all(b <= a <= x for b, a, x in zip(below, above, exact, strict=True))
    assert by_similarity[0] < by_similarity[-1]


# -- auto_applies --------------------------------------------------------------------------------


def ranked(*scores: float) -> list[Scored]:
    return [Scored(s, (), "exact_amount") for s in scores]


@pytest.mark.parametrize(
    ("scores", "threshold", "applies"),
    [
        ((), 0.9, False),
        ((0.95,), 0.9, True),
        ((0.90,), 0.9, True),  # at the threshold
        ((0.89,), 0.9, False),
        ((0.95, 0.85), 0.9, True),  # a rival exactly the margin below does not block
        ((0.95, 0.86), 0.9, False),  # a hundredth closer does
        ((0.95, 0.85, 0.86), 0.9, False),  # any rival, not only the second
        ((1.0, 0.9), 0.9, True),
        ((0.3 + 0.6, 0.8), 0.9, True),  # 0.8999999999999999 is 0.90: compared in hundredths
        ((0.9, 0.1 + 0.7), 0.9, True),  # 0.7999999999999999 is 0.80, exactly the margin below
        ((0.95, 0.95), 0.9, False),  # two equal suggestions: a person decides
    ],
)
def test_auto_applies(scores: tuple[float, ...], threshold: float, applies: bool) -> None:
    """The best applies at or above the threshold with every rival at least the margin below."""
    assert auto_applies(ranked(*scores), threshold) is applies


def test_auto_applies_with_another_margin() -> None:
    """The margin is a parameter, compared in hundredths like the scores."""
    assert auto_applies(ranked(0.95, 0.75), 0.9, margin=0.2)
    assert not auto_applies(ranked(0.95, 0.76), 0.9, margin=0.2)
    assert auto_applies(ranked(0.95, 0.95), 0.9, margin=0.0)
