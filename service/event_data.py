"""The `data` of `bank.deposit` and `check.scan`: validated field by field into a `Payment`. Pure.

Also the contract's patterns and limits, in one place: validated here, published in
/openapi.json (service/openapi.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any

from service.money import AmountError, UnknownCurrency, exponent, to_major_string, to_minor_units

# re.ASCII throughout: without it `\d` also matches other scripts' digits ("١٢٣٤", "１２").
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2}))?\Z", re.ASCII
)
# The contract's patterns and limits, in one place: validated here, published in /openapi.json
# (service/openapi.py). Patterns are unanchored bodies in the syntax both Python and JSON Schema
# read; `anchored` makes a whole-string Python pattern of one.
INVOICE_ID_PATTERN = r"(?!\.+$)[A-Za-z0-9_.\-]{1,50}"
LAST4_PATTERN = r"[0-9]{4}"
ROUTING_NUMBER_PATTERN = r"[0-9]{9}"
FINGERPRINT_PATTERN = r"[A-Za-z0-9_:=+/\-]{1,128}"
MAX_TEXT = 2000  # remittance_information, memo
MAX_REFERENCE = 100  # bank_reference, check_number, each of references
MAX_NAME = 200  # payer.name
MAX_ALLOCATIONS = 100
MAX_REFERENCES = 50


def anchored(body: str) -> re.Pattern[str]:
    """A contract pattern matching a whole string (and no trailing newline), ASCII classes only."""
    return re.compile(rf"^(?:{body})\Z", re.ASCII)


INVOICE_ID = anchored(INVOICE_ID_PATTERN)
_INVOICE_ID_RULE = "1-50 letters, digits, '_', '-' or '.'"
# Party fields: name -> (pattern, what the sender is told when a value does not match).
_LAST4 = (anchored(LAST4_PATTERN), "must be 4 digits (the last four, never a full account number)")
_PAYER_FIELDS = {
    "account_last4": _LAST4,
    "account_fingerprint": (
        anchored(FINGERPRINT_PATTERN),
        "must be 1-128 characters of A-Z, a-z, 0-9, '_', ':', '=', '+', '/' or '-'",
    ),
}
_MICR_FIELDS = {
    "routing_number": (anchored(ROUTING_NUMBER_PATTERN), "must be 9 digits"),
    "account_last4": _LAST4,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_ALLOCATION_KEYS = frozenset({"invoice_id", "amount"})

# type -> (reference field, time field)
_SHAPES = {"bank.deposit": ("bank_reference", "booked_at"), "check.scan": ("check_number", "scanned_at")}
PAYMENT_METHODS = {"bank.deposit": "bank_transfer", "check.scan": "check"}


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failing field: its JSON path in the event, what is wrong, and the batch index."""

    field: str
    message: str
    index: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out["index"] = self.index
        return out


@dataclass(frozen=True, slots=True)
class Allocation:
    """One invoice's share of a payment (SPEC §4), in minor units."""

    invoice_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class Payment:
    """What an event says was paid, normalised: integer minor units and an aware UTC time.

    `allocations` (when given) sum exactly to `amount` and never come with `invoice_id`;
    `references` are the invoice numbers or creditor references the remitter gave, in order.
    """

    method: str  # Chargebee payment_method: bank_transfer or check
    amount: int
    currency: str
    paid_at: datetime
    reference_number: str
    invoice_id: str | None
    remittance_information: str | None
    memo: str | None
    allocations: tuple[Allocation, ...] = ()
    references: tuple[str, ...] = ()
    payer_name: str | None = None  # data.payer.name, as the bank gave it
    payer_fingerprint: str | None = None  # data.payer.account_fingerprint


def parse_time(value: Any) -> datetime:
    """An RFC 3339 date-time (or full-date, taken as midnight UTC) as an aware UTC datetime."""
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an RFC 3339 date-time such as 2026-11-25T10:00:00Z")
    try:
        if len(value) == 10:
            parsed = datetime.combine(date.fromisoformat(value), time(), UTC)
        else:
            parsed = datetime.fromisoformat(value.replace("z", "Z")).astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("must be a real calendar date and time") from None
    # Chargebee takes Unix timestamps; nothing before the epoch can be a payment we record.
    if parsed.year < 1970:
        raise ValueError("must be after 1970-01-01")
    return parsed


