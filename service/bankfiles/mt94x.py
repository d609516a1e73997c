"""SWIFT MT940 statements and MT942 interim reports: each booked `:61:` credit becomes a Credit. Pure.

The `:61:` statement line's grammar is the `mt-940` library's (`mt940.tags.Statement`, and its
ASN Bank variant with a 34-character customer reference when the standard one does not match).
The rest is ours, because the library falls short for payrelay:
- `mt940.parse()` reads a file when the data it is given names an existing path, and a tag's
  `parse()` logs the whole field (payer accounts included) at ERROR when it does not match: we
  only match its compiled patterns;
- it keeps no line numbers, drops `:86:` before the first `:61:` and glues unknown lines onto the
  field before them; we split messages and fields ourselves, with their lines;
- its amounts are exact Decimals, but its `\\d` takes other scripts' digits and "1,2,3" raises a
  bare InvalidOperation; we convert the raw text with service.money (a decimal comma, no more
  decimals than the currency has); it clamps a 30 February instead of refusing it;
- its `:86:` reader knows only the German `NNN?20` style, joins `?2x` lines without spaces and
  splits on every `?`; the `/EREF/…/REMI/` style and free text are not read.
A statement must add up (opening balance plus entries is the closing balance) and an MT942's
`:90C:`/`:90D:` totals must match its entries: a file that does not is truncated or misread.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

import mt940

from service.bankfiles import model
from service.bankfiles.model import Credit, FileInvalid, Options, Skipped, Statement
from service.money import AmountError, exponent, to_minor_units

FORMAT = "mt940"
_STATEMENT_LINES = (mt940.tags.Statement().re, mt940.tags.StatementASNB().re)
_TAG = re.compile(r":([0-9]{2}[A-Z]?|NS):")
_APPLICATION = re.compile(r"\{2:[IO]([0-9]{3})")
_BALANCE = re.compile(r"([CD])([0-9]{6})([A-Z]{3})([0-9]+,[0-9]*)\Z")
_FLOOR = re.compile(r"([A-Z]{3})[DC]?([0-9]+,[0-9]*)\Z")
_TOTAL = re.compile(r"([0-9]{1,5})([A-Z]{3})([0-9]+,[0-9]*)\Z")
_AMOUNT = re.compile(r"([0-9]+),([0-9]*)\Z")
_SIGN = {"C": 1, "RD": 1, "D": -1, "RC": -1}
_SKIP = {"D": (model.DEBIT, "a debit of the account"), "RC": (model.REVERSAL, "a reversal of a credit")}
_SKIP["RD"] = (model.REVERSAL, "a reversal of a debit")
_OPENING = {"940": ("60F", "60M"), "942": ("34F",)}
_IBAN = re.compile(r"[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}\Z")
_SLASH_CODES = "EREF|KREF|MREF|CRED|REMI|ORDP|BENM|NAME|IBAN|BIC|ADDR|CNTP|MARF|CSID|PURP|RTRN|ULTD|ULTC|TRCD"
_SLASH = re.compile(rf"/({_SLASH_CODES})/")
_QUESTION = re.compile(r"\?([0-9]{2})")
_SEPA_EREF = re.compile(r"EREF\+(.*?)(?=[A-Z]{4}\+|\Z)")
_NOT_GIVEN = {"", "NONREF", "NOTPROVIDED"}
_LINE_WIDTH, _TEXT_WIDTH = 27, 65  # a ?2x sub-field, a line of :86: (full ones were cut mid-word)


def sniff(head: bytes) -> bool:
    """An MT940/MT942 file by its first bytes: a SWIFT `{1:` block or a `:20:` line near the start."""
    lines = head.lstrip(b"\xef\xbb\xbf \t\r\n").splitlines()[:6]
    return bool(lines) and (lines[0].startswith(b"{1:") or any(line.startswith(b":20:") for line in lines))


@dataclass(slots=True)
class _Field:
    tag: str
    line: int
    lines: list[str]

    @property
    def value(self) -> str:
        return "\n".join(self.lines).strip()

    @property
    def where(self) -> str:
        return f"line {self.line}"


@dataclass(slots=True)
class _Message:
    line: int
    kind: str | None  # "940", "942" from the SWIFT application header
    fields: list[_Field] = field(default_factory=list)

    def first(self, *tags: str) -> _Field | None:
        return next((f for f in self.fields if f.tag in tags), None)


@dataclass(slots=True)
class _Details:
    remittance: str | None = None
    references: list[str] = field(default_factory=list)
    payer_name: str | None = None
    payer_account: str | None = None


@dataclass(slots=True)
class _Reading:
    credits: list[Credit] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    seen: dict[tuple[str, str], int] = field(default_factory=dict)  # (account, reference) -> line
    entries: int = 0


def parse(data: bytes, options: Options) -> Statement:
    """The booked credits of every statement (or interim report) in the file, in file order."""
    del options  # nothing of an MT940 source is configurable
    text = _decode(data)
    messages = _messages(text)
    if not messages:
        raise FileInvalid("line 1", "no MT940/MT942 message (:20: ...) in the file")
    reading, accounts, kinds = _Reading(), set(), set()
    for message in messages:
        kind, account = _read_message(message, reading)
        kinds.add(kind)
        accounts.add(account)
    version = "MT942" if kinds == {"942"} else "MT940"
    return Statement(
        FORMAT, version, len(accounts), reading.entries, tuple(reading.credits), tuple(reading.skipped)
    )


def _decode(data: bytes) -> str:
    """UTF-8, else Latin-1 (which reads any byte): the charset only touches names and texts."""
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _messages(text: str) -> list[_Message]:
    """Messages and their fields, with line numbers; envelope `{1:}...{4:` ... `-}` checked for an end."""
    messages: list[_Message] = []
    current: _Message | None = None
    kind: str | None = None
    envelope: int | None = None  # the line of an open {4: block
    for number, raw in enumerate(re.split(r"\r\n|\r|\n", text), 1):  # not str.splitlines: \x85 is text
        line = raw.rstrip()
        if line.startswith("{"):
            if envelope is not None and "{1:" in line:
                break
            if application := _APPLICATION.search(line):
                kind = application.group(1)
            if "{4:" not in line:
                continue
            envelope, current, line = number, None, line.split("{4:", 1)[1]
        if line == "-" or line.startswith("-}"):
            envelope = None if line.startswith("-}") else envelope
            current = None
        elif tag := _TAG.match(line):
            if current is None or tag.group(1) == "20":
                current = _Message(number, kind)
                messages.append(current)
            current.fields.append(_Field(tag.group(1), number, [line[tag.end() :]]))
        elif line.strip() and current is not None and current.fields:
            current.fields[-1].lines.append(line)
    if envelope is not None:
        raise FileInvalid(f"line {envelope}", "the message that starts here has no end (-}): truncated")
    return messages


def _read_message(message: _Message, reading: _Reading) -> tuple[str, str]:
    """Check one message and add its entries to `reading`; its kind ("940"/"942") and account."""
    first = message.fields[0]
    if first.tag != "20":
        raise FileInvalid(first.where, f"a message must begin with :20:, not :{first.tag}:")
    account_field = message.first("25")
    if account_field is None or not account_field.value:
        raise FileInvalid(first.where, "the message has no :25: account")
    kind = message.kind or ("940" if message.first("60F", "60M") else "942" if message.first("34F") else "")
    if kind not in _OPENING:
        raise FileInvalid(first.where, "neither an MT940 (:60F:/:60M: opening balance) nor an MT942 (:34F:)")
    opening = message.first(*_OPENING[kind])
    if opening is None:
        raise FileInvalid(first.where, f"an MT{kind} message without :{':/:'.join(_OPENING[kind])}:")
    currency, start = _balance(opening) if kind == "940" else _floor(opening)
    signed = _entries(message, account_field.value, currency, reading)
    if kind == "940":
        _check_closing(message, currency, start, signed)
    _check_totals(message, currency, signed)
    return kind, account_field.value


def _entries(message: _Message, account: str, currency: str, reading: _Reading) -> list[int]:
    """The `:61:` lines (each with the `:86:` right after it), as signed minor units."""
    signed: list[int] = []
    for index, line in enumerate(message.fields):
        if line.tag != "61":
            continue
        after = message.fields[index + 1] if index + 1 < len(message.fields) else None
        info = after if after is not None and after.tag == "86" else None
        signed.append(_entry(line, info, account, currency, reading))
        reading.entries += 1
    return signed


def _entry(line: _Field, info: _Field | None, account: str, currency: str, reading: _Reading) -> int:
    parts = _statement_line(line)
    mark, amount = parts["status"], _minor(parts["amount"], currency, line.where)
    value_date = _date(parts["year"] + parts["month"] + parts["day"], line.where)
    if mark != "C" or amount == 0:
        reason, detail = _SKIP.get(mark, (model.NOT_BOOKED, "a zero-amount entry, which moves no money"))
        reading.skipped.append(Skipped(line.where, reason, detail))
        return _SIGN[mark] * amount
    booked = _entry_date(value_date, parts["entry_month"], parts["entry_day"], line.where)
    bank_reference = parts["bank_reference"].strip()
    reference = None if bank_reference.upper() in _NOT_GIVEN else bank_reference
    details = _details(info.value) if info is not None else _Details()
    customer = parts["customer_reference"].strip()
    if _IBAN.match(customer.replace(" ", "")):  # ASN Bank puts the payer's IBAN here
        details.payer_account = details.payer_account or customer
    elif customer.upper() not in _NOT_GIVEN:
        details.references.insert(0, customer)
    if reference is not None:
        if (account, reference) in reading.seen:
            earlier = reading.seen[(account, reference)]
            raise FileInvalid(line.where, f"the bank reference of line {earlier} again: one credit or two?")
        reading.seen[(account, reference)] = line.line
    reading.credits.append(
        Credit(
            kind=model.DEPOSIT,
            entry=line.where,
            position=len(reading.credits),
            account=account,
            amount=amount,
            currency=currency,
            booked_at=booked,
            reference=reference,
            remittance_information=details.remittance,
            references=tuple(dict.fromkeys(details.references)),
            payer_name=details.payer_name,
            payer_account=details.payer_account,
        )
    )
    return amount


def _statement_line(line: _Field) -> dict[str, str]:
    """The parts of a `:61:` line by the library's grammar; a transaction type must end the amount."""
    for pattern in _STATEMENT_LINES:
        found = pattern.match(line.value)
        if found is not None and found.group("status") in _SIGN and found.group("id"):
            return {name: part or "" for name, part in found.groupdict().items()}
    raise FileInvalid(line.where, "not a :61: statement line (YYMMDD[MMDD] mark amount type reference)")


