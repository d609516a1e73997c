"""BAI2 files (BAI version 2): the booked credits of their 16 records, every control total checked. Pure.

Records must come in BAI2's order (01, then groups of 02, accounts of 03, 16s, 49, then 98; 99
last). Each 49, 98 and 99 trailer must match what its records hold: the sum of amounts (03
summaries and 16 details), the records (88s included), the accounts of a group, the groups of
the file. Amounts are minor units of the account's currency: the 03 record's currency code, else
the 02 group's, else USD (BAI2's default). How fields are read is in bai_records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

# The bai2 package's parser is not used: it keeps no line numbers (nor do its exceptions), fails a
# whole file on a type code outside its table (BAI2 leaves 900-999 to banks), reads amounts with
# int() ("+5", " 5", "1_000" and non-ASCII digits pass) and joins text wrapped mid-word with a
# space. Its table of type codes names the codes in Skipped details and gives the debits past 699.
from bai2.constants import TypeCodes, TypeCodeTransaction  # type: ignore[import-untyped]  # no hints

from service.bankfiles import bai_records as read
from service.bankfiles.bai_records import Record, shown
from service.bankfiles.model import (
    CHECK,
    DEBIT,
    DEPOSIT,
    NOT_A_CREDIT_CODE,
    NOT_BOOKED,
    Credit,
    FileInvalid,
    Options,
    Skipped,
    Statement,
)
from service.money import AmountError, exponent, to_minor_units

FORMAT = "bai2"

# 16-record type codes that are a customer paying, when a source names none (Options).
# Never ZBA (270-278), concentration, automatic or internal transfers, reversals or returns.
DEFAULT_CREDIT_CODES: frozenset[str] = frozenset(
    {
        "115",  # Lockbox Deposit
        "116",  # Item in Lockbox Deposit
        "121",  # EDI Transaction Credit (a CTX payment carrying its remittance)
        "142",  # ACH Credit Received
        "158",  # Real Time Payment Credit
        "164",  # Corporate Trade Payment Credit
        "165",  # Preauthorized ACH Credit
        "166",  # ACH Settlement
        "175",  # Check Deposit Package
        "195",  # Incoming Money Transfer (a wire)
        "206",  # Book Transfer Credit
        "208",  # Individual International Money Transfer Credit
        "301",  # Commercial Deposit
    }
)
# Credit codes that are checks (kind CHECK). The check number is the 16 record's customer
# reference (where the depositor's own number goes), else its bank reference; a check code with
# neither is a DEPOSIT, as a check.scan event needs a check number.
CHECK_CODES: frozenset[str] = frozenset(
    {
        "175",  # Check Deposit Package
        "176",  # Re-presented Check Deposit
        "222",  # Foreign Checks Deposited
    }
)

_NAMES: dict[str, str] = {code: str(entry.description) for code, entry in TypeCodes.items()}
# Debits: 400-699, and the loan and SEPA debits the table marks past 699 (760, 828). A debit is
# never a credit, whatever a source's bai2_credit_codes say.
_DEBITS = frozenset(
    [str(code) for code in range(400, 700)]
    + [code for code, entry in TypeCodes.items() if entry.transaction == TypeCodeTransaction.debit]
)
_GROUP_STATUS = {"1": "update", "2": "deletion", "3": "correction", "4": "test only"}
_BOOKED_STATUS = frozenset({"1", "3"})  # a deletion or a test group pays nothing


def sniff(head: bytes) -> bool:
    """Whether a file's first bytes look like BAI2: an 01 file header record."""
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith(b"01,")


def parse(data: bytes, options: Options) -> Statement:
    """The credits of a BAI2 file, in file order, and the 16 records that are not credits."""
    reader = _Reader(options.bai2_credit_codes or DEFAULT_CREDIT_CODES)
    last = 0
    for record in read.records(data.removeprefix(b"\xef\xbb\xbf")):
        reader.read(record)
        last = record.line + len(record.parts) - 1
    if not reader.ended:
        why = "the file ends before its 99 file trailer" if last else "the file is empty"
        raise FileInvalid(f"line {max(last, 1)}", why)
    return Statement(
        FORMAT, "2", reader.accounts, reader.entries, tuple(reader.credits), tuple(reader.skipped)
    )


