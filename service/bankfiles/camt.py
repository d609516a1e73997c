"""ISO 20022 camt.052/053/054 (.001.02 to .001.13) -> booked credits, streamed entry by entry. Pure.

The XML is read with a parser that loads no DTD, resolves no entity and opens no URL, and a
document with a DTD at all is refused before its content is read (UnsafeDocument). Each `Ntry`
is handled at its end event and then dropped, so a 25 MiB statement costs one entry's memory.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime
from io import BytesIO

from lxml import etree  # type: ignore[import-untyped]  # lxml ships no type stubs

from service.bankfiles import camt_fields as f
from service.bankfiles.model import (
    CHECK,
    DEBIT,
    DEPOSIT,
    NOT_BOOKED,
    REVERSAL,
    Credit,
    FileInvalid,
    Options,
    Skipped,
    Statement,
    UnsafeDocument,
)

_SAFE = {
    "resolve_entities": False,
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
    "remove_comments": True,
    "remove_pis": True,
}
_NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:(camt\.05[234])\.001\.([0-9]{2})\Z")
_SNIFF = re.compile(rb"urn:iso:std:iso:20022:tech:xsd:camt\.05[234]\.|<!DOCTYPE|<!ENTITY")
_VERSIONS = range(2, 14)
_CONTAINERS = {"camt.052": "Rpt", "camt.053": "Stmt", "camt.054": "Ntfctn"}


def sniff(head: bytes) -> bool:
    """Does this start like camt XML? XML with a DTD counts too, so that it is refused as unsafe
    rather than as unrecognised."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        head = head.decode("utf-16", "ignore").encode()
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<") and _SNIFF.search(head) is not None


def parse(data: bytes, options: Options) -> Statement:
    """The booked credits of a camt file, one per transaction, in file order."""
    del options  # nothing of camt is configured per source
    try:
        kind, version = _prologue(data)
        return _Reader(kind, version).read(data)
    except etree.XMLSyntaxError as error:
        line = max(error.lineno or 1, 1)
        raise FileInvalid(f"line {line}", f"not well-formed XML: {(error.msg or '')[:160]}") from None
    except etree.LxmlError as error:  # an unknown encoding, a parser limit
        raise FileInvalid("line 1", f"cannot read the XML: {str(error)[:160]}") from None


def _prologue(data: bytes) -> tuple[str, str]:
    """(format, version) from the root, read before anything past it: a DTD is refused here, so
    no entity of one is ever expanded and no file or URL it names is ever opened."""
    first = next(iter(etree.iterparse(BytesIO(data), events=("start",), **_SAFE)), None)
    if first is None:
        raise FileInvalid("line 1", "the file holds no XML element")
    root = first[1]
    if root.getroottree().docinfo.doctype:
        raise UnsafeDocument("line 1", "XML with a DTD or entity declarations is not accepted")
    namespace, _, name = root.tag[1:].rpartition("}") if root.tag.startswith("{") else ("", "", root.tag)
    found = _NAMESPACE.match(namespace)
    if name != "Document" or found is None:
        shown = f"{{{namespace[:80]}}}{name[:40]}" if namespace else name[:40]
        raise FileInvalid(name[:40], f"the root {shown} is not a camt.052, camt.053 or camt.054 Document")
    version = f"{found.group(1)}.001.{found.group(2)}"
    if int(found.group(2)) not in _VERSIONS:
        raise FileInvalid(name, f"{version} is not supported: versions .001.02 to .001.13 are")
    return found.group(1), version


@dataclass(frozen=True, slots=True)
class _Booking:
    """What every transaction of one entry shares."""

    where: str
    account: str
    amount: int
    currency: str
    booked_at: date | datetime
    reference: str | None  # the entry's AcctSvcrRef
    code: f.Element | None  # the entry's BkTxCd/Domn
    transactions: int


