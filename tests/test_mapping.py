"""Event -> record_payment request: invoice matching, idempotency keys, skip headers, form fields."""

from __future__ import annotations

from typing import Any

import pytest

from consumers.mapping import (
    RecordPayment,
    find_invoice,
    form_fields,
    idempotency_key,
    to_request,
)
from service.event_data import Payment
from service.events import ContractError, validate
from service.settings import DEFAULT_INVOICE_PATTERN, Settings, SourceSettings
from tests.factories import check, deposit

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
KEY = ("acme-bank", "urn:acme:core", "evt-1")
HEADERS = ("chargebee-event-email", "chargebee-event-webhook", "chargebee-event-actions")


def payment(raw: dict[str, Any]) -> Payment:
    return validate(raw).payment


def settings(**overrides: Any) -> Settings:
    return Settings(**overrides)


def source(**overrides: Any) -> SourceSettings:
    return SourceSettings(secrets=[SECRET], **overrides)


# -- find_invoice --------------------------------------------------------------------------------


def test_invoice_id_beats_remittance() -> None:
    """data.invoice_id is used as is, even when remittance names another invoice."""
    found = payment(deposit(invoice_id="INV-7", remittance_information="pays INV-99"))
    assert find_invoice(found, DEFAULT_INVOICE_PATTERN) == "INV-7"


def test_remittance_matched_with_global_pattern() -> None:
    """Without invoice_id the default pattern finds the invoice in remittance_information."""
    found = payment(deposit(remittance_information="Payment for INV-1042, thanks"))
    assert find_invoice(found, DEFAULT_INVOICE_PATTERN) == "INV-1042"


def test_memo_searched_when_remittance_has_no_match() -> None:
    """The memo is the fallback when remittance_information names no invoice."""
    found = payment(deposit(remittance_information="monthly fee", memo="re INV-55"))
    assert find_invoice(found, DEFAULT_INVOICE_PATTERN) == "INV-55"


def test_memo_searched_when_remittance_absent() -> None:
    """The memo alone is enough when there is no remittance_information."""
    assert find_invoice(payment(check(memo="INV-8")), DEFAULT_INVOICE_PATTERN) == "INV-8"


def test_remittance_preferred_over_memo() -> None:
    """When both name an invoice, remittance_information wins."""
    found = payment(deposit(remittance_information="INV-1", memo="INV-2"))
    assert find_invoice(found, DEFAULT_INVOICE_PATTERN) == "INV-1"


def test_per_source_pattern_overrides_global() -> None:
    """invoice_pattern returns the source's own pattern for that source."""
    config = settings(sources={"acme-bank": source(invoice_pattern=r"ACME/(\d+)")})
    assert config.source("acme-bank").invoice_pattern == r"ACME/(\d+)"


def test_global_pattern_for_source_without_one() -> None:
    """A source without invoice_pattern, or an unknown origin, gets the global pattern."""
    config = settings(invoice_pattern=r"BILL-\d+", sources={"lockbox": source()})
    assert config.source("lockbox").invoice_pattern == r"BILL-\d+"
    assert config.source("unknown").invoice_pattern == r"BILL-\d+"


def test_per_source_pattern_used_for_matching() -> None:
    """The source's pattern finds an invoice the global pattern would not."""
    config = settings(sources={"acme-bank": source(invoice_pattern=r"ACME/(\d+)")})
    found = payment(deposit(remittance_information="ref ACME/3141"))
    assert find_invoice(found, config.source("acme-bank").invoice_pattern) == "3141"
    assert find_invoice(found, config.source("other").invoice_pattern) is None


def test_first_group_is_the_invoice_id() -> None:
    """A pattern with groups yields its first group, not the whole match."""
    found = payment(deposit(remittance_information="Invoice #cb_77 paid"))
    assert find_invoice(found, r"Invoice #(\w+) (paid)") == "cb_77"


def test_whole_match_without_groups() -> None:
    """A pattern without groups yields the whole match."""
    found = payment(deposit(remittance_information="Invoice #cb_77 paid"))
    assert find_invoice(found, r"cb_\d+") == "cb_77"


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("Invoice: INV 42 thanks", r"Invoice: (\w+ \w+)"),
        ("Invoice: INV/42", r"Invoice: (\S+)"),
        ("Invoice: ../etc", r"Invoice: (\S+)"),
        ("Invoice: " + "A" * 51, r"Invoice: (\S+)"),
        ("Invoice: ...", r"Invoice: (\S+)"),
    ],
)
def test_capture_that_is_not_an_invoice_id_is_refused(text: str, pattern: str) -> None:
    """A capture with spaces, '/', over 50 chars or only dots never becomes an invoice id."""
    assert find_invoice(payment(deposit(remittance_information=text)), pattern) is None