def _minor(text: str, currency: str, where: str) -> int:
    """A SWIFT amount ("1250,00": a decimal comma, never a point) in minor units; zero is allowed here."""
    found = _AMOUNT.match(text)
    if found is None:
        raise FileInvalid(where, f"the amount {text[:20]!r} is not digits with a decimal comma")
    whole, fraction = found.groups()
    if len(fraction) > exponent(currency):
        raise FileInvalid(where, f"{currency} has {exponent(currency)} decimal place(s); {text!r} has more")
    if not (whole + fraction).strip("0"):
        return 0
    try:
        return to_minor_units(f"{whole}.{fraction}" if fraction else whole, currency)
    except AmountError as error:
        raise FileInvalid(where, str(error)) from None


def _currency(code: str, where: str) -> str:
    try:
        exponent(code)
    except AmountError as error:
        raise FileInvalid(where, str(error)) from None
    return code


def _balance(balance: _Field) -> tuple[str, int]:
    """A `:60F:`-style balance: its currency and signed minor units."""
    found = _BALANCE.match(balance.value)
    if found is None:
        raise FileInvalid(balance.where, f"not a balance (C|D YYMMDD currency amount) in :{balance.tag}:")
    mark, when, code, amount = found.groups()
    _date(when, balance.where)
    currency = _currency(code, balance.where)
    return currency, _SIGN[mark] * _minor(amount, currency, balance.where)


