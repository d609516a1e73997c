"""Parsing and validating inbound CloudEvents (SPEC §2)."""

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from service.events import BodyError, EventInvalid, parse_body, parse_time, validate, validate_batch


def deposit(**data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": "1250.00",
        "currency": "USD",
        "booked_at": "2026-11-20T10:00:00Z",
        "bank_reference": "REF1",
    }
    body.update(data)
    return {"specversion": "1.0", "id": "e1", "source": "urn:acme", "type": "bank.deposit", "data": body}


def check(**data: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "amount": "99.95",
        "currency": "USD",
        "scanned_at": "2026-11-20T10:00:00+02:00",
        "check_number": "1042",
    }
    body.update(data)
    return {"specversion": "1.0", "id": "c1", "source": "urn:scanner", "type": "check.scan", "data": body}


def fields(exc: pytest.ExceptionInfo[EventInvalid]) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_bank_deposit_maps_to_a_bank_transfer() -> None:
    """A valid deposit becomes a bank_transfer payment in minor units, paid at booked_at."""
    event = validate(deposit(invoice_id="INV-1"))
    assert event.payment.method == "bank_transfer"
    assert event.payment.amount == 125000
    assert event.payment.reference_number == "REF1"
    assert event.payment.paid_at == datetime(2026, 11, 20, 10, tzinfo=UTC)
    assert event.payment.invoice_id == "INV-1"


def test_check_scan_maps_to_a_check_with_utc_time() -> None:
    """A check scan becomes a check payment; offsets are normalised to UTC."""
    event = validate(check(micr={"routing_number": "021000021", "account_last4": "6789"}))
    assert event.payment.method == "check"
    assert event.payment.reference_number == "1042"
    assert event.payment.paid_at == datetime(2026, 11, 20, 8, tzinfo=UTC)


def test_date_only_booking_is_midnight_utc() -> None:
    """A bank's booking date without a time is taken as midnight UTC."""
    assert validate(deposit(booked_at="2026-11-20")).payment.paid_at == datetime(2026, 11, 20, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({**deposit(), "specversion": "0.3"}, "specversion"),
        ({**deposit(), "id": ""}, "id"),
        ({**deposit(), "source": 5}, "source"),
        ({**deposit(), "type": "card.charge"}, "type"),
        ({**deposit(), "time": "yesterday"}, "time"),
        ({**deposit(), "data": "x"}, "data"),
        ({**deposit(), "datacontenttype": "text/xml"}, "datacontenttype"),
        (deposit(amount=12.5), "data.amount"),
        (deposit(amount="12.505"), "data.amount"),
        (deposit(amount="0.00"), "data.amount"),
        (deposit(amount="-1.00"), "data.amount"),
        (deposit(currency="ZZZ"), "data.currency"),
        (deposit(booked_at="2026-13-45T10:00:00Z"), "data.booked_at"),
        (deposit(booked_at="2026-11-20T10:00:00"), "data.booked_at"),
        (deposit(booked_at="0001-01-01T00:00:00+00:02"), "data.booked_at"),
        (deposit(booked_at="1969-12-31T23:59:59Z"), "data.booked_at"),
        (deposit(bank_reference=""), "data.bank_reference"),
        (deposit(bank_reference="x" * 101), "data.bank_reference"),
        (deposit(invoice_id="../admin"), "data.invoice_id"),
        (deposit(invoice_id=".."), "data.invoice_id"),
        (deposit(payer={"account_last4": "123456789"}), "data.payer.account_last4"),
        (deposit(payer={"iban": "DE89370400440532013000"}), "data.payer.iban"),
        (deposit(micr={"routing_number": "021000021"}), "data.micr"),
        (check(micr={"routing_number": "12"}), "data.micr.routing_number"),
        (check(check_number=None), "data.check_number"),
    ],
)
def test_invalid_fields_are_named(raw: dict[str, Any], field: str) -> None:
    """Each contract violation is reported with the failing field's path."""
    with pytest.raises(EventInvalid) as exc:
        validate(raw)
    assert field in fields(exc)


def test_missing_required_data_lists_every_field() -> None:
    """All missing required fields are reported at once."""
    raw = deposit()
    raw["data"] = {}
    with pytest.raises(EventInvalid) as exc:
        validate(raw)
    assert {"data.amount", "data.currency", "data.booked_at", "data.bank_reference"} <= fields(exc)


def test_type_not_allowed_for_the_source() -> None:
    """A type outside the source's `types` is rejected by name."""
    with pytest.raises(EventInvalid, match="not accepted from this source"):
        validate(check(), allowed_types=("bank.deposit",))


def test_batch_names_failing_indexes() -> None:
    """A batch fails whole, with the index of every failing event."""
    with pytest.raises(EventInvalid) as exc:
        validate_batch([deposit(), deposit(amount="x"), check(), {"nope": 1}], ("bank.deposit", "check.scan"))
    assert {e.index for e in exc.value.errors} == {1, 3}


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"{not json", "application/json", "not valid JSON"),
        (b"[1, 2]", "application/cloudevents+json", "JSON object"),
        (b'"text"', "application/json", "JSON object"),
        (b'{"a": 1}', "application/cloudevents-batch+json", "JSON array"),
    ],
)
def test_body_shape_errors(body: bytes, content_type: str, message: str) -> None:
    """Bodies that are not JSON, or not the shape their content type promises, are BodyErrors."""
    with pytest.raises(BodyError, match=message):
        parse_body(body, content_type)


def test_parse_body_single_and_batch() -> None:
    """A structured body is one event; a batch body is a list."""
    assert parse_body(orjson.dumps(deposit()), "application/json") == ([deposit()], False)
    assert parse_body(orjson.dumps([deposit(), check()]), "application/cloudevents-batch+json")[1] is True


@pytest.mark.parametrize(
    "value", ["2026-11-20T10:00:00.123456Z", "2026-11-20t10:00:00z", "2026-11-20 10:00:00-05:00"]
)
def test_rfc3339_variants(value: str) -> None:
    """RFC 3339's allowed variants parse to aware UTC datetimes."""
    assert parse_time(value).tzinfo is UTC


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            " trace=4bf92f3577b34da6a3ce929d0e0e4736",
        ),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""),
        ("garbage", ""),
        (None, ""),
    ],
)
def test_traceparent_is_passed_on_only_when_well_formed(header: str | None, expected: str) -> None:
    """A well-formed W3C traceparent is logged by its trace id; anything else is dropped."""
    from service.tracing import log_suffix, valid

    assert log_suffix(header) == expected
    assert (valid(header) is not None) == bool(expected)