def test_optional_group_that_did_not_match_is_none() -> None:
    """A first group that took no part in the match gives no invoice id."""
    found = payment(deposit(remittance_information="INV-"))
    assert find_invoice(found, r"INV-(\d+)?") is None


def test_no_match_is_none() -> None:
    """Nothing in remittance or memo matches: no invoice."""
    found = payment(deposit(remittance_information="salary", memo="march"))
    assert find_invoice(found, DEFAULT_INVOICE_PATTERN) is None


def test_no_text_is_none() -> None:
    """No invoice_id, remittance or memo: no invoice."""
    assert find_invoice(payment(deposit()), DEFAULT_INVOICE_PATTERN) is None


def test_invoice_id_with_trailing_newline_never_reaches_the_url() -> None:
    """An invoice_id is 1-50 of [A-Za-z0-9_.-]: a trailing newline makes the event invalid.

    find_invoice trusts data.invoice_id, so validation is what keeps it out of the URL path.
    """
    with pytest.raises(ContractError):
        validate(deposit(invoice_id="INV-42\n"))


# -- idempotency_key -----------------------------------------------------------------------------


def test_idempotency_key_is_stable() -> None:
    """The same identity and generation always give the same key (retries reuse it)."""
    same = ("acme-bank", "urn:acme:core", "evt-1")
    assert idempotency_key(KEY, 3) == idempotency_key(same, 3)


def test_idempotency_key_changes_with_generation() -> None:
    """A replay (a new generation) gets a new key."""
    assert idempotency_key(KEY, 0) != idempotency_key(KEY, 1)


@pytest.mark.parametrize(
    "other",
    [
        ("lockbox", "urn:acme:core", "evt-1"),
        ("acme-bank", "urn:acme:other", "evt-1"),
        ("acme-bank", "urn:acme:core", "evt-2"),
    ],
)
def test_idempotency_key_changes_with_identity(other: tuple[str, str, str]) -> None:
    """Each part of the identity (origin, CloudEvent source, id) takes part in the key."""
    assert idempotency_key(KEY, 0) != idempotency_key(other, 0)


def test_idempotency_key_separator_in_identity_does_not_collide() -> None:
    """Identities that differ only in where a \\x1f falls get different keys.

    CloudEvent source and id are arbitrary strings, so joining them with a separator that may
    occur inside them makes two events share one Chargebee idempotency key.
    """
    first = ("acme-bank", "urn:a\x1fb", "c")
    second = ("acme-bank", "urn:a", "b\x1fc")
    assert idempotency_key(first, 0) != idempotency_key(second, 0)


def test_idempotency_key_fits_chargebee_limit() -> None:
    """Keys are at most 100 characters, even for 256-char ids and a large generation."""
    long_key = ("a" * 100, "s" * 256, "i" * 256)
    assert len(idempotency_key(long_key, 10**12)) <= 100


# -- a source's skip headers (Settings.source) ---------------------------------------------------


def test_no_skip_headers_by_default() -> None:
    """With every flag off, no chargebee-event-* header is sent."""
    assert settings().source("acme-bank").skip_headers() == {}


@pytest.mark.parametrize(
    ("flag", "header"),
    [
        ("skip_emails", "chargebee-event-email"),
        ("skip_webhooks", "chargebee-event-webhook"),
        ("skip_actions", "chargebee-event-actions"),
    ],
)
def test_global_flag_sets_its_header(flag: str, header: str) -> None:
    """Each global flag sends exactly its header, with value all-disabled."""
    assert settings(**{flag: True}).source("acme-bank").skip_headers() == {header: "all-disabled"}


def test_all_three_headers() -> None:
    """All flags on: all three headers, each all-disabled."""
    config = settings(skip_emails=True, skip_webhooks=True, skip_actions=True)
    assert config.source("acme-bank").skip_headers() == dict.fromkeys(HEADERS, "all-disabled")


def test_source_false_overrides_global_true() -> None:
    """A source's False turns off a header the global settings turn on."""
    config = settings(
        skip_emails=True,
        skip_webhooks=True,
        skip_actions=True,
        sources={"acme-bank": source(skip_emails=False, skip_webhooks=False, skip_actions=False)},
    )
    assert config.source("acme-bank").skip_headers() == {}


def test_source_true_overrides_global_false() -> None:
    """A source's True turns on a header the global settings leave off."""
    config = settings(sources={"acme-bank": source(skip_emails=True, skip_webhooks=True, skip_actions=True)})
    assert config.source("acme-bank").skip_headers() == dict.fromkeys(HEADERS, "all-disabled")