def _text(
    data: dict[str, Any], key: str, errors: list[FieldError], *, limit: int, required: bool
) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            errors.append(FieldError(f"data.{key}", "is required"))
        return None
    if not isinstance(value, str) or not value.strip():
        errors.append(FieldError(f"data.{key}", "must be a non-empty string"))
        return None
    if len(value) > limit:
        errors.append(FieldError(f"data.{key}", f"must be at most {limit} characters"))
        return None
    return value


def _check_party(
    data: dict[str, Any],
    key: str,
    fields: dict[str, tuple[re.Pattern[str], str]],
    errors: list[FieldError],
) -> None:
    value = data.get(key)
    if value is None:
        return
    if not isinstance(value, dict):
        errors.append(FieldError(f"data.{key}", "must be an object"))
        return
    for name, item in value.items():
        rule = fields.get(name)
        if name == "name":
            if not isinstance(item, str) or len(item) > MAX_NAME:
                errors.append(
                    FieldError(f"data.{key}.name", f"must be a string of at most {MAX_NAME} characters")
                )
        elif rule is None:
            errors.append(FieldError(f"data.{key}.{name}", "is not a known field"))
        elif not isinstance(item, str) or not rule[0].match(item):
            errors.append(FieldError(f"data.{key}.{name}", rule[1]))


def _minor_units(value: Any, currency: str | None, field: str, errors: list[FieldError]) -> int | None:
    """`value` in minor units of `currency` (None when the currency already failed), or None."""
    if not isinstance(value, str):
        errors.append(FieldError(field, "is required: a decimal string in major units, e.g. '1250.00'"))
        return None
    if currency is None:
        return None
    try:
        return to_minor_units(value, currency)
    except AmountError as exc:
        errors.append(FieldError(field, str(exc)))
        return None


def _amount(data: dict[str, Any], errors: list[FieldError]) -> tuple[int | None, str | None]:
    """`data.amount` in minor units and `data.currency`; either is None when it failed."""
    currency = data.get("currency")
    if not isinstance(currency, str):
        errors.append(FieldError("data.currency", "is required: an ISO 4217 code such as USD"))
        currency = None
    else:
        try:
            exponent(currency)
        except UnknownCurrency as exc:
            errors.append(FieldError("data.currency", str(exc)))
            currency = None
    return _minor_units(data.get("amount"), currency, "data.amount", errors), currency


def _allocation(path: str, item: Any, currency: str | None, errors: list[FieldError]) -> Allocation | None:
    if not isinstance(item, dict):
        errors.append(FieldError(path, "must be an object {invoice_id, amount}"))
        return None
    before = len(errors)
    for key in sorted(item.keys() - _ALLOCATION_KEYS):
        errors.append(FieldError(f"{path}.{key}", "is not a known field"))
    invoice_id = item.get("invoice_id")
    if not isinstance(invoice_id, str) or not INVOICE_ID.match(invoice_id):
        rule = "is required: " if invoice_id is None else "must be "
        errors.append(FieldError(f"{path}.invoice_id", rule + _INVOICE_ID_RULE))
    amount = _minor_units(item.get("amount"), currency, f"{path}.amount", errors)
    if len(errors) > before or amount is None:
        return None
    return Allocation(invoice_id=str(invoice_id), amount=amount)