@dataclass
class _Reader:
    """One parse's running state: the account of the current Stmt/Rpt/Ntfctn and what came out."""

    kind: str
    version: str
    credits: list[Credit] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)
    accounts: set[str] = field(default_factory=set)
    entries: int = 0
    boxes: int = 0
    box: f.Element | None = None
    account: str | None = None
    number: int = 0  # of the entry within its box

    def read(self, data: bytes) -> Statement:
        container = _CONTAINERS[self.kind]
        tags = ("{*}" + container, "{*}Acct", "{*}Ntry")
        for event, element in etree.iterparse(BytesIO(data), events=("start", "end"), tag=tags, **_SAFE):
            name = element.tag.rpartition("}")[2]
            if name == container:
                self._box(event, element, container)
            elif event == "end" and element.getparent() is self.box and self.box is not None:
                if name == "Acct":
                    self._account(element, container)
                else:
                    self._entry(element)
        if not self.boxes:
            raise FileInvalid("Document", f"a {self.kind} document holds at least one {container}")
        return Statement(
            self.kind,
            self.version,
            len(self.accounts),
            self.entries,
            tuple(self.credits),
            tuple(self.skipped),
        )

    def _box(self, event: str, element: f.Element, container: str) -> None:
        if event == "start":
            self.boxes += 1
            self.box, self.account, self.number = element, None, 0
            return
        if self.account is None:
            raise FileInvalid(
                f"{container}[{self.boxes}]/Acct", "no account identification (IBAN or Othr/Id)"
            )
        self.accounts.add(self.account)
        self.box = None
        _release(element)

    def _account(self, element: f.Element, container: str) -> None:
        self.account = f.account_id(element)
        if self.account is None:
            raise FileInvalid(
                f"{container}[{self.boxes}]/Acct", "no account identification (IBAN or Othr/Id)"
            )

    def _entry(self, element: f.Element) -> None:
        self.entries += 1
        self.number += 1
        where = f"{_CONTAINERS[self.kind]}[{self.boxes}]/Ntry[{self.number}]"
        if self.account is None:
            raise FileInvalid(where, "an entry before its account (Acct) is named")
        for item in _entry(element, where, self.account, len(self.credits)):
            if isinstance(item, Credit):
                self.credits.append(item)
            else:
                self.skipped.append(item)
        _release(element)


def _release(element: f.Element) -> None:
    """Free an element handled and its earlier siblings: what keeps the parse in bounded memory."""
    element.clear(keep_tail=False)
    parent = element.getparent()
    while element.getprevious() is not None:
        del parent[0]


def _entry(entry: f.Element, where: str, account: str, position: int) -> list[Credit | Skipped]:
    """One `Ntry`: skipped as a whole (not booked, a reversal, a plain debit), or one credit per
    credit transaction; its debit transactions are skipped each."""
    fields = f.index(entry)
    node = fields.get("Sts")
    status = None if node is None else f.text(node, "Cd") or f.value(node) or f.text(node, "Prtry")
    if status is None:
        raise FileInvalid(f"{where}/Sts", "the entry has no status")
    if status != "BOOK":
        return [Skipped(where, NOT_BOOKED, f"entry status {status[:35]}, not BOOK (booked)")]
    if (f.value(fields.get("RvslInd")) or "").lower() in ("true", "1"):
        return [Skipped(where, REVERSAL, "the entry reverses an earlier booking")]
    direction = _direction(fields, where, None)
    transactions = [
        f.index(tx) for details in f.children(entry, "NtryDtls") for tx in f.children(details, "TxDtls")
    ]
    directions = [_direction(tx, f"{where}/TxDtls[{i}]", direction) for i, tx in enumerate(transactions, 1)]
    if "CRDT" not in (directions or [direction]):
        return [Skipped(where, DEBIT, "a debit entry")]
    if "Amt" not in fields:
        raise FileInvalid(f"{where}/Amt", "the entry has no amount")
    amount, currency = f.money(fields["Amt"], f"{where}/Amt")
    code = fields.get("BkTxCd")
    booking = _Booking(
        where,
        account,
        amount,
        currency,
        f.booking(entry, where),
        f.value(fields.get("AcctSvcrRef")),
        None if code is None else f.child(code, "Domn"),
        len(transactions),
    )
    if not transactions:
        return [_credit(booking, None, 1, amount, where, position)]
    amounts = _amounts(booking, transactions, directions, direction)
    out: list[Credit | Skipped] = []
    for index, (tx, sign, part) in enumerate(zip(transactions, directions, amounts, strict=True), 1):
        path = f"{where}/TxDtls[{index}]"
        if sign == "DBIT":
            out.append(Skipped(path, DEBIT, "a debit transaction of a batch booking"))
        else:
            out.append(_credit(booking, tx, index, part, path, position))
            position += 1
    return out