@dataclass(slots=True)
class _Totals:
    """What a trailer must match: the amounts summed, the records counted, the accounts or groups."""

    amount: int = 0
    records: int = 0
    children: int = 0


@dataclass(slots=True)
class _Account:
    number: str
    currency: str
    totals: _Totals = field(default_factory=_Totals)


@dataclass(slots=True)
class _Group:
    booked_at: date
    currency: str
    status: str
    totals: _Totals = field(default_factory=_Totals)


class _Reader:
    """Reads the records of one file in order, checking each comes where BAI2 puts it."""

    def __init__(self, credit_codes: frozenset[str]) -> None:
        self.codes = credit_codes
        self.credits: list[Credit] = []
        self.skipped: list[Skipped] = []
        self.accounts = self.entries = 0
        self.record_length = read.DEFAULT_RECORD_LENGTH
        self.file: _Totals | None = None
        self.group: _Group | None = None
        self.account: _Account | None = None
        self.ended = False

    def read(self, record: Record) -> None:
        if self.ended:
            raise FileInvalid(record.where, "a record after the 99 file trailer")
        if self.file is None and record.code != "01":
            raise FileInvalid(record.where, "not a BAI2 file: it does not begin with an 01 file header")
        expected = self._expected()
        if record.code not in expected:
            why = f"a {record.code} record where BAI2 expects {' or '.join(expected)}"
            raise FileInvalid(record.where, why)
        _READERS[record.code](self, record)

    def _expected(self) -> tuple[str, ...]:
        if self.file is None:
            return ("01",)
        if self.account is not None:
            return ("16", "49")
        return ("03", "98") if self.group is not None else ("02", "99")

    def _count(self, record: Record) -> None:
        """Count a record's physical records in each trailer that will count them."""
        rows = len(record.parts)
        if self.file is not None:
            self.file.records += rows
        if self.group is not None:
            self.group.totals.records += rows
        if self.account is not None:
            self.account.totals.records += rows

    def file_header(self, record: Record) -> None:
        values = record.fields(8)
        version, length = values[7].strip(), values[5]
        if version != "2":
            raise FileInvalid(record.where, f"BAI version {shown(version)} is not supported (only 2)")
        if length.isascii() and length.isdigit():
            self.record_length = int(length)
        self.file = _Totals()
        self._count(record)

    def group_header(self, record: Record) -> None:
        values = record.fields(7)
        status = values[2].strip()
        if status not in _GROUP_STATUS:
            raise FileInvalid(record.where, f"group status {shown(status)} is not 1, 2, 3 or 4")
        currency = _currency(values[5], "USD", record.where)
        self.group = _Group(read.as_of_date(values[3], record.where), currency, status)
        self._count(record)

    def account_header(self, record: Record) -> None:
        assert self.group is not None
        values = record.fields(2)
        if not values[0].strip():
            raise FileInvalid(record.where, "the 03 record names no account")
        self.account = _Account(values[0].strip(), _currency(values[1], self.group.currency, record.where))
        self.account.totals.amount = read.summary_total(values[2:], record.where)
        self.accounts += 1
        self._count(record)

    def detail(self, record: Record) -> None:
        assert self.account is not None
        self._count(record)
        self.entries += 1
        head, text = read.detail_fields(record, self.record_length)
        code, amount = head[0], read.amount(head[1], record.where)
        if len(code) != 3 or not (code.isascii() and code.isdigit()):
            raise FileInvalid(record.where, f"type code {shown(code)} is not three digits")
        self.account.totals.amount += amount
        why = self._not_a_credit(code, amount)
        if why is not None:
            self.skipped.append(Skipped(record.where, *why))
        else:
            self.credits.append(self._credit(record.where, code, amount, head, text))

    def _not_a_credit(self, code: str, amount: int) -> tuple[str, str] | None:
        """Why a 16 record is no payment (reason, detail), or None for a credit."""
        assert self.group is not None
        if code in _DEBITS:
            return DEBIT, f"type code {_named(code)} is a debit"
        if code not in self.codes:
            return NOT_A_CREDIT_CODE, f"type code {_named(code)} is not in bai2_credit_codes"
        if self.group.status not in _BOOKED_STATUS:
            status = f"{self.group.status} ({_GROUP_STATUS[self.group.status]})"
            return NOT_BOOKED, f"its group's status is {status}: nothing in it is booked"
        if amount == 0:
            return NOT_BOOKED, "its amount is zero: no payment"
        return None

    def _credit(self, where: str, code: str, amount: int, head: list[str], text: str | None) -> Credit:
        assert self.group is not None and self.account is not None
        currency = self.account.currency
        bank_reference, customer_reference = head[-2].strip() or None, head[-1].strip() or None
        check_number = (customer_reference or bank_reference) if code in CHECK_CODES else None
        return Credit(
            kind=CHECK if check_number else DEPOSIT,
            entry=where,
            position=len(self.credits),
            account=self.account.number,
            amount=_minor_units(amount, currency, where),
            currency=currency,
            booked_at=self.group.booked_at,
            reference=bank_reference,
            check_number=check_number,
            remittance_information=text,
            references=(customer_reference,) if customer_reference else (),
            payer_name=read.payer_name(text) if text else None,
        )

    def account_trailer(self, record: Record) -> None:
        assert self.group is not None and self.account is not None
        self._count(record)
        values, totals = record.fields(2), self.account.totals
        total = read.signed(values[0], record.where, "account control total")
        _agree(record, "account control total", total, totals.amount)
        _agree(record, "number of records", read.number(values[1], record.where), totals.records)
        self.group.totals.amount += total
        self.group.totals.children += 1
        self.account = None

    def group_trailer(self, record: Record) -> None:
        assert self.file is not None and self.group is not None
        self._count(record)
        values, totals = record.fields(3), self.group.totals
        total = read.signed(values[0], record.where, "group control total")
        _agree(record, "group control total", total, totals.amount)
        _agree(record, "number of accounts", read.number(values[1], record.where), totals.children)
        _agree(record, "number of records", read.number(values[2], record.where), totals.records)
        self.file.amount += total
        self.file.children += 1
        self.group = None

    def file_trailer(self, record: Record) -> None:
        assert self.file is not None
        self._count(record)
        values, totals = record.fields(3), self.file
        total = read.signed(values[0], record.where, "file control total")
        _agree(record, "file control total", total, totals.amount)
        _agree(record, "number of groups", read.number(values[1], record.where), totals.children)
        _agree(record, "number of records", read.number(values[2], record.where), totals.records)
        self.ended = True


