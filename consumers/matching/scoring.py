"""The score of one cash-application suggestion, its reasons, and whether it is applied. Pure.

A suggestion's score is the sum of what it rests on (`WEIGHTS`):

    who paid       payer_fingerprint 0.50 | payer_map_name 0.45 | customer_name 0.40
                   | payer_name 0.30 x similarity
    which amount   exact_amount 0.45 | sum_of_n 0.45 - 0.05 x (n - 1), not below 0
                   (sum_of_2 0.40 ... sum_of_5 0.25) | short_payment / over_payment 0.15
    the text       + 0.30 x named / invoices (the invoice numbers it names among the suggestion's)
                   - 0.20 once if it names another open invoice of the customer

A short or over payment is capped at 0.85, so it is never applied on its own; every score is then
clamped to [0, 1] and rounded half up to hundredths. The arithmetic is exact (fractions), so
0.27 + 0.45 is 0.72, never 0.7200000000000001; the similarity counts in hundredths.

`auto_applies` compares in whole hundredths too: the best suggestion is applied when it is at or
above the threshold and every other one is at least `margin` below it. A rival exactly `margin`
below does not block (0.95 against 0.85); one a hundredth closer does (0.95 against 0.86).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Final, Literal

PayerHow = Literal["fingerprint", "payer_map_name", "customer_exact", "customer_fuzzy"]
AmountHow = Literal["exact_amount", "sum", "short_payment", "over_payment"]

WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "fingerprint": 0.50,
        "payer_map_name": 0.45,
        "customer_exact": 0.40,
        "customer_fuzzy": 0.30,  # x the name similarity
        "exact_amount": 0.45,
        "sum": 0.45,  # of 2 or more invoices, less sum_step for each invoice after the first
        "sum_step": 0.05,
        "short_payment": 0.15,
        "over_payment": 0.15,
        "named": 0.30,  # x the share of the suggestion's invoices the text names
        "named_elsewhere": -0.20,  # once, when the text names another open invoice
        "short_or_over_cap": 0.85,
    }
)
_W: Final = {name: Fraction(repr(weight)) for name, weight in WEIGHTS.items()}
_PAYER_REASONS: Final[Mapping[PayerHow, str]] = {
    "fingerprint": "payer_fingerprint",
    "payer_map_name": "payer_map_name",
    "customer_exact": "customer_name",
    "customer_fuzzy": "payer_name",
}


@dataclass(frozen=True, slots=True)
class Evidence:
    """What one suggestion rests on: how the payer was found, how the amount fits, the text."""

    payer: PayerHow
    payer_similarity: float  # 1.0 except for customer_fuzzy (the name similarity, 0..1)
    amount: AmountHow
    invoices: int  # how many invoices the suggestion allocates to (1 for exact/short/over)
    named: int = 0  # how many of those invoices the remittance text names (invoice_numbers_in)
    named_elsewhere: int = 0  # how many OTHER open invoices of the customer the text names
    difference: str = ""  # for short/over: the difference as people read it, e.g. "12.50 USD"

    def __post_init__(self) -> None:
        if not 0 <= self.payer_similarity <= 1:
            raise ValueError(f"payer_similarity must be in [0, 1], not {self.payer_similarity}")
        if (self.invoices >= 2) != (self.amount == "sum") or self.invoices < 1:
            raise ValueError(f"{self.amount} cannot allocate to {self.invoices} invoice(s)")
        if not 0 <= self.named <= self.invoices or self.named_elsewhere < 0:
            raise ValueError(f"named must be in [0, {self.invoices}] and named_elsewhere at least 0")


@dataclass(frozen=True, slots=True)
class Scored:
    """A suggestion's score, the reasons behind it and how its invoices were found."""

    score: float  # in [0, 1], rounded to 2 decimals
    reasons: tuple[str, ...]
    method: str  # "exact_amount", "sum_of_2", ..., "short_payment", "over_payment"


def score(evidence: Evidence) -> Scored:
    """The score of a suggestion by `WEIGHTS` (see the module docstring), with its reasons."""
    total = _payer_part(evidence) + _amount_part(evidence)
    total += _W["named"] * Fraction(evidence.named, evidence.invoices)
    if evidence.named_elsewhere:
        total += _W["named_elsewhere"]
    if evidence.amount in ("short_payment", "over_payment"):
        total = min(total, _W["short_or_over_cap"])
    clamped = min(max(total, Fraction(0)), Fraction(1))
    hundredths = math.floor(clamped * 100 + Fraction(1, 2))
    return Scored(hundredths / 100, _reasons(evidence), _method(evidence))


def _payer_part(evidence: Evidence) -> Fraction:
    if evidence.payer == "customer_fuzzy":
        return _W["customer_fuzzy"] * Fraction(_similarity(evidence), 100)
    return _W[evidence.payer]


def _similarity(evidence: Evidence) -> int:
    """The name similarity in whole hundredths, half up: the score and the reason agree."""
    return math.floor(evidence.payer_similarity * 100 + 0.5)


def _amount_part(evidence: Evidence) -> Fraction:
    if evidence.amount == "sum":
        return max(_W["sum"] - _W["sum_step"] * (evidence.invoices - 1), Fraction(0))
    return _W[evidence.amount]


def _method(evidence: Evidence) -> str:
    return f"sum_of_{evidence.invoices}" if evidence.amount == "sum" else evidence.amount


def _reasons(evidence: Evidence) -> tuple[str, ...]:
    payer = _PAYER_REASONS[evidence.payer]
    if evidence.payer == "customer_fuzzy":
        payer = f"{payer} {_similarity(evidence) / 100:.2f}"
    amount = _method(evidence)
    if evidence.amount in ("short_payment", "over_payment") and evidence.difference:
        amount = f"{amount} {evidence.difference}"
    reasons = [payer, amount]
    if evidence.named == evidence.invoices:
        reasons.append("invoice_number_in_text")
    elif evidence.named:
        reasons.append(f"invoice_numbers_in_text {evidence.named}/{evidence.invoices}")
    if evidence.named_elsewhere:
        reasons.append("text_names_another_invoice")
    return tuple(reasons)


def _in_hundredths(value: float) -> int:
    return round(value * 100)


def auto_applies(ranked: Sequence[Scored], threshold: float, margin: float = 0.1) -> bool:
    """Whether the best of `ranked` (best first) is applied without a person.

    It must be at or above `threshold`, and every other suggestion at least `margin` below it: a
    rival exactly `margin` below does not block. All compared in whole hundredths.
    """
    if not ranked:
        return False
    best = _in_hundredths(ranked[0].score)
    ceiling = best - _in_hundredths(margin)
    return best >= _in_hundredths(threshold) and all(
        _in_hundredths(rival.score) <= ceiling for rival in ranked[1:]
    )