def _direction(fields: dict[str, f.Element], where: str, default: str | None) -> str:
    value = f.value(fields.get("CdtDbtInd")) or default
    if value not in ("CRDT", "DBIT"):
        raise FileInvalid(f"{where}/CdtDbtInd", "credit or debit must be CRDT or DBIT")
    return value


def _amounts(
    booking: _Booking, transactions: list[dict[str, f.Element]], directions: list[str], direction: str
) -> list[int]:
    """Each transaction's amount: `TxDtls/Amt` (from .04) or `AmtDtls/TxAmt/Amt`; the entry's own
    for its one transaction that has none. They must add up to the entry, or the file is refused:
    which figure is the money would be a guess."""
    found: list[int] = []
    for index, tx in enumerate(transactions, 1):
        path = f"{booking.where}/TxDtls[{index}]"
        node, path = tx.get("Amt"), f"{path}/Amt"
        if node is None and "AmtDtls" in tx:
            node, path = f.child(tx["AmtDtls"], "TxAmt", "Amt"), f"{path[:-4]}/AmtDtls/TxAmt/Amt"
        if node is None:
            if len(transactions) == 1:
                return [booking.amount]
            raise FileInvalid(
                f"{booking.where}/TxDtls[{index}]", "a transaction of a batch booking has no amount"
            )
        amount, currency = f.money(node, path)
        if currency != booking.currency:
            raise FileInvalid(path, f"the transaction is in {currency}, its entry in {booking.currency}")
        found.append(amount)
    total = sum(a if d == direction else -a for a, d in zip(found, directions, strict=True))
    if total != booking.amount:
        entry = f.shown(booking.amount, booking.currency)
        why = f"the transactions (TxDtls) add up to {f.shown(total, booking.currency)}, the entry is {entry}"
        raise FileInvalid(booking.where, why)
    return found


def _credit(
    booking: _Booking, tx: dict[str, f.Element] | None, index: int, amount: int, where: str, position: int
) -> Credit:
    """One credit transaction (or an entry without TxDtls) as a Credit."""
    if tx is None:
        reference = _entry_reference(booking, index)
        check = f.is_received_check(booking.code)
        return Credit(
            CHECK if check else DEPOSIT,
            where,
            position,
            booking.account,
            amount,
            booking.currency,
            booking.booked_at,
            reference,
            check_number=reference if check else None,
        )
    refs = f.index(tx["Refs"]) if "Refs" in tx else {}
    cheque, end_to_end = f.value(refs.get("ChqNb")), f.value(refs.get("EndToEndId"))
    reference = f.value(refs.get("AcctSvcrRef")) or _entry_reference(booking, index)
    domain = f.child(tx["BkTxCd"], "Domn") if "BkTxCd" in tx else None
    kind = CHECK if cheque or f.is_received_check(booking.code if domain is None else domain) else DEPOSIT
    info = tx.get("RmtInf")
    references, allocations = ((), ()) if info is None else f.structured(info, amount, booking.currency)
    if end_to_end and end_to_end != f.NOT_PROVIDED and end_to_end not in references:
        references = (*references, end_to_end)
    name, payer_account = f.payer(tx.get("RltdPties"))
    return Credit(
        kind,
        where,
        position,
        booking.account,
        amount,
        booking.currency,
        booking.booked_at,
        reference,
        check_number=cheque or (reference if kind == CHECK else None),
        remittance_information=None if info is None else f.unstructured(info),
        references=references,
        allocations=allocations,
        payer_name=name,
        payer_account=payer_account,
    )


def _entry_reference(booking: _Booking, index: int) -> str | None:
    """The entry's AcctSvcrRef, made unique per transaction when the entry holds several: the same
    in a camt.054 notification and the later camt.053 statement of the same booking."""
    if booking.reference is None:
        return None
    return booking.reference if booking.transactions <= 1 else f"{booking.reference}/{index}"
