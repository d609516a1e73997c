"""A parsed file's credits as CloudEvents (service/bankfiles/events.py) and one file's path (intake.py).

Pure: no broker, no parser. The credits are written here by hand as the parsers return them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta, timezone

import orjson
import pytest

from service.bankfiles import events, intake
from service.bankfiles.model import CHECK, DEPOSIT, Credit, FileInvalid, Skipped, Statement

IBAN = "DE89 3704 0044 0532 0130 00"
PAYER_IBAN = "GB29NWBK60161331926819"
KEY = b"fingerprint-key-for-tests-only"


def credit(**changes: object) -> Credit:
    base = Credit(
        kind=DEPOSIT,
        entry="Stmt[1]/Ntry[1]",
        position=0,
        account=IBAN,
        amount=19999,
        currency="USD",
        booked_at=date(2026, 11, 30),
        reference="BANKREF-1",
        remittance_information="Payment INV-1003",
        references=("INV-1003",),
        payer_name="Globex Corp.",
        payer_account=PAYER_IBAN,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def statement(*credits: Credit, skipped: tuple[Skipped, ...] = ()) -> Statement:
    return Statement(
        format="camt.054",
        version="camt.054.001.08",
        accounts=1,
        entries=len(credits) + len(skipped),
        credits=credits,
        skipped=skipped,
    )


def one(c: Credit, key: bytes | None = KEY) -> dict[str, object]:
    (event,) = events.to_events(statement(c), "file-1", key)
    return event.raw


def test_deposit_event_carries_the_contract_fields() -> None:
    """A credit becomes a bank.deposit with the bank's reference as id and the data a sender would write."""
    raw = one(credit())
    assert raw["type"] == "bank.deposit"
    assert raw["id"] == "BANKREF-1"
    assert raw["data"] == {
        "amount": "199.99",
        "currency": "USD",
        "booked_at": "2026-11-30T00:00:00Z",
        "bank_reference": "BANKREF-1",
        "remittance_information": "Payment INV-1003",
        "references": ["INV-1003"],
        "payer": {
            "name": "Globex Corp.",
            "account_last4": "6819",
            "account_fingerprint": events.fingerprint(PAYER_IBAN, KEY),
        },
    }


def test_the_file_story_travels_as_extension_attributes() -> None:
    """payrelayfile, payrelayformat and payrelayentry say which file and where in it."""
    raw = one(credit(entry="Stmt[1]/Ntry[4]/TxDtls[2]"))
    assert (raw["payrelayfile"], raw["payrelayformat"], raw["payrelayentry"]) == (
        "file-1",
        "camt.054",
        "Stmt[1]/Ntry[4]/TxDtls[2]",
    )


def test_no_full_account_number_leaves_the_package() -> None:
    """Neither the receiving account nor the payer's appears anywhere in the event, spaced or not."""
    body = orjson.dumps(one(credit(micr_account="000123456789"))).decode()
    for number in (IBAN, IBAN.replace(" ", ""), PAYER_IBAN, "000123456789", "370400440532013000"):
        assert number not in body


def test_the_source_names_the_account_by_a_stable_label() -> None:
    """Spacing and case of the account do not change the source; another account does."""
    a = one(credit(account="DE89 3704 0044 0532 0130 00"))["source"]
    b = one(credit(account="de89370400440532013000"))["source"]
    c = one(credit(account="DE89370400440532013001"))["source"]
    assert a == b != c
    assert str(a).startswith("urn:payrelay:account:3000-")


def test_the_fingerprint_is_an_hmac_of_the_normalised_number() -> None:
    """HMAC-SHA256 under the key of the number without spaces, upper case; another key, another print."""
    expected = hmac.new(KEY, PAYER_IBAN.encode(), hashlib.sha256).hexdigest()[:48]
    assert events.fingerprint("gb29 nwbk 6016 1331 9268 19", KEY) == f"hmac-sha256:{expected}"
    assert events.fingerprint(PAYER_IBAN, b"another-key-for-tests") != events.fingerprint(PAYER_IBAN, KEY)


def test_without_a_key_there_is_no_fingerprint() -> None:
    """payer_fingerprint_key unset: the last four digits only."""
    payer = one(credit(), key=None)["data"]["payer"]  # type: ignore[index]
    assert payer == {"name": "Globex Corp.", "account_last4": "6819"}


def test_a_credit_without_reference_gets_a_digest_identity() -> None:
    """No bank reference: the id digests account, date, amount, references and position, stably."""
    first = one(credit(reference=None))
    again = one(credit(reference=None))
    elsewhere = one(credit(reference=None, position=1))
    assert str(first["id"]).startswith("sha256:")
    assert first["id"] == again["id"] != elsewhere["id"]
    assert first["data"]["bank_reference"] == first["id"]  # type: ignore[index]


