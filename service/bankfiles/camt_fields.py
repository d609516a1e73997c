"""Reading one camt entry's fields by local name, whatever the version's namespace. Pure.

Elements moved between versions (`TxDtls/Amt` from .04, `RltdPties/Dbtr/Pty` from .07,
`RmtAmtAndTp` in .13), so every reader accepts each shape in every version: a bank that sends an
.02 shape in an .08 file still reads the same. Lookups are child loops (`iterchildren` with a
`{*}` wildcard, matched in C), never XPath, because a statement holds 100,000 entries.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any

from service.bankfiles.model import FileInvalid
from service.money import AmountError, to_major_string, to_minor_units

# lxml elements are untyped (lxml ships no stubs); `Element` names what these functions take.
Element = Any

_DATE = re.compile(r"([0-9]{4}-[0-9]{2}-[0-9]{2})(?:Z|[+-][0-9]{2}:[0-9]{2})?\Z")
_DATETIME = re.compile(
    r"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2})(?:\.([0-9]+))?(Z|[+-][0-9]{2}:[0-9]{2})?\Z"
)
NOT_PROVIDED = "NOTPROVIDED"  # what SEPA puts in EndToEndId when the payer gave none


def child(element: Element, *names: str) -> Element | None:
    """The first descendant along `names` (one child per step), or None."""
    for name in names:
        element = next(element.iterchildren("{*}" + name), None)
        if element is None:
            return None
    return element


def index(element: Element) -> dict[str, Element]:
    """An element's children by local name (the first of each): one pass in place of a lookup per
    field, which is what makes an entry cheap to read."""
    return {node.tag.rpartition("}")[2]: node for node in reversed(element)}


def value(node: Element | None) -> str | None:
    """A node's stripped text; None when absent or blank."""
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def children(element: Element, name: str) -> list[Element]:
    return list(element.iterchildren("{*}" + name))


def text(element: Element, *names: str) -> str | None:
    """The stripped text along `names`; None when absent or blank."""
    node = child(element, *names)
    if node is None or node.text is None:
        return None
    return node.text.strip() or None


def account_id(element: Element | None) -> str | None:
    """`Id/IBAN` or `Id/Othr/Id` of a cash account element (Acct, DbtrAcct)."""
    ids = None if element is None else child(element, "Id")
    if ids is None:
        return None
    return text(ids, "IBAN") or text(ids, "Othr", "Id")


def money(element: Element, where: str) -> tuple[int, str]:
    """An amount element with its `Ccy` attribute, as (minor units, currency), exactly."""
    currency = (element.get("Ccy") or "").strip()
    try:
        return to_minor_units((element.text or "").strip(), currency), currency
    except AmountError as error:
        raise FileInvalid(where, str(error)) from None


def shown(minor: int, currency: str) -> str:
    return f"{to_major_string(minor, currency)} {currency}"


def booking(entry: Element, where: str) -> date | datetime:
    """`BookgDt/Dt` as a date or `BookgDt/DtTm` as an aware datetime (its offset kept; a time
    without offset is taken as UTC, the only reading that keeps its date)."""
    day = text(entry, "BookgDt", "Dt")
    if day is not None:
        found = _DATE.match(day)
        try:
            if found:
                return date.fromisoformat(found.group(1))
        except ValueError:
            pass
        raise FileInvalid(f"{where}/BookgDt/Dt", f"{day[:40]!r} is not a date (YYYY-MM-DD)")
    moment = text(entry, "BookgDt", "DtTm")
    if moment is None:
        raise FileInvalid(f"{where}/BookgDt", "a booked credit needs a booking date (BookgDt/Dt or DtTm)")
    return _datetime(moment, f"{where}/BookgDt/DtTm")


def _datetime(value: str, where: str) -> datetime:
    found = _DATETIME.match(value)
    try:
        if found:
            whole, fraction, offset = found.groups()
            micro = (fraction or "").ljust(6, "0")[:6]  # below a microsecond is no booking's concern
            parsed = datetime.fromisoformat(f"{whole}.{micro}{offset or ''}")
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except ValueError:
        pass
    raise FileInvalid(where, f"{value[:40]!r} is not a date and time (YYYY-MM-DDThh:mm:ss)")


