"""Exact decimal -> minor unit conversion by ISO 4217 exponent."""

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.money import AmountError, UnknownCurrency, exponent, to_major_string, to_minor_units


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
        ("922337203685477.5807", "CLF", 2**63 - 1),
        ("007.50", "USD", 750),
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
        ("1" * 16, "USD", "too large: at most 15 digits"),
        ("1" * 5000, "USD", "too large"),
        ("922337203685477.5808", "CLF", "too large: at most 922337203685477.5807 in CLF"),
        ("999999999999999.9999", "CLF", "too large"),
        ("12.50", "XYZ", "unknown currency"),
        ("12.50", "usd", "unknown currency"),
    ],
)
def test_rejects_what_cannot_be_recorded(amount: str, currency: str, needle: str) -> None:
    """Too many decimals, zero, negatives, non-decimals and unknown currencies are errors."""
    with pytest.raises(AmountError, match=needle):
        to_minor_units(amount, currency)


@pytest.mark.parametrize(
    "amount",
    [
        "𝟗𝟗.00",  # MATHEMATICAL BOLD DIGIT NINE
        "١٢٣٤",  # ARABIC-INDIC digits
        "１２.５０",  # FULLWIDTH digits
        "12.٥٠",  # ASCII before the point, ARABIC-INDIC after
        "१२३",  # DEVANAGARI digits
    ],
)
def test_only_ascii_digits_are_amounts(amount: str) -> None:
    """Digits of other scripts, which `\\d` and int() accept, are not amounts."""
    with pytest.raises(AmountError, match="positive decimal"):
        to_minor_units(amount, "USD")


def test_a_megabyte_amount_is_not_echoed_back() -> None:
    """An absurd amount is refused without being converted, and quoted only in part."""
    with pytest.raises(AmountError) as exc:
        to_minor_units("9" * 1_000_000, "USD")
    assert len(str(exc.value)) < 200


def test_unknown_currency_is_its_own_error() -> None:
    """The currency's fault is told apart from the amount's, so a caller can name the field."""
    with pytest.raises(UnknownCurrency):
        to_minor_units("1.00", "ZZZ")


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