def test_a_check_becomes_check_scan_with_micr() -> None:
    """Checks carry check_number, scanned_at, and the MICR routing number and last four."""
    raw = one(
        credit(
            kind=CHECK,
            check_number="004711",
            micr_routing="021000021",
            micr_account="000123456789",
            payer_account=None,
            booked_at=datetime(2026, 11, 30, 9, 30, tzinfo=timezone(timedelta(hours=1))),
        )
    )
    data = raw["data"]
    assert raw["type"] == "check.scan"
    assert data["check_number"] == "004711"  # type: ignore[index]
    assert data["scanned_at"] == "2026-11-30T08:30:00Z"  # type: ignore[index]
    assert data["micr"] == {"routing_number": "021000021", "account_last4": "6789"}  # type: ignore[index]
    assert "bank_reference" not in data  # type: ignore[operator]


@pytest.mark.parametrize(
    ("allocations", "kept"),
    [
        ((("INV-1003", 9999), ("INV-1004", 10000)), True),
        ((("INV-1003", 9999), ("INV-1004", 9999)), False),  # does not sum to the credit
        ((("INV-1003", 9999), ("INV-1003", 10000)), False),  # one document twice
        ((("INV 1003", 9999), ("INV-1004", 10000)), False),  # not an invoice id payrelay can address
        ((), False),
    ],
)
def test_allocations_only_when_they_name_invoices_and_sum_exactly(
    allocations: tuple[tuple[str, int], ...], kept: bool
) -> None:
    """Per-document amounts become allocations only when they are certain; else references alone."""
    data = one(credit(allocations=allocations, references=("INV-1003", "INV-1004")))["data"]
    assert ("allocations" in data) is kept  # type: ignore[operator]
    if kept:
        assert data["allocations"] == [  # type: ignore[index]
            {"invoice_id": "INV-1003", "amount": "99.99"},
            {"invoice_id": "INV-1004", "amount": "100.00"},
        ]
    assert data["references"] == ["INV-1003", "INV-1004"]  # type: ignore[index]


def test_text_is_cleaned_to_what_the_contract_takes() -> None:
    """Control characters and runs of spaces go, long text is cut, over-long references are dropped."""
    data = one(
        credit(
            remittance_information="INV-1003\r\n  thanks\x1b[31m" + "x" * 3000,
            references=("INV-1003", "R" * 101, "  ", "INV-1003"),
        )
    )["data"]
    text = data["remittance_information"]  # type: ignore[index]
    assert text.startswith("INV-1003 thanks [31m") and len(text) == 2000
    assert data["references"] == ["INV-1003"]  # type: ignore[index]


def test_amounts_follow_the_currency_exponent() -> None:
    """JPY has no minor unit, BHD three: the event's decimal string says so exactly."""
    assert one(credit(currency="JPY", amount=150000))["data"]["amount"] == "150000"  # type: ignore[index]
    assert one(credit(currency="BHD", amount=125500))["data"]["amount"] == "125.500"  # type: ignore[index]


def test_a_datetime_booking_keeps_its_instant() -> None:
    """A booking time with an offset is the same instant in UTC."""
    at = datetime(2026, 11, 30, 23, 30, tzinfo=timezone(timedelta(hours=-5)))
    assert one(credit(booked_at=at))["data"]["booked_at"] == "2026-12-01T04:30:00Z"  # type: ignore[index]
    assert one(credit(booked_at=datetime(2026, 11, 30, 8, 0)))["data"]["booked_at"] == "2026-11-30T08:00:00Z"  # type: ignore[index]
    assert datetime(2026, 11, 30, tzinfo=UTC)  # (naive times are read as UTC, above)


def test_one_transaction_twice_in_a_file_is_refused() -> None:
    """Two credits with one identity would be recorded as one: the file is refused, naming both."""
    doubled = statement(credit(), credit(entry="Stmt[1]/Ntry[7]", position=1, amount=500))
    with pytest.raises(FileInvalid) as caught:
        intake.read_statement(doubled, file_id="f", key=KEY)
    assert caught.value.where == "Stmt[1]/Ntry[7]"
    assert "Stmt[1]/Ntry[1]" in caught.value.why


def test_the_answer_lists_file_events_and_skipped_entries() -> None:
    """The 202 body of SPEC §9: file {format, version, accounts, entries}, accepted, published, skipped."""
    skipped = (Skipped("Stmt[1]/Ntry[2]", "debit", "a debit of 10.00 USD"),)
    read = intake.read_statement(statement(credit(), skipped=skipped), file_id="f-9", key=KEY)
    assert read.answer(published=1) == {
        "file": {
            "id": "f-9",
            "format": "camt.054",
            "version": "camt.054.001.08",
            "accounts": 1,
            "entries": 2,
        },
        "accepted": 1,
        "published": 1,
        "skipped": [{"entry": "Stmt[1]/Ntry[2]", "reason": "debit", "detail": "a debit of 10.00 USD"}],
        "ids": ["BANKREF-1"],
    }


def test_outgoing_messages_are_built_as_the_ingest_endpoint_builds_them() -> None:
    """Routing key = type, message_id = event id, x-payrelay-source = origin, the body the event."""
    read = intake.read_statement(statement(credit()), file_id="f", key=KEY)
    (message,) = intake.outgoing(read, "acme-bank", "payrelay.events", None)
    assert (message.exchange, message.routing_key, message.message_id) == (
        "payrelay.events",
        "bank.deposit",
        "BANKREF-1",
    )
    assert message.headers == {"x-payrelay-source": "acme-bank"}
    assert orjson.loads(message.body) == read.events[0].raw