def test_source_unset_inherits_global() -> None:
    """A source that sets only one flag inherits the others from the global settings."""
    config = settings(skip_emails=True, skip_actions=True, sources={"acme-bank": source(skip_emails=False)})
    assert config.source("acme-bank").skip_headers() == {"chargebee-event-actions": "all-disabled"}


def test_override_applies_to_its_source_only() -> None:
    """Another origin keeps the global flags."""
    config = settings(skip_webhooks=True, sources={"acme-bank": source(skip_webhooks=False)})
    assert config.source("lockbox").skip_headers() == {"chargebee-event-webhook": "all-disabled"}


# -- to_request ----------------------------------------------------------------------------------


def test_to_request_carries_the_payment() -> None:
    """Invoice, amount, method, reference, key and skip headers all come through."""
    config = settings(skip_emails=True)
    request = to_request(config, KEY, payment(deposit()), "INV-1", 2)
    assert request == RecordPayment(
        invoice_id="INV-1",
        amount=125000,
        payment_method="bank_transfer",
        reference_number="BR-778",
        paid_at=1795600800,
        memo=None,
        idempotency_key=idempotency_key(KEY, 2),
        headers={"chargebee-event-email": "all-disabled"},
    )


def test_paid_at_is_unix_seconds_in_utc() -> None:
    """paid_at is the event time as Unix seconds, offsets applied, fractions dropped."""
    found = payment(deposit(booked_at="2026-11-25T10:00:00.75+02:00"))
    assert to_request(settings(), KEY, found, "INV-1", 0).paid_at == 1795593600


def test_paid_at_of_a_date_is_midnight_utc() -> None:
    """A bare date is midnight UTC."""
    found = payment(check(scanned_at="2026-03-01"))
    assert to_request(settings(), KEY, found, "INV-1", 0).paid_at == 1772323200


def test_memo_preferred_over_remittance() -> None:
    """The memo is sent when there is one."""
    found = payment(deposit(remittance_information="INV-1 thanks", memo="march rent"))
    assert to_request(settings(), KEY, found, "INV-1", 0).memo == "march rent"


def test_memo_falls_back_to_remittance() -> None:
    """Without a memo the remittance information is sent as the memo."""
    found = payment(deposit(remittance_information="INV-1 thanks"))
    assert to_request(settings(), KEY, found, "INV-1", 0).memo == "INV-1 thanks"


def test_memo_is_truncated() -> None:
    """A long memo is cut to its first 300 characters."""
    text = "".join(chr(ord("a") + i % 26) for i in range(2000))
    request = to_request(settings(), KEY, payment(deposit(memo=text)), "INV-1", 0)
    assert request.memo == text[:300]


# -- form_fields ---------------------------------------------------------------------------------


def request_for(raw: dict[str, Any]) -> RecordPayment:
    return to_request(settings(), KEY, payment(raw), "INV-1", 0)


def test_v1_bank_transfer_fields() -> None:
    """API v1: amount, payment_method, reference_number, paid_at and memo."""
    request = request_for(deposit(memo="thanks"))
    assert form_fields(request, "v1") == {
        "amount": "125000",
        "payment_method": "bank_transfer",
        "reference_number": "BR-778",
        "paid_at": "1795600800",
        "memo": "thanks",
    }


def test_v1_check_fields_without_memo() -> None:
    """API v1 for a check without memo: no memo field at all."""
    assert form_fields(request_for(check()), "v1") == {
        "amount": "8000",
        "payment_method": "check",
        "reference_number": "10442",
        "paid_at": "1795600800",
    }


def test_v2_bank_transfer_fields() -> None:
    """API v2: transaction[...] fields and the memo as comment."""
    request = request_for(deposit(memo="thanks"))
    assert form_fields(request, "v2") == {
        "transaction[amount]": "125000",
        "transaction[payment_method]": "bank_transfer",
        "transaction[reference_number]": "BR-778",
        "transaction[date]": "1795600800",
        "comment": "thanks",
    }


def test_v2_check_fields_without_memo() -> None:
    """API v2 for a check without memo: no comment field at all."""
    assert form_fields(request_for(check()), "v2") == {
        "transaction[amount]": "8000",
        "transaction[payment_method]": "check",
        "transaction[reference_number]": "10442",
        "transaction[date]": "1795600800",
    }


@pytest.mark.parametrize("version", ["v1", "v2"])
@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [("1500", "JPY", "1500"), ("12.345", "BHD", "12345"), ("12.3", "BHD", "12300")],
)
def test_amount_in_minor_units(version: str, amount: str, currency: str, minor: str) -> None:
    """JPY (exponent 0) and BHD (exponent 3) amounts are sent in minor units."""
    fields = form_fields(request_for(deposit(amount=amount, currency=currency)), version)
    assert fields["amount" if version == "v1" else "transaction[amount]"] == minor
