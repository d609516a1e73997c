"""A parsed file's credits as the CloudEvents of SPEC §2, carrying no full account number. Pure.

What leaves here, per credit: the event `id` (the bank's reference, else a digest of account,
date, amount, references and position), `source` (`urn:payrelay:account:` and a label of the
receiving account: its last four characters and a digest, never the number), `data` as a sender
would have written it, and three extension attributes telling the file's story: `payrelayfile`
(the file's id), `payrelayformat` and `payrelayentry` (where in the file). Payer and MICR accounts
become `account_last4` and `account_fingerprint`, an HMAC-SHA256 of the normalised number under
`payer_fingerprint_key`; without a key there is no fingerprint.

Every event is checked against the same contract as an inbound one (service/events.py): a credit
that cannot become a valid event fails the file, with where.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from datetime import UTC, date, datetime, time
from typing import Any

from service import events as ev
from service.bankfiles.model import CHECK, Credit, FileInvalid, Statement
from service.event_data import INVOICE_ID, MAX_NAME, MAX_REFERENCE, MAX_REFERENCES, MAX_TEXT
from service.messages import rfc3339
from service.money import to_major_string

ACCOUNT_SOURCE = "urn:payrelay:account:"
FILE_ATTRIBUTE, FORMAT_ATTRIBUTE, ENTRY_ATTRIBUTE = ev.FILE_ATTRIBUTES
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
_SPACES = re.compile(r"\s+")
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")


def normalised_account(account: str) -> str:
    """An account number as banks compare it: upper case, letters and digits only (IBANs are
    printed in groups of four; `DE89 3704` is `DE893704`)."""
    return _NOT_ALNUM.sub("", account.upper())


def account_label(account: str) -> str:
    """A stable name for a receiving account that does not show it: last four and a digest.

    Unkeyed on purpose: it is part of every event's identity, so it must never change (a keyed
    label would make a re-sent file new payments after a key rotation).
    """
    number = normalised_account(account)
    digest = hashlib.sha256(b"payrelay-account:" + number.encode()).hexdigest()[:16]
    return f"{number[-4:]}-{digest}"


def last4(account: str) -> str | None:
    """The last four digits of an account number, or None when it has fewer than four."""
    digits = "".join(c for c in account if c.isascii() and c.isdigit())
    return digits[-4:] if len(digits) >= 4 else None


def fingerprint(account: str, key: bytes) -> str:
    """`hmac-sha256:` and the hex HMAC of the normalised number: the same payer, recognised."""
    mac = hmac.new(key, normalised_account(account).encode(), hashlib.sha256).hexdigest()
    return f"hmac-sha256:{mac[:48]}"


def _clean(text: str | None, limit: int) -> str | None:
    """Free text as the contract takes it: no control characters, single spaces, at most `limit`."""
    if text is None:
        return None
    cleaned = _SPACES.sub(" ", _CONTROL.sub(" ", text)).strip()
    return cleaned[:limit] or None


def digest_id(credit: Credit) -> str:
    """The identity of a credit the bank gave no reference for (SPEC §9)."""
    parts = [
        normalised_account(credit.account),
        credit.booked_at.isoformat(),
        str(credit.amount),
        credit.currency,
        *credit.references,
        str(credit.position),
    ]
    return "sha256:" + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:40]


def _booked_at(moment: date | datetime) -> str:
    if isinstance(moment, datetime):
        return rfc3339(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return rfc3339(datetime.combine(moment, time(), UTC))


def _references(credit: Credit) -> list[str]:
    cleaned = (_clean(r, MAX_REFERENCE + 1) for r in credit.references)
    kept = [r for r in cleaned if r and len(r) <= MAX_REFERENCE]
    return list(dict.fromkeys(kept))[:MAX_REFERENCES]


def _allocations(credit: Credit) -> list[dict[str, str]]:
    """The remitter's amounts per document, when they name invoices payrelay can address and sum
    exactly to the credit; else none (the references still say which documents)."""
    documents = [number.strip() for number, _ in credit.allocations]
    if (
        not credit.allocations
        or not all(INVOICE_ID.match(d) for d in documents)
        or len(set(documents)) != len(documents)
        or sum(amount for _, amount in credit.allocations) != credit.amount
        or any(amount <= 0 for _, amount in credit.allocations)
    ):
        return []
    return [
        {"invoice_id": d, "amount": to_major_string(amount, credit.currency)}
        for d, (_, amount) in zip(documents, credit.allocations, strict=True)
    ]


def _party(name: str | None, account: str | None, key: bytes | None) -> dict[str, str]:
    party: dict[str, str] = {}
    if (cleaned := _clean(name, MAX_NAME)) is not None:
        party["name"] = cleaned
    if account and normalised_account(account):
        if (digits := last4(account)) is not None:
            party["account_last4"] = digits
        if key:
            party["account_fingerprint"] = fingerprint(account, key)
    return party


def event_data(credit: Credit, event_id: str, key: bytes | None) -> dict[str, Any]:
    """The `data` of one credit's event."""
    data: dict[str, Any] = {
        "amount": to_major_string(credit.amount, credit.currency),
        "currency": credit.currency,
    }
    if credit.kind == CHECK:
        data["scanned_at"] = _booked_at(credit.booked_at)
        data["check_number"] = _clean(credit.check_number or credit.reference, MAX_REFERENCE) or event_id
        micr: dict[str, str] = {}
        if credit.micr_routing and re.fullmatch(r"[0-9]{9}", credit.micr_routing):
            micr["routing_number"] = credit.micr_routing
        if credit.micr_account and (digits := last4(credit.micr_account)) is not None:
            micr["account_last4"] = digits
        if micr:
            data["micr"] = micr
    else:
        data["booked_at"] = _booked_at(credit.booked_at)
        data["bank_reference"] = _clean(credit.reference, MAX_REFERENCE) or event_id[:MAX_REFERENCE]
    if (text := _clean(credit.remittance_information, MAX_TEXT)) is not None:
        data["remittance_information"] = text
    if references := _references(credit):
        data["references"] = references
    if allocations := _allocations(credit):
        data["allocations"] = allocations
    if payer := _party(credit.payer_name, credit.payer_account or credit.micr_account, key):
        data["payer"] = payer
    return data


def to_events(statement: Statement, file_id: str, key: bytes | None) -> list[ev.Event]:
    """Every credit of `statement` as a validated CloudEvent, in file order.

    Raises `FileInvalid` naming the entry when a credit cannot be an event of the contract.
    """
    out: list[ev.Event] = []
    for credit in statement.credits:
        event_id = _clean(credit.reference, ev.MAX_IDENTITY_BYTES) or digest_id(credit)
        raw = {
            "specversion": "1.0",
            "id": event_id,
            "source": ACCOUNT_SOURCE + account_label(credit.account),
            "type": credit.kind,
            "datacontenttype": "application/json",
            FILE_ATTRIBUTE: file_id,
            FORMAT_ATTRIBUTE: statement.format,
            ENTRY_ATTRIBUTE: credit.entry,
            "data": event_data(credit, event_id, key),
        }
        try:
            out.append(ev.validate(raw))
        except ev.ContractError as exc:
            raise FileInvalid(credit.entry, f"cannot become an event: {exc}") from None
    return out
