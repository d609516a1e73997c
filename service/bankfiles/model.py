"""What every bank-file parser returns: the credits of a file, what it skipped, and its errors. Pure.

A parser is a pure function `parse(data: bytes, options: Options) -> Statement` in a module of
its own (camt.py, bai.py, lockbox.py, mt94x.py); `service/bankfiles/__init__.py` names them. The
parsers see full account numbers; nothing else does: `service/bankfiles/events.py` turns a
`Credit` into a CloudEvent that carries only the last four digits and a keyed fingerprint.

Errors:

    FileRejected            the file cannot be taken; nothing of it is published
    ├── UnsafeDocument      XML with a DTD or entity declarations (400, never expanded)
    └── FileInvalid         does not parse, or is not the expected format (422, with where and why)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime

# Why an entry of a file became no event. `Skipped.detail` says more, for people.
DEBIT = "debit"
REVERSAL = "reversal"
NOT_BOOKED = "not_booked"  # pending, information-only, future
NOT_A_CREDIT_CODE = "not_a_credit_code"  # a BAI2 type code outside the source's bai2_credit_codes
SKIP_REASONS = (DEBIT, REVERSAL, NOT_BOOKED, NOT_A_CREDIT_CODE)

DEPOSIT = "bank.deposit"
CHECK = "check.scan"


class FileRejected(Exception):
    """A file payrelay will not take; nothing of it is published."""

    status = 422

    def __init__(self, where: str, why: str) -> None:
        super().__init__(f"{where}: {why}" if where else why)
        self.where = where
        self.why = why


class UnsafeDocument(FileRejected):
    """XML with a DTD or entity declarations: refused before anything is expanded."""

    status = 400


class FileInvalid(FileRejected):
    """Not a well-formed file of the expected format; `where` is a line ("line 14") or an XML path."""


@dataclass(frozen=True, slots=True)
class Options:
    """What a source configures about its files. `lockbox_columns` overrides the default layout's
    positions (service/bankfiles/lockbox.py), field name -> (first column, last column), 1-based."""

    bai2_credit_codes: frozenset[str] = frozenset()  # empty: bai.DEFAULT_CREDIT_CODES
    lockbox_columns: Mapping[str, tuple[int, int]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Credit:
    """One booked credit transaction of a file: one event.

    `account` is the receiving account as the file names it (IBAN, account number): it names the
    event's source. `reference` is the bank's own reference for this transaction, already made
    unique within the account (camt: the transaction's AcctSvcrRef, else the entry's plus
    "/" and the transaction's position); None when the bank gives none, and the event's id is then
    a digest. `payer_account` and `micr_account` are full numbers: they never leave this package.
    """

    kind: str  # DEPOSIT or CHECK
    entry: str  # where in the file: "Stmt[1]/Ntry[3]/TxDtls[2]", "line 14"
    position: int  # 0-based index of this credit in the file, for the digest identity
    account: str
    amount: int  # minor units, > 0
    currency: str
    booked_at: date | datetime
    reference: str | None
    check_number: str | None = None
    remittance_information: str | None = None
    references: tuple[str, ...] = ()
    allocations: tuple[tuple[str, int], ...] = ()  # (document number, minor units), summing to amount
    payer_name: str | None = None
    payer_account: str | None = None
    micr_routing: str | None = None
    micr_account: str | None = None


@dataclass(frozen=True, slots=True)
class Skipped:
    """An entry that became no event, and why (one of SKIP_REASONS)."""

    entry: str
    reason: str
    detail: str = ""

    def as_dict(self) -> dict[str, str]:
        out = {"entry": self.entry, "reason": self.reason}
        if self.detail:
            out["detail"] = self.detail
        return out


@dataclass(frozen=True, slots=True)
class Statement:
    """A parsed file: its format and version, how many accounts and entries it holds, its credits
    (in file order) and the entries skipped."""

    format: str  # "camt.054", "bai2", "lockbox", "mt940"
    version: str  # "camt.054.001.08", "2", "MT942"
    accounts: int
    entries: int
    credits: tuple[Credit, ...]
    skipped: tuple[Skipped, ...] = ()
