"""BAI lockbox transmissions: fixed-width records, one check credit per 6 record, totals checked. Pure.

Records by the type in column 1: 1 immediate address header (first), 2 service, 5 lockbox/batch
header, 6 detail (one check), 4 overflow (invoices of the check before it), 7 batch total,
8 lockbox/service total, 9 file trailer (last; lines of nothing but 9s after it are block padding).
Banks move fields around, so the columns are configuration (`Options.lockbox_columns`, checked by
`layout()` at start-up). The default, from the commonly published BAI lockbox layout (1-based,
inclusive; amounts are implied cents, USD; "-" = not in the default layout):

| record | fields and their columns                                                            |
|--------|------------------------------------------------------------------------------------|
| 5      | `lockbox_number` 8-14, `deposit_date` 15-20 (YYMMDD)                               |
| 6      | `batch_number` 2-4, `item_number` 5-7, `check_amount` 8-17, `micr_routing` 18-26,  |
|        | `micr_account` 27-36, `check_number` 37-46, `remitter_name` -                      |
| 4      | `overflow_batch` 2-4, `overflow_item` 5-7, `overflow_sequence` 9-10 (01, 02, ...), |
|        | `overflow_last` 11 (9 = last, 0 = more), `invoice_1` 12-21, `invoice_amount_1`     |
|        | 22-31, `invoice_2` 32-41, `invoice_amount_2` 42-51, `invoice_3` 52-61,             |
|        | `invoice_amount_3` 62-71, `invoice_4` -, `invoice_amount_4` -                      |
| 7      | `batch_count` 21-23, `batch_amount` 24-33                                          |
| 8      | `lockbox_count` 21-24, `lockbox_amount` 25-34                                      |
| 9      | `file_count` 2-7, `file_amount` 8-19                                               |

Every field but lockbox_number, deposit_date, batch_number, item_number, check_amount,
overflow_sequence and overflow_last may be switched off with (0, 0). Counts are numbers of checks
(6 records); a total that differs from the checks it covers fails the file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date

from service.bankfiles.model import CHECK, Credit, FileInvalid, Options, Statement
from service.money import AmountError, exponent, to_major_string, to_minor_units

FORMAT, VERSION = "lockbox", "BAI"
Span = tuple[int, int]
INVOICE_SLOTS = 4


@dataclass(frozen=True, slots=True)
class Layout:
    """Where each field sits: (first, last) column, 1-based and inclusive; None = not in this layout."""

    lockbox_number: Span | None = (8, 14)
    deposit_date: Span | None = (15, 20)
    batch_number: Span | None = (2, 4)
    item_number: Span | None = (5, 7)
    check_amount: Span | None = (8, 17)
    micr_routing: Span | None = (18, 26)
    micr_account: Span | None = (27, 36)
    check_number: Span | None = (37, 46)
    remitter_name: Span | None = None
    overflow_batch: Span | None = (2, 4)
    overflow_item: Span | None = (5, 7)
    overflow_sequence: Span | None = (9, 10)
    overflow_last: Span | None = (11, 11)
    invoice_1: Span | None = (12, 21)
    invoice_amount_1: Span | None = (22, 31)
    invoice_2: Span | None = (32, 41)
    invoice_amount_2: Span | None = (42, 51)
    invoice_3: Span | None = (52, 61)
    invoice_amount_3: Span | None = (62, 71)
    invoice_4: Span | None = None
    invoice_amount_4: Span | None = None
    batch_count: Span | None = (21, 23)
    batch_amount: Span | None = (24, 33)
    lockbox_count: Span | None = (21, 24)
    lockbox_amount: Span | None = (25, 34)
    file_count: Span | None = (2, 7)
    file_amount: Span | None = (8, 19)
    currency: str = "USD"  # lockbox is a US service; not a column, so not in lockbox_columns


DEFAULT = Layout()
_REQUIRED = frozenset(
    ("lockbox_number", "deposit_date", "batch_number", "item_number", "check_amount")
    + ("overflow_sequence", "overflow_last")
)
_RECORD = {"lockbox_number": "5", "deposit_date": "5", "batch_count": "7", "batch_amount": "7"}
_RECORD |= {name: "6" for name in "batch_number item_number check_amount micr_routing".split()}
_RECORD |= {name: "6" for name in "micr_account check_number remitter_name".split()}
_RECORD |= {name: "4" for name in "overflow_batch overflow_item overflow_sequence overflow_last".split()}
_RECORD |= {f"invoice{kind}_{n}": "4" for kind in ("", "_amount") for n in range(1, INVOICE_SLOTS + 1)}
_RECORD |= {"lockbox_count": "8", "lockbox_amount": "8", "file_count": "9", "file_amount": "9"}


def layout(columns: Mapping[str, tuple[int, int]]) -> Layout:
    """The default layout with a source's `lockbox_columns` applied; ValueError says what is wrong."""
    changes: dict[str, Span | None] = {}
    for name, span in columns.items():
        if name not in _RECORD:
            raise ValueError(f"lockbox_columns: unknown field {name!r}; known fields: {', '.join(_RECORD)}")
        changes[name] = _span(name, span)
    result = dataclasses.replace(DEFAULT, **changes)  # type: ignore[arg-type]
    _check_overlaps(result)
    for n in range(1, INVOICE_SLOTS + 1):
        if getattr(result, f"invoice_amount_{n}") and not getattr(result, f"invoice_{n}"):
            raise ValueError(f"lockbox_columns: invoice_amount_{n} is set but invoice_{n} is not")
    return result


