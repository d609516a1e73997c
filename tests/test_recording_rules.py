"""The pure rules behind recording: parts and shares, the invoice check, when to reconcile, excess,
which transaction is the payment, and the lease that outlasts a call."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.chargebee import Invoice, LinkedInvoice, Transaction, excess_of, is_the_payment
from consumers.errors import Busy, CurrencyMismatch, InvoiceNotPayable, Overpayment
from consumers.invoices import check_payable
from consumers.mapping import Part, RecordPayment, named_shares, parts_of, reference_ids, share
from consumers.recording import Lease, must_reconcile
from service.events import validate
from service.ledger import WHOLE, History, Ledger
from service.settings import DEFAULT_INVOICE_PATTERN, Settings

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def payment(**data: Any) -> Any:
    body = {
        "amount": "125.00",
        "currency": "USD",
        "booked_at": "2026-11-25T10:00:00Z",
        "bank_reference": "BR-1",
    }
    raw = {"specversion": "1.0", "id": "e", "source": "s", "type": "bank.deposit", "data": body | data}
    return validate(raw).payment


# -- parts and shares ------------------------------------------------------------------------------


def test_one_share_is_the_whole_event_several_are_named_by_invoice() -> None:
    """A payment on one invoice keeps the ledger part "" (and its old idempotency key)."""
    assert parts_of([("INV-1", 500)]) == [Part(WHOLE, "INV-1", 500)]
    assert parts_of([("INV-1", 200), ("INV-2", 300)]) == [
        Part("INV-1", "INV-1", 200),
        Part("INV-2", "INV-2", 300),
    ]


def test_the_event_names_its_shares_by_invoice_allocations_or_pattern() -> None:
    assert named_shares(payment(invoice_id="INV-9"), DEFAULT_INVOICE_PATTERN) == [("INV-9", 12500)]
    allocations = [{"invoice_id": "INV-1", "amount": "100.00"}, {"invoice_id": "INV-2", "amount": "25.00"}]
    assert named_shares(payment(allocations=allocations), DEFAULT_INVOICE_PATTERN) == [
        ("INV-1", 10000),
        ("INV-2", 2500),
    ]
    found = payment(remittance_information="for INV-77 thanks")
    assert named_shares(found, DEFAULT_INVOICE_PATTERN) == [("INV-77", 12500)]
    assert named_shares(payment(), DEFAULT_INVOICE_PATTERN) is None


def test_references_come_before_the_pattern() -> None:
    """Structured references are Chargebee's to resolve: the event alone names nothing then."""
    both = payment(references=["INV-5"], remittance_information="INV-6")
    assert named_shares(both, DEFAULT_INVOICE_PATTERN) is None


def test_reference_ids_keep_order_drop_repeats_and_what_cannot_be_an_invoice() -> None:
    refs = payment(references=["INV-2", " INV-1 ", "RF18 5390 0754", "INV-2", "a/b"])
    assert reference_ids(refs) == ["INV-2", "INV-1"]


@pytest.mark.parametrize(
    ("amount", "candidates", "expected"),
    [
        (500, [("A", 500)], [("A", 500)]),  # one invoice takes it all
        (700, [("A", 500)], [("A", 700)]),  # ... overpaid
        (300, [("A", 500)], [("A", 300)]),  # ... short
        (800, [("A", 500), ("B", 300)], [("A", 500), ("B", 300)]),  # exact sum
        (900, [("A", 500), ("B", 300)], [("A", 500), ("B", 400)]),  # the last takes the rest
        (600, [("A", 500), ("B", 300)], [("A", 500), ("B", 100)]),  # the last takes what is left
        (400, [("A", 500), ("B", 300)], [("A", 400)]),  # the money does not reach B
        (500, [("A", 500), ("B", 300), ("C", 100)], [("A", 500)]),
    ],
)
def test_share_fills_in_order_and_the_last_takes_the_remainder(
    amount: int, candidates: list[tuple[str, int]], expected: list[tuple[str, int]]
) -> None:
    shares = share(amount, candidates)
    assert shares == expected
    assert sum(a for _, a in shares) == amount


# -- the invoice check ---------------------------------------------------------------------------


def invoice(status: str = "payment_due", currency: str = "USD", due: int = 1000) -> Invoice:
    return Invoice(id="INV-1", status=status, amount_due=due, currency_code=currency)


def test_a_payable_invoice_in_the_payments_currency_passes() -> None:
    check_payable(invoice(), "USD", 1000, api_version="v1", overpayment="review")
    check_payable(invoice(), "USD", 5000, api_version="v1", overpayment="record")


def test_another_currency_is_a_mismatch_whatever_the_amount() -> None:
    with pytest.raises(CurrencyMismatch, match="EUR.*USD"):
        check_payable(invoice(), "EUR", 1, api_version="v1", overpayment="record")


@pytest.mark.parametrize(
    ("status", "version", "payable"),
    [
        ("payment_due", "v1", True), ("not_paid", "v1", True), ("posted", "v1", False),
        ("posted", "v2", True), ("paid", "v2", False), ("voided", "v2", False), ("pending", "v2", False),
    ],
)  # fmt: skip
def test_payable_statuses_follow_the_api_version(status: str, version: str, payable: bool) -> None:
    """v1 records on payment_due and not_paid; v2 on posted too; never paid, voided or pending."""
    if payable:
        check_payable(invoice(status), "USD", 10, api_version=version, overpayment="record")
    else:
        with pytest.raises(InvoiceNotPayable, match=status):
            check_payable(invoice(status), "USD", 10, api_version=version, overpayment="record")


