"""The record_payment form, v1 and v2 parameter names and enums, parsed into a `Payment` (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from service.chargebee_sandbox.replies import ParamError

# The record_payment endpoint's own enum, not the Transaction resource's wider one.
PAYMENT_METHODS: Final[Mapping[str, frozenset[str]]] = {
    "v1": frozenset({"cash", "check", "bank_transfer", "direct_debit", "other"}),  # OAS-v1
    "v2": frozenset(
        {"cash", "check", "bank_transfer", "other", "custom"}
        | {"tamara", "qpay", "blik", "fpx", "wero", "p24"}  # OAS-v2
        | {"app_store", "play_store", "dana", "touch_n_go"}  # NODE v3.31.0's extras
    ),
}
_MAX_REFERENCE = 100
_MAX_NOTE = 300


@dataclass(frozen=True, slots=True)
class Names:
    amount: str
    payment_method: str
    reference_number: str
    date: str
    note: str


NAMES: Final[Mapping[str, Names]] = {
    "v1": Names("amount", "payment_method", "reference_number", "paid_at", "memo"),
    "v2": Names(
        "transaction[amount]",
        "transaction[payment_method]",
        "transaction[reference_number]",
        "transaction[date]",
        "comment",
    ),
}


@dataclass(frozen=True, slots=True)
class Payment:
    amount: int | None  # None: the whole amount due
    payment_method: str
    reference_number: str | None
    date: int | None  # None (v2 only): now
    note: str | None


def parse_integer(text: str) -> int | None:
    """Chargebee integers: optional minus and ASCII digits, within a signed 64-bit long."""
    digits = text[1:] if text[:1] == "-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 18:
        return None
    return int(text)


def _required(form: Mapping[str, str], name: str) -> str:
    value = form.get(name, "")
    if not value:
        raise ParamError.blank(name)
    return value


def _optional_int(form: Mapping[str, str], name: str) -> int | None:
    text = form.get(name, "")
    if not text:
        return None
    value = parse_integer(text)
    if value is None:
        raise ParamError(name, f"invalid integer value '{text}'")
    return value


def _optional_text(form: Mapping[str, str], name: str, limit: int) -> str | None:
    value = form.get(name) or None
    if value is not None and len(value) > limit:
        raise ParamError(name, f"cannot be more than {limit} characters")
    return value


def parse_payment(form: Mapping[str, str], version: str) -> Payment:
    """The payment a record_payment form asks for, or `ParamError` for the first bad parameter."""
    names = NAMES[version]
    method = _required(form, names.payment_method)
    if method not in PAYMENT_METHODS[version]:
        raise ParamError(names.payment_method, f"invalid value '{method}'")
    if version == "v1":
        _required(form, names.date)  # paid_at is required in v1; transaction[date] is optional in v2
    date = _optional_int(form, names.date)
    amount = _optional_int(form, names.amount)
    if amount is not None and amount <= 0:
        raise ParamError(names.amount, "should be greater than 0")
    reference = _optional_text(form, names.reference_number, _MAX_REFERENCE)
    note = _optional_text(form, names.note, _MAX_NOTE)
    return Payment(amount, method, reference, date, note)