def _span(name: str, span: object) -> Span | None:
    if not (isinstance(span, tuple | list) and len(span) == 2 and all(type(c) is int for c in span)):
        raise ValueError(f"lockbox_columns: {name} must be (first column, last column), got {span!r}")
    first, last = span
    if (first, last) == (0, 0) and name not in _REQUIRED:
        return None
    if not 2 <= first <= last <= 1000:  # column 1 is the record type
        raise ValueError(f"lockbox_columns: {name} = ({first}, {last}) is not 2 <= first <= last <= 1000")
    return (first, last)


def _check_overlaps(spec: Layout) -> None:
    """Two fields of one record sharing a column is a typo in the configuration, not a layout."""
    placed = sorted((_RECORD[n], getattr(spec, n), n) for n in _RECORD if getattr(spec, n) is not None)
    for (record, (_, last), name), (other, (first, _), later) in zip(placed, placed[1:], strict=False):
        if record == other and first <= last:
            raise ValueError(f"lockbox_columns: {name} and {later} overlap in the {record} record")


@dataclass(slots=True)
class _Check:
    """A 6 record waiting for its overflow (4) records."""

    line: int
    lockbox: str
    deposited: date
    batch: str
    item: str
    amount: int
    text: bytes
    invoices: list[tuple[str, int | None]] = dataclasses.field(default_factory=list)
    overflows: int = 0
    complete: bool = False  # the last overflow came


@dataclass(slots=True)
class _Total:
    count: int = 0
    amount: int = 0

    def add(self, amount: int) -> None:
        self.count += 1
        self.amount += amount