def _floor(limit: _Field) -> tuple[str, int]:
    found = _FLOOR.match(limit.value)
    if found is None:
        raise FileInvalid(limit.where, "not a floor limit (currency [D|C] amount) in :34F:")
    currency = _currency(found.group(1), limit.where)
    _minor(found.group(2), currency, limit.where)
    return currency, 0


def _check_closing(message: _Message, currency: str, opening: int, signed: list[int]) -> None:
    closing_field = message.first("62F", "62M")
    if closing_field is None:
        raise FileInvalid(
            f"line {message.fields[-1].line}", "the statement has no closing balance: truncated"
        )
    code, closing = _balance(closing_field)
    if code != currency:
        raise FileInvalid(closing_field.where, f"a closing balance in {code}, the opening one in {currency}")
    if opening + sum(signed) != closing:
        raise FileInvalid(
            closing_field.where, "opening balance plus the :61: entries is not the closing balance"
        )


def _check_totals(message: _Message, currency: str, signed: list[int]) -> None:
    """`:90C:`/`:90D:`, the number and sum of credit/debit entries, where the bank gives them."""
    for tag, side in (("90C", [a for a in signed if a > 0]), ("90D", [-a for a in signed if a < 0])):
        total = message.first(tag)
        if total is None:
            continue
        found = _TOTAL.match(total.value)
        if found is None or found.group(2) != currency:
            raise FileInvalid(total.where, f"not a :{tag}: total (count {currency} amount)")
        said = (int(found.group(1)), _minor(found.group(3), currency, total.where))
        if said != (len(side), sum(side)):
            raise FileInvalid(total.where, f":{tag}: says {said[0]} entries, the message holds {len(side)}")


