"""ISO 4217 currency exponents and exact conversion of decimal strings to integer minor units."""

from __future__ import annotations

import re

# Minor-unit exponents of the active ISO 4217 codes (list one, 2024). Codes not named in
# _EXPONENTS have exponent 2; funds and metals with no minor unit are left out on purpose:
# nobody pays an invoice in gold (XAU) or in SDRs (XDR).
_TWO = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN BWP BYN BZD "
    "CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL "
    "MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK "
    "PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS "
    "TMT TOP TRY TTD TWD TZS UAH USD USN UYU UZS VED VES WST XCD XCG YER ZAR ZMW ZWG"
)
_EXPONENTS: dict[str, int] = {code: 2 for code in _TWO.split()}
_EXPONENTS.update(
    {code: 0 for code in "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF".split()}
)
_EXPONENTS.update({code: 3 for code in "BHD IQD JOD KWD LYD OMR TND".split()})
_EXPONENTS.update({"CLF": 4, "UYW": 4})

# ASCII digits only: `\d` and int() also take other scripts' digits ("١٢٣٤", "𝟗𝟗", "１２").
_AMOUNT = re.compile(r"^([0-9]+)(?:\.([0-9]+))?\Z")
# Minor units are stored and sent as signed 64-bit integers (the ledger, Chargebee).
MAX_MINOR_UNITS = 2**63 - 1
MAX_WHOLE_DIGITS = 15
# What /openapi.json publishes for an amount (service/openapi.py); the rules above are the detail.
DECIMAL_PATTERN = rf"^[0-9]{{1,{MAX_WHOLE_DIGITS}}}(\.[0-9]+)?$"


class AmountError(ValueError):
    """An amount or currency that cannot be recorded; the message says why."""


class UnknownCurrency(AmountError):
    """The currency is not an ISO 4217 code payrelay records (the fault is the currency's)."""


def _shown(amount: str) -> str:
    """The amount as an error message quotes it: a sender's megabyte is not echoed back."""
    return repr(amount) if len(amount) <= 40 else repr(amount[:40]) + "..."


def known_currencies() -> list[str]:
    return sorted(_EXPONENTS)


def exponent(currency: str) -> int:
    """The number of minor-unit digits of an ISO 4217 code, e.g. USD 2, JPY 0, BHD 3."""
    digits = _EXPONENTS.get(currency)
    if digits is None:
        raise UnknownCurrency(f"unknown currency {currency!r} (expected an ISO 4217 code such as USD)")
    return digits


def to_minor_units(amount: str, currency: str) -> int:
    """Convert a decimal string in major units to integer minor units, exactly.

    `to_minor_units("1250.00", "USD") == 125000`. Rejects zero, negatives, exponents, more
    decimals than the currency has, anything that is not a plain decimal string of ASCII digits,
    more than 15 digits before the point, and more minor units than a signed 64-bit integer holds.
    """
    digits = exponent(currency)
    match = _AMOUNT.match(amount)
    if match is None:
        raise AmountError(f"{_shown(amount)} is not a positive decimal string such as '1250.00'")
    whole, fraction = match.group(1), match.group(2) or ""
    if len(fraction) > digits:
        raise AmountError(f"{currency} has {digits} decimal place(s); {_shown(amount)} has {len(fraction)}")
    if len(whole) > MAX_WHOLE_DIGITS:  # before int(), which raises a bare ValueError past 4300 digits
        raise AmountError(
            f"{_shown(amount)} is too large: at most {MAX_WHOLE_DIGITS} digits before the point"
        )
    minor = int(whole + fraction.ljust(digits, "0"))
    if minor == 0:
        raise AmountError("amount must be greater than zero")
    if minor > MAX_MINOR_UNITS:
        limit = to_major_string(MAX_MINOR_UNITS, currency)
        raise AmountError(f"{_shown(amount)} is too large: at most {limit} in {currency}")
    return minor


def to_major_string(minor: int, currency: str) -> str:
    """The inverse of `to_minor_units`: 125000 USD -> '1250.00'."""
    digits = exponent(currency)
    if digits == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    text = str(abs(minor)).rjust(digits + 1, "0")
    return f"{sign}{text[:-digits]}.{text[-digits:]}"