class _Transmission:
    """The reading of one file, record by record: state lives here, never beyond one parse()."""

    def __init__(self, spec: Layout) -> None:
        self.spec = spec
        self.credits: list[Credit] = []
        self.references: set[str] = set()
        self.header: tuple[str, date] | None = None
        self.check: _Check | None = None
        self.totals = {"7": _Total(), "8": _Total(), "9": _Total()}
        self.ended = False

    def feed(self, line: int, record: bytes) -> None:
        kind = chr(record[0])
        if self.ended:
            if record.strip(b"9 "):
                raise FileInvalid(f"line {line}", "a record after the file trailer (9)")
            return
        if (line == 1) != (kind == "1"):
            raise FileInvalid(f"line {line}", "the file must begin with one immediate address header (1)")
        if kind == "4":
            self._overflow(line, record)
            return
        if kind in ("1", "2"):
            return
        self._close_check()
        if kind == "5":
            self._header(line, record)
        elif kind == "6":
            self._detail(line, record)
        elif kind in ("7", "8", "9"):
            self._total(line, record, kind)
        else:
            raise FileInvalid(f"line {line}", f"unknown record type {kind!r} (expected 1, 2, 4-9)")

    def _header(self, line: int, record: bytes) -> None:
        lockbox = _required(record, self.spec.lockbox_number, line, "lockbox number")
        self.header = (lockbox, _date(_required(record, self.spec.deposit_date, line, "deposit date"), line))

    def _detail(self, line: int, record: bytes) -> None:
        if self.header is None:
            raise FileInvalid(f"line {line}", "a check (6) before any lockbox header (5)")
        digits = _required(record, self.spec.check_amount, line, "check amount")
        amount = _amount(digits, self.spec.currency, line, "check amount")
        batch = _required(record, self.spec.batch_number, line, "batch number")
        item = _required(record, self.spec.item_number, line, "item number")
        self.check = _Check(line, *self.header, batch, item, amount, record)
        for total in self.totals.values():
            total.add(amount)

    def _overflow(self, line: int, record: bytes) -> None:
        check, spec = self.check, self.spec
        if check is None:
            raise FileInvalid(f"line {line}", "an overflow record (4) that follows no check (6)")
        if check.complete:
            raise FileInvalid(
                f"line {line}", f"an overflow record after the last one of the check at line {check.line}"
            )
        for span, own, what in (
            (spec.overflow_batch, check.batch, "batch"),
            (spec.overflow_item, check.item, "item"),
        ):
            if span is not None and _text(record, span) != own:
                raise FileInvalid(
                    f"line {line}", f"an overflow record for another {what} than the check before it"
                )
        sequence = _required(record, spec.overflow_sequence, line, "overflow sequence number")
        if not sequence.isdigit() or int(sequence) != check.overflows + 1:
            raise FileInvalid(
                f"line {line}", f"overflow sequence {sequence!r}, expected {check.overflows + 1}"
            )
        last = _text(record, spec.overflow_last)
        if last not in ("0", "9"):
            raise FileInvalid(f"line {line}", f"last-overflow flag {last!r}, expected 9 (last) or 0 (more)")
        check.overflows, check.complete = check.overflows + 1, last == "9"
        check.invoices.extend(self._invoices(line, record))

    def _invoices(self, line: int, record: bytes) -> list[tuple[str, int | None]]:
        found: list[tuple[str, int | None]] = []
        for n in range(1, INVOICE_SLOTS + 1):
            number = _text(record, getattr(self.spec, f"invoice_{n}"))
            digits = _text(record, getattr(self.spec, f"invoice_amount_{n}"))
            amount = (
                None if not digits.strip("0") else _amount(digits, self.spec.currency, line, "invoice amount")
            )
            if amount is not None and not number:
                raise FileInvalid(f"line {line}", f"an invoice amount (slot {n}) without an invoice number")
            if number:
                found.append((number, amount))
        return found

    def _close_check(self) -> None:
        check, self.check = self.check, None
        if check is None:
            return
        if check.overflows and not check.complete:
            raise FileInvalid(
                f"line {check.line}", "the check's overflow records end without the last one (9)"
            )
        reference = f"{check.lockbox}:{check.deposited:%Y%m%d}:{check.batch}:{check.item}"
        if reference in self.references:
            raise FileInvalid(
                f"line {check.line}", f"a second check with batch {check.batch} item {check.item}"
            )
        self.references.add(reference)
        self.credits.append(_credit(check, reference, len(self.credits), self.spec))

    def _total(self, line: int, record: bytes, kind: str) -> None:
        name = {"7": "batch", "8": "lockbox", "9": "file"}[kind]
        count_span, amount_span = getattr(self.spec, f"{name}_count"), getattr(self.spec, f"{name}_amount")
        held = self.totals[kind]
        said = _Total(
            _number(record, count_span, line, held.count), _number(record, amount_span, line, held.amount)
        )
        if said != held:
            money = self.spec.currency
            said_amount, held_amount = (
                to_major_string(said.amount, money),
                to_major_string(held.amount, money),
            )
            raise FileInvalid(
                f"line {line}",
                f"the {name} total ({kind}) says {said.count} checks for {said_amount}, "
                f"but the {name} holds {held.count} checks for {held_amount}",
            )
        self.totals[kind] = _Total()
        self.ended = kind == "9"