_READERS = {
    "01": _Reader.file_header,
    "02": _Reader.group_header,
    "03": _Reader.account_header,
    "16": _Reader.detail,
    "49": _Reader.account_trailer,
    "98": _Reader.group_trailer,
    "99": _Reader.file_trailer,
}


def _agree(record: Record, what: str, stated: int, found: int) -> None:
    """A trailer's figure against the one its records add up to."""
    if stated != found:
        why = f"{what} is {stated}, but the records add up to {found}"
        raise FileInvalid(record.where, f"the {record.code} record's {why}")


def _currency(text: str, default: str, where: str) -> str:
    currency = text.strip() or default
    try:
        exponent(currency)
    except AmountError:
        raise FileInvalid(
            where, f"currency {shown(currency)} is not an ISO 4217 code payrelay knows"
        ) from None
    return currency


def _minor_units(amount: int, currency: str, where: str) -> int:
    """A credit's amount, checked by money's rules (at most 15 whole digits, within 64 bits)."""
    places = exponent(currency)
    digits = str(amount).rjust(places + 1, "0")
    decimal = f"{digits[:-places]}.{digits[-places:]}" if places else digits
    try:
        return to_minor_units(decimal, currency)
    except AmountError as exc:
        raise FileInvalid(where, str(exc)) from None


def _named(code: str) -> str:
    name = _NAMES.get(code)
    return f"{code} ({name})" if name else code
