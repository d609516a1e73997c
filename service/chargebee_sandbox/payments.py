"""The record_payment form, v1 and v2 parameter names, parsed into a `Payment` (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from service.chargebee_sandbox.replies import ParamError

PAYMENT_METHODS: Final = frozenset(
    "card cash check chargeback bank_transfer amazon_payments paypal_express_checkout direct_debit "
    "alipay unionpay apple_pay wechat_pay ach_credit sepa_credit ideal google_pay sofort bancontact "
    "giropay dotpay upi netbanking_emandates custom boleto venmo pay_to faster_payments "
    "sepa_instant_transfer automated_bank_transfer klarna_pay_now online_banking_poland other".split()
)
_MAX_REFERENCE = 100


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
    date: int
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
        raise ParamError(name, "cannot be blank", "param_not_present")
    return value


def _required_int(form: Mapping[str, str], name: str) -> int:
    text = _required(form, name)
    value = parse_integer(text)
    if value is None:
        raise ParamError(name, f"invalid integer value '{text}'")
    return value


def _optional_int(form: Mapping[str, str], name: str) -> int | None:
    return _required_int(form, name) if form.get(name) else None


def parse_payment(form: Mapping[str, str], version: str) -> Payment:
    """The payment a record_payment form asks for, or `ParamError` for the first bad parameter."""
    names = NAMES[version]
    method = _required(form, names.payment_method)
    if method not in PAYMENT_METHODS:
        raise ParamError(names.payment_method, f"invalid value '{method}'")
    date = _required_int(form, names.date)
    amount = _optional_int(form, names.amount)
    if amount is not None and amount <= 0:
        raise ParamError(names.amount, "should be greater than 0")
    reference = form.get(names.reference_number) or None
    if reference is not None and len(reference) > _MAX_REFERENCE:
        raise ParamError(names.reference_number, f"cannot be more than {_MAX_REFERENCE} characters")
    return Payment(amount, method, reference, date, form.get(names.note) or None)
