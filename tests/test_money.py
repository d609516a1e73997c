"""Exact decimal -> minor unit conversion by ISO 4217 exponent."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.money import AmountError, exponent, to_major_string, to_minor_units


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("1250.00", "USD", 125000),
        ("1250", "USD", 125000),
        ("0.01", "USD", 1),
        ("1250.5", "EUR", 125050),
        ("1500", "JPY", 1500),
        ("12.345", "BHD", 12345),
        ("12.3", "BHD", 12300),
        ("1.0001", "CLF", 10001),
        ("999999999999999.99", "USD", 99999999999999999),
    ],
)
def test_converts_exactly(amount: str, currency: str, minor: int) -> None:
    """Amounts become integer minor units by the currency's exponent."""
    assert to_minor_units(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "needle"),
    [
        ("12.505", "USD", "decimal place"),
        ("10.5", "JPY", "decimal place"),
        ("1.2345", "BHD", "decimal place"),
        ("0", "USD", "greater than zero"),
        ("0.00", "USD", "greater than zero"),
        ("-5.00", "USD", "positive decimal"),
        ("1e3", "USD", "positive decimal"),
        ("12,50", "EUR", "positive decimal"),
        (" 12.50", "USD", "positive decimal"),
        ("12.", "USD", "positive decimal"),
        (".5", "USD", "positive decimal"),
        ("NaN", "USD", "positive decimal"),
        ("1" * 16, "USD", "positive decimal"),
        ("12.50", "XYZ", "unknown currency"),
        ("12.50", "usd", "unknown currency"),
    ],
)
def test_rejects_what_cannot_be_recorded(amount: str, currency: str, needle: str) -> None:
    """Too many decimals, zero, negatives, non-decimals and unknown currencies are errors."""
    with pytest.raises(AmountError, match=needle):
        to_minor_units(amount, currency)


def test_exponents_of_the_contract() -> None:
    """USD 2, JPY 0, BHD 3, as SPEC §2 names them."""
    assert (exponent("USD"), exponent("JPY"), exponent("BHD")) == (2, 0, 3)


@given(
    currency=st.sampled_from(["USD", "JPY", "BHD", "EUR", "KWD", "CLF", "KRW"]),
    minor=st.integers(min_value=1, max_value=10**15 - 1),
)
def test_round_trip(currency: str, minor: int) -> None:
    """Formatting minor units and converting back is the identity, and agrees with Decimal."""
    text = to_major_string(minor, currency)
    assert to_minor_units(text, currency) == minor
    assert Decimal(text) * (10 ** exponent(currency)) == minor


@given(st.text(max_size=25))
def test_never_crashes_on_arbitrary_text(text: str) -> None:
    """Any string either converts to a positive integer or raises AmountError."""
    try:
        assert to_minor_units(text, "USD") > 0
    except AmountError:
        pass