def _date(text: str, where: str) -> date:
    if len(text) == 6 and text.isascii() and text.isdigit():
        try:
            return date(2000 + int(text[:2]), int(text[2:4]), int(text[4:]))
        except ValueError:
            pass
    raise FileInvalid(where, f"{text!r} is not a YYMMDD date")


def _entry_date(value_date: date, month: str, day: str, where: str) -> date:
    """The booking date (MMDD) in the year that puts it nearest the value date (across a year-end)."""
    if not month.strip() and not day.strip():
        return value_date
    text = f"{month}{day}"
    if not (text.isascii() and text.isdigit()):
        raise FileInvalid(where, f"the entry date {text!r} is not MMDD")
    candidates = []
    for year in (value_date.year - 1, value_date.year, value_date.year + 1):
        try:
            candidates.append(date(year, int(text[:2]), int(text[2:])))
        except ValueError:
            continue
    if not candidates:
        raise FileInvalid(where, f"the entry date {text!r} is not MMDD")
    return min(candidates, key=lambda booked: abs((booked - value_date).days))


def _details(text: str) -> _Details:
    """`:86:` in its common styles: `?20`..., `/EREF/.../REMI/...`, or free text."""
    joined = "".join(text.splitlines())
    if _QUESTION.match(joined) or re.match(r"[0-9]{3}\?[0-9]{2}", joined):
        return _question_style(joined)
    if joined.startswith("/") and _SLASH.search(joined):
        return _slash_style(joined)
    return _Details(remittance=_joined(text.splitlines(), _TEXT_WIDTH))


def _question_style(text: str) -> _Details:
    """German/Dutch sub-fields: ?20-?29 and ?60-?63 remittance, ?31 payer account, ?32/?33 payer name."""
    parts = _QUESTION.split(text)[1:]
    fields = list(zip(parts[::2], parts[1::2], strict=True))
    remittance = _joined([v for k, v in fields if k[0] == "2" or k in ("60", "61", "62", "63")], _LINE_WIDTH)
    payer_name = _joined([v for k, v in fields if k in ("32", "33")], _LINE_WIDTH)
    details = _Details(remittance=remittance, payer_name=payer_name)
    details.payer_account = next((v.strip() for k, v in fields if k == "31" and v.strip()), None)
    if remittance and (eref := _SEPA_EREF.search(remittance)) and eref.group(1).strip() not in _NOT_GIVEN:
        details.references.append(eref.group(1).strip())
    return details


def _joined(lines: Iterable[str], width: int) -> str | None:
    """Lines as one text: a full-width line was cut mid-word, a shorter one ended a word."""
    out, previous = "", ""
    for line in lines:
        out += line if len(previous) == width or not out else f" {line}"
        previous = line
    return " ".join(out.split()) or None


def _slash_style(text: str) -> _Details:
    """`/CODE/value` pairs (also `//` between them): EREF, REMI, ORDP/NAME, IBAN, and ING's CNTP."""
    found = list(_SLASH.finditer(text))
    values: dict[str, str] = {}
    for match, after in zip(found, [*found[1:], None], strict=True):
        end = after.start() if after is not None else len(text)
        values.setdefault(match.group(1), text[match.end() : end].strip("/ "))
    details = _Details()
    remi = values.get("REMI", "")
    details.remittance = " ".join(remi.removeprefix("USTD//").split()) or None  # as the other styles
    if remi.startswith("STRD/"):
        details.remittance, reference = None, remi.split("/")[-1]
        details.references.append(reference)
    if values.get("EREF", "").upper() not in _NOT_GIVEN:
        details.references.append(values["EREF"])
    counterparty = values.get("CNTP", "").split("/")
    details.payer_name = values.get("NAME") or values.get("ORDP") or _at(counterparty, 2)
    details.payer_account = values.get("IBAN") or _at(counterparty, 0)
    return details


def _at(parts: list[str], index: int) -> str | None:
    return parts[index].strip() or None if index < len(parts) else None