def test_an_overpayment_in_review_mode_is_refused() -> None:
    with pytest.raises(Overpayment):
        check_payable(invoice(due=1000), "USD", 1001, api_version="v1", overpayment="review")


# -- reconciliation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reconcile", "key_age", "expected"),
    [
        (False, timedelta(minutes=1), False),  # a fresh key, nothing ambiguous: just call
        (True, timedelta(minutes=1), True),  # maybe recorded: look first
        (False, timedelta(minutes=24), False),
        (False, timedelta(minutes=25), True),  # a key Chargebee may forget by the time it arrives
        (False, timedelta(days=3), True),
    ],
)
def test_reconcile_when_maybe_recorded_or_the_key_is_near_the_window(
    reconcile: bool, key_age: timedelta, expected: bool
) -> None:
    history = History(reconcile=reconcile, unreadable_200=False, key_first_used_at=NOW - key_age)
    assert must_reconcile(history, NOW, call_seconds=30) is expected


def request(**overrides: Any) -> RecordPayment:
    values: dict[str, Any] = {
        "invoice_id": "INV-1", "amount": 2500, "payment_method": "bank_transfer", "reference_number": "BR-1",
        "paid_at": 1_795_600_800, "memo": None, "idempotency_key": "k", "headers": {},
    }  # fmt: skip
    return RecordPayment(**(values | overrides))


def transaction(**overrides: Any) -> Transaction:
    values: dict[str, Any] = {
        "id": "txn_1", "amount": 2500, "status": "success", "payment_method": "bank_transfer",
        "reference_number": "BR-1", "date": 1_795_600_800,
        "linked_invoices": [LinkedInvoice(invoice_id="INV-1", applied_amount=2500)],
    }  # fmt: skip
    return Transaction(**(values | overrides))


def test_the_payment_is_the_one_with_every_detail_of_the_request() -> None:
    assert is_the_payment(transaction(), request())


@pytest.mark.parametrize(
    "different",
    [
        {"amount": 2499},
        {"reference_number": "BR-2"},
        {"payment_method": "check"},
        {"date": 1_795_600_801},
        {"status": "failure"},
        {"linked_invoices": [LinkedInvoice(invoice_id="INV-2", applied_amount=2500)]},
    ],
)
def test_a_payment_that_differs_in_anything_is_not_it(different: dict[str, Any]) -> None:
    assert not is_the_payment(transaction(**different), request())


def test_excess_is_what_was_not_applied_to_the_invoice() -> None:
    assert excess_of(transaction(amount=3000, amount_unused=500), "INV-1", 3000) == 500
    applied = transaction(
        amount=3000, linked_invoices=[LinkedInvoice(invoice_id="INV-1", applied_amount=2000)]
    )
    assert excess_of(applied, "INV-1", 3000) == 1000
    assert excess_of(transaction(), "INV-1", 2500) == 0


# -- the lease -----------------------------------------------------------------------------------


async def test_the_lease_is_renewed_only_when_a_call_might_outlast_it(tmp_path: Path) -> None:
    """Within its spare time keep() writes nothing; past it, it renews; taken over, it is Busy."""
    ledger = await Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    key = ("acme-bank", "urn:acme", "evt")
    try:
        await ledger.claim(key, owner="me", lease_seconds=1.5, invoice_id="INV-1")
        lease = Lease(ledger, key, WHOLE, "me", seconds=1.5, call=0.3)  # spare: 1.5 - 0.3 - 1.0 = 0.2 s
        await lease.keep()  # within the spare time: nothing to do
        await asyncio.sleep(0.3)
        await lease.keep()  # renewed to 1.5 s from now
        other = {"owner": "other", "lease_seconds": 60.0, "invoice_id": "INV-1"}
        await asyncio.sleep(1.3)  # past the first lease, within the renewed one
        assert (await ledger.claim(key, **other)).status == "busy"  # type: ignore[arg-type]
        await asyncio.sleep(0.6)
        assert (await ledger.claim(key, **other)).status == "claimed"  # type: ignore[arg-type]
        with pytest.raises(Busy):
            await lease.keep()
    finally:
        await ledger.close()


# -- settings ------------------------------------------------------------------------------------


def test_a_lease_shorter_than_a_rate_limited_wait_and_a_call_is_refused() -> None:
    """64 in flight at 150/min wait up to 25.6 s, then a 30 s call: a 50 s lease could lapse mid-call."""
    with pytest.raises(ValueError, match=r"ledger_lease_seconds is 50 but must be at least 56\.6"):
        Settings(ledger_lease_seconds=50)
    Settings(ledger_lease_seconds=57)
    Settings(chargebee_rate_limit=0, chargebee_timeout_seconds=5, ledger_lease_seconds=6)


def test_overpayment_takes_record_or_review() -> None:
    assert Settings().consumer.overpayment == "record"
    assert Settings(overpayment="review").consumer.overpayment == "review"
    with pytest.raises(ValueError):
        Settings(overpayment="ignore")