def parse(data: bytes, options: Options) -> Statement:
    """The checks of a lockbox transmission, one CHECK credit each, in file order."""
    try:
        spec = layout(options.lockbox_columns)
    except ValueError as error:
        raise FileInvalid("lockbox_columns", str(error)) from None
    reading = _Transmission(spec)
    last = 0
    for last, record in enumerate(data.splitlines(), 1):
        if record.strip():
            reading.feed(last, record)
        elif last == 1:
            raise FileInvalid("line 1", "the file must begin with one immediate address header (1)")
    if not reading.ended:
        raise FileInvalid(f"line {last}", "the file ends without its trailer (9): it is truncated")
    lockboxes = {credit.account for credit in reading.credits}
    return Statement(FORMAT, VERSION, len(lockboxes), len(reading.credits), tuple(reading.credits))


def _credit(check: _Check, reference: str, position: int, spec: Layout) -> Credit:
    numbers = tuple(number for number, _ in check.invoices)
    amounts = [amount for _, amount in check.invoices]
    exact = bool(numbers) and None not in amounts and sum(a or 0 for a in amounts) == check.amount
    micr_account = _text(check.text, spec.micr_account) or None
    return Credit(
        kind=CHECK,
        entry=f"line {check.line}",
        position=position,
        account=check.lockbox,
        amount=check.amount,
        currency=spec.currency,
        booked_at=check.deposited,
        reference=reference,
        check_number=_text(check.text, spec.check_number) or None,
        references=numbers,
        allocations=tuple((n, a) for n, a in check.invoices if a is not None) if exact else (),
        payer_name=_text(check.text, spec.remitter_name) or None,
        payer_account=micr_account,
        micr_routing=_text(check.text, spec.micr_routing) or None,
        micr_account=micr_account,
    )


def _text(record: bytes, span: Span | None) -> str:
    """A field's text, trimmed; a record shorter than the layout has blanks at its end."""
    if span is None:
        return ""
    raw = record[span[0] - 1 : span[1]]
    try:
        return raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return raw.decode("latin-1").strip()


def _required(record: bytes, span: Span | None, line: int, what: str) -> str:
    value = _text(record, span)
    if not value:
        raise FileInvalid(f"line {line}", f"the {what} is blank (columns {span})")
    return value


def _amount(digits: str, currency: str, line: int, what: str) -> int:
    """Implied minor units ("0000012550" = 125.50 USD), exactly; zero or non-digits fail the file."""
    if not (digits.isascii() and digits.isdigit()):
        raise FileInvalid(f"line {line}", f"the {what} {digits!r} is not a number")
    places = exponent(currency)
    whole, fraction = (
        (digits[:-places] or "0", digits[-places:].rjust(places, "0")) if places else (digits, "")
    )
    try:
        return to_minor_units(f"{whole}.{fraction}" if places else whole, currency)
    except AmountError as error:
        raise FileInvalid(f"line {line}", f"the {what}: {error}") from None


def _number(record: bytes, span: Span | None, line: int, held: int) -> int:
    """A count or total in a 7/8/9 record (zero is fine there); a field not in the layout agrees."""
    if span is None:
        return held
    digits = _text(record, span)
    if not (digits.isascii() and digits.isdigit()):
        raise FileInvalid(f"line {line}", f"the total {digits!r} (columns {span}) is not a number")
    return int(digits)


def _date(text: str, line: int) -> date:
    """YYMMDD, 20YY: lockbox services began long after 1999."""
    if len(text) == 6 and text.isascii() and text.isdigit():
        try:
            return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
        except ValueError:
            pass
    raise FileInvalid(f"line {line}", f"the deposit date {text!r} is not a YYMMDD date")