def _allocations(
    data: dict[str, Any], amount: int | None, currency: str | None, errors: list[FieldError]
) -> tuple[Allocation, ...]:
    """`data.allocations`: each invoice once, amounts in the payment's currency summing to it."""
    value = data.get("allocations")
    if value is None:
        return ()
    if data.get("invoice_id") is not None:
        message = "give either data.invoice_id or data.allocations, not both"
        errors.append(FieldError("data.invoice_id", message))
    if not isinstance(value, list) or not 0 < len(value) <= MAX_ALLOCATIONS:
        message = f"must be a list of 1 to {MAX_ALLOCATIONS} objects {{invoice_id, amount}}"
        errors.append(FieldError("data.allocations", message))
        return ()
    before = len(errors)
    allocations: list[Allocation] = []
    first_at: dict[str, int] = {}
    for index, item in enumerate(value):
        allocation = _allocation(f"data.allocations[{index}]", item, currency, errors)
        if allocation is None:
            continue
        if allocation.invoice_id in first_at:
            where = f"data.allocations[{first_at[allocation.invoice_id]}]"
            message = f"{allocation.invoice_id!r} is already allocated at {where}; give each invoice once"
            errors.append(FieldError(f"data.allocations[{index}].invoice_id", message))
        first_at.setdefault(allocation.invoice_id, index)
        allocations.append(allocation)
    if len(errors) > before or amount is None or currency is None:
        return ()
    total = sum(a.amount for a in allocations)
    if total != amount:
        message = (
            f"the allocations sum to {to_major_string(total, currency)} but data.amount is "
            f"{to_major_string(amount, currency)}: they must be equal"
        )
        errors.append(FieldError("data.allocations", message))
        return ()
    return tuple(allocations)


def _references(data: dict[str, Any], errors: list[FieldError]) -> tuple[str, ...]:
    """`data.references`: the remitter's invoice numbers or creditor references, in their order."""
    value = data.get("references")
    if value is None:
        return ()
    if not isinstance(value, list) or not 0 < len(value) <= MAX_REFERENCES:
        errors.append(FieldError("data.references", f"must be a list of 1 to {MAX_REFERENCES} strings"))
        return ()
    failing = [i for i, item in enumerate(value) if not _is_reference(item)]
    for index in failing:
        message = f"must be a non-empty string of at most {MAX_REFERENCE} characters, no control characters"
        errors.append(FieldError(f"data.references[{index}]", message))
    return () if failing else tuple(value)


def _is_reference(item: Any) -> bool:
    return (
        isinstance(item, str)
        and bool(item.strip())
        and len(item) <= MAX_REFERENCE
        and not _CONTROL.search(item)
    )


def payment_of(event_type: str, data: dict[str, Any], errors: list[FieldError]) -> Payment | None:
    """The payment an event's `data` describes, or None with every failing field added to `errors`."""
    reference_key, time_key = _SHAPES[event_type]
    before = len(errors)
    amount, currency = _amount(data, errors)
    paid_at: datetime | None = None
    if time_key not in data:
        errors.append(FieldError(f"data.{time_key}", "is required"))
    else:
        try:
            paid_at = parse_time(data[time_key])
        except ValueError as exc:
            errors.append(FieldError(f"data.{time_key}", str(exc)))
    reference = _text(data, reference_key, errors, limit=MAX_REFERENCE, required=True)
    invoice_id = data.get("invoice_id")
    if invoice_id is not None and (not isinstance(invoice_id, str) or not INVOICE_ID.match(invoice_id)):
        errors.append(FieldError("data.invoice_id", "must be " + _INVOICE_ID_RULE))
    allocations = _allocations(data, amount, currency, errors)
    references = _references(data, errors)
    remittance = _text(data, "remittance_information", errors, limit=MAX_TEXT, required=False)
    memo = _text(data, "memo", errors, limit=MAX_TEXT, required=False)
    _check_party(data, "payer", _PAYER_FIELDS, errors)
    if event_type == "check.scan":
        _check_party(data, "micr", _MICR_FIELDS, errors)
    elif "micr" in data:
        errors.append(FieldError("data.micr", "is only allowed on check.scan events"))
    if len(errors) > before or amount is None or currency is None or paid_at is None or reference is None:
        return None
    payer = data.get("payer") or {}
    return Payment(
        method=PAYMENT_METHODS[event_type],
        amount=amount,
        currency=currency,
        paid_at=paid_at,
        reference_number=reference,
        invoice_id=invoice_id,
        remittance_information=remittance,
        memo=memo,
        allocations=allocations,
        references=references,
        payer_name=(payer.get("name") or "").strip() or None,
        payer_fingerprint=payer.get("account_fingerprint"),
    )