def is_received_check(domain: Element | None) -> bool:
    """A `BkTxCd/Domn` naming a received cheque: domain PMNT, family RCHQ, any sub-family."""
    return domain is not None and text(domain, "Cd") == "PMNT" and text(domain, "Fmly", "Cd") == "RCHQ"


def payer(parties: Element | None) -> tuple[str | None, str | None]:
    """(name, account) of `RltdPties`: `Dbtr/Nm` until .06, `Dbtr/Pty/Nm` from .07."""
    if parties is None:
        return None, None
    debtor = child(parties, "Dbtr")
    name = None if debtor is None else text(debtor, "Nm") or text(debtor, "Pty", "Nm")
    return name, account_id(child(parties, "DbtrAcct"))


def unstructured(info: Element) -> str | None:
    """Every `RmtInf/Ustrd` line, joined with a space."""
    lines = [line.text.strip() for line in info.iterchildren("{*}Ustrd") if line.text and line.text.strip()]
    return " ".join(lines) or None


def structured(
    info: Element, amount: int, currency: str
) -> tuple[tuple[str, ...], tuple[tuple[str, int], ...]]:
    """(references, allocations) of the `RmtInf/Strd` blocks.

    References are `RfrdDocInf/Nb` and `CdtrRefInf/Ref` in document order, once each. Allocations
    are (document, minor units) only when every document has its own amount in the transaction's
    currency and they sum to exactly the transaction's amount: a partial or inconsistent split is
    worse than none, so then there are none and the references alone go on.
    """
    references: dict[str, None] = {}
    split: dict[str, int] | None = {}
    for block in info.iterchildren("{*}Strd"):
        documents = [(doc, text(doc, "Nb")) for doc in block.iterchildren("{*}RfrdDocInf")]
        for part in block.iterchildren("{*}RfrdDocInf", "{*}CdtrRefInf"):
            value = text(part, "Nb") or text(part, "Ref")
            if value is not None:
                references.setdefault(value)
        split = _split(block, documents, currency, split)
    if not split or sum(split.values()) != amount:
        return tuple(references), ()
    return tuple(references), tuple(split.items())


def _split(
    block: Element, documents: list[tuple[Element, str | None]], currency: str, split: dict[str, int] | None
) -> dict[str, int] | None:
    """Add one Strd block's document amounts to `split`; None once any document has no number or
    no amount of its own."""
    if split is None:
        return None
    for document, number in documents:
        # A block-level RfrdDocAmt belongs to its document only when the block names just one.
        remitted = _remitted(child(block, "RfrdDocAmt"), currency) if len(documents) == 1 else None
        if remitted is None:
            remitted = _lines(document, currency)
        if remitted is None or number is None:
            return None
        split[number] = split.get(number, 0) + remitted
    return split


def _lines(document: Element, currency: str) -> int | None:
    """The sum of a document's `LineDtls/Amt` remitted amounts, when every line has one."""
    lines = [_remitted(child(line, "Amt"), currency) for line in document.iterchildren("{*}LineDtls")]
    if not lines or None in lines:
        return None
    return sum(line for line in lines if line is not None)


def _remitted(amounts: Element | None, currency: str) -> int | None:
    """The remitted amount of a RemittanceAmount element: `RmtdAmt` until .12, the one
    `RmtAmtAndTp/Amt` in .13 (several typed amounts name no single remitted one)."""
    if amounts is None:
        return None
    node = child(amounts, "RmtdAmt")
    if node is None:
        typed = children(amounts, "RmtAmtAndTp")
        node = child(typed[0], "Amt") if len(typed) == 1 else None
    if node is None or (node.get("Ccy") or "").strip() != currency:
        return None
    try:
        return to_minor_units((node.text or "").strip(), currency)
    except AmountError:  # the remitter's figure, not the bank's: no split rather than no file
        return None
