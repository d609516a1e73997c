"""The records and fields of a BAI2 file, read exactly: continuations, amounts, a 16 record's layout. Pure.

- Fields are split by commas; "/" ends the fields of a physical record, and an 88 continuation
  starts a new field, except in a 16 record's text, its last field, which runs to the end of the
  record and on through its 88s (a "/" ending a line of text is dropped). Text continued from a
  line that filled the physical record length (the 01 record's, else 80) was wrapped mid-word
  and is joined directly; otherwise with a space.
- A 16 record's funds type moves the fields after it: S adds three amounts, V a date and a time,
  D a count and that many (days, amount) pairs; 0, 1, 2, Z and blank add none.
- Numbers are ASCII digits only: int() alone would also take "1_000", " 5" and other scripts' digits.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

from service.bankfiles.model import FileInvalid

DEFAULT_RECORD_LENGTH = 80
_RECORD_CODES = frozenset({"01", "02", "03", "16", "49", "88", "98", "99"})
_PLAIN_FUNDS = {"": 0, "0": 0, "1": 0, "2": 0, "Z": 0, "S": 3, "V": 2}  # funds type -> fields it adds
_MAX_DIGITS = 18  # an amount or total past this is no amount (2**63 has 19 digits)
_LONG_DIGITS = re.compile(r"[0-9]{5,}")
# Who paid, in the text styles of ACH (ORIG CO NAME:), wires (ORG=, B/O:, BY ORDER OF:) and Citi
# (BO1:, after BO: the account), up to the next keyword of those styles, two spaces, "*" or "\"
# (ACH addenda separators) or the end. "ORG=/123 NAME" names an account first: it is left out.
_KEYS = (
    "ORIG CO NAME|ORIG NAME|ORIGINATOR NAME|ORIGINATOR|BY ORDER OF|B/O|BO1|ORG|ORIG ID|ORIG BK|"
    "ORIG ACCT|CO ID|DESC DATE|CO ENTRY DESCR|ENTRY DESCR|SEC|TRACE#|TRACE|EED|IND ID|IND NAME|"
    "REF|OBI|OGB|BNF|BBI|BBK|IMAD|OMAD|TRN|RFB|SND BK|INFO|ADDR|BO|BO2|BO3|OB|OB1|OB2|OB3|BI"
)
_PAYER = re.compile(
    r"(?<![A-Z0-9/])(?:ORIG CO NAME|ORIG NAME|ORIGINATOR NAME|ORIGINATOR|BY ORDER OF|B/O|BO1|ORG)"
    rf"\s?[:=]\s*(?:/\S*\s+)?(.*?)\s*(?=\s(?:{_KEYS})\s?[:=]|\s\s|[*\\]|$)"
)


@dataclass(slots=True)
class Record:
    """One logical record: its code, its first line, and the text after "NN," of each physical record."""

    code: str
    line: int
    parts: list[str]

    @property
    def where(self) -> str:
        return f"line {self.line}"

    def fields(self, length: int) -> list[str]:
        """Its fields, at least `length` of them (missing ones blank), each physical record ending a field."""
        fields = ",".join(part.removesuffix("/") for part in self.parts).split(",")
        return padded(fields, length)


def records(data: bytes) -> Iterator[Record]:
    """The logical records of a file: each record with its 88 continuations; blank lines are passed over."""
    current: Record | None = None
    for number, raw in enumerate(data.splitlines(), 1):
        line = _decoded(raw, number).strip()
        if not line:
            continue
        code = line[:2]
        if code not in _RECORD_CODES or line[2:3] != ",":
            raise FileInvalid(f"line {number}", f"{shown(line[:3])} does not begin a BAI2 record")
        if code != "88":
            if current is not None:
                yield current
            current = Record(code, number, [line[3:]])
        elif current is None:
            raise FileInvalid(f"line {number}", "an 88 continuation with no record before it")
        else:
            current.parts.append(line[3:])
    if current is not None:
        yield current


def _decoded(raw: bytes, number: int) -> str:
    """A line as text: BAI2 is ASCII; UTF-8 is taken for names and text; anything else is refused
    rather than guessed (a latin-1 reading could mangle a payer's name silently)."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        pass
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        why = f"byte 0x{raw[exc.start]:02X} in column {exc.start + 1} is not ASCII (nor UTF-8)"
        raise FileInvalid(f"line {number}", why) from None


def detail_fields(record: Record, record_length: int) -> tuple[list[str], str | None]:
    """A 16 record's fields up to its customer reference (type code, amount, funds type, its
    availability, bank reference, customer reference), and its text (None if blank)."""
    head: list[str] = []
    text: str | None = None
    wrapped = False
    for part in record.parts:
        body = part.removesuffix("/")
        rest = (
            _take_fields(head, body, record.where) if len(head) < _head_length(head, record.where) else body
        )
        if rest is not None:
            text = rest if text is None else text + ("" if wrapped else " ") + rest
        wrapped = len(part) + 3 == record_length
    head = padded(head, _head_length(head, record.where))  # a record that ended early: blank fields
    return head, (text.strip() or None) if text is not None else None


def _take_fields(head: list[str], body: str, where: str) -> str | None:
    """Move fields from `body` into `head` until it is complete; return what is left, the text
    (None when the physical record ends first: the next one starts a field)."""
    need = _head_length(head, where)
    while len(head) < need:
        pieces = body.split(",", need - len(head))
        if len(pieces) <= need - len(head):
            head.extend(pieces)
            return None
        head.extend(pieces[:-1])
        body = pieces[-1]
        need = _head_length(head, where)
    return body


def _head_length(head: list[str], where: str) -> int:
    """How many fields come before a 16 record's text, as far as `head` tells (funds type, D's count)."""
    if len(head) < 3:
        return 3
    extra = _PLAIN_FUNDS.get(head[2])
    if extra is not None:
        return 5 + extra
    if head[2] != "D":
        raise FileInvalid(where, f"funds type {shown(head[2])} is not 0, 1, 2, S, V, D or Z")
    if len(head) < 4:
        return 4
    if not (head[3].isascii() and head[3].isdigit()) or len(head[3]) > 2:
        raise FileInvalid(where, f"distributed availability count {shown(head[3])} is not a number")
    return 6 + 2 * int(head[3])


def summary_total(fields: list[str], where: str) -> int:
    """The sum of the amounts of an 03 record's (type code, amount, item count, funds type) items,
    each followed by its funds type's availability fields."""
    total, at = 0, 0
    while at < len(fields):
        if not fields[at]:  # some banks write ",/" after an item's funds type: a blank field, no item
            at += 1
            continue
        item = padded(fields[at : at + 5], 5)
        total += signed(item[1], where, "amount")
        at += 4 + _head_length(["", "", item[3], item[4]], where) - 5
    return total


def padded(fields: list[str], length: int) -> list[str]:
    return fields + [""] * (length - len(fields)) if len(fields) < length else fields


def amount(text: str, where: str) -> int:
    """A 16 record's amount: unsigned digits in minor units; blank is zero."""
    if not text:
        return 0
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise FileInvalid(where, f"amount {shown(text)} is not a whole number of minor units")
    return int(text)


def signed(text: str, where: str, what: str) -> int:
    """A summary amount or control total: digits with an optional sign; blank is zero."""
    if not text:
        return 0
    digits = text[1:] if text[0] in "+-" else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > _MAX_DIGITS:
        raise FileInvalid(where, f"{what} {shown(text)} is not a whole number of minor units")
    return -int(digits) if text[0] == "-" else int(digits)


def number(text: str, where: str) -> int:
    """A trailer's count of records, accounts or groups: digits, required."""
    if not (text.isascii() and text.isdigit()) or len(text) > _MAX_DIGITS:
        raise FileInvalid(where, f"count {shown(text)} is not a number")
    return int(text)


def as_of_date(text: str, where: str) -> date:
    """An 02 record's as-of date, YYMMDD, taken as 20YY: a payment is not from the 1900s."""
    if len(text) == 6 and text.isascii() and text.isdigit():
        try:
            return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
        except ValueError:
            pass
    raise FileInvalid(where, f"as-of date {shown(text)} is not a date (YYMMDD)")


def payer_name(text: str) -> str | None:
    """The payer's name where the text names one in a style of _PAYER; None otherwise."""
    match = _PAYER.search(text)
    return (match.group(1)[:140] or None) if match else None


def shown(value: str) -> str:
    """A field as an error quotes it: short, and no run of digits long enough to be an account number."""
    return repr(_LONG_DIGITS.sub(lambda m: "..." + m[0][-4:], value[:24]))
