"""payment.recorded / invoice.paid CloudEvents: content, stable ids, encoding for the broker."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from consumers.chargebee import RecordResult
from consumers.confirmations import build, confirmation_id, encode, outgoing
from service.broker import Outgoing
from service.events import Event, validate
from tests.factories import check, deposit

KEY = ("acme-bank", "urn:acme:core", "evt-1")
AT = datetime(2026, 11, 25, 9, 30, 5, tzinfo=UTC)


def deposit_event(**data: Any) -> Event:
    return validate(deposit(**({"booked_at": "2026-11-25T10:00:00+02:00"} | data)))


def check_event(**data: Any) -> Event:
    return validate(
        check(id="chk-9", source="urn:lockbox", **({"amount": "12.345", "currency": "BHD"} | data))
    )


def recorded(status: str = "paid", amount_due: int = 0) -> RecordResult:
    return RecordResult(
        transaction_id="txn_1",
        invoice_id="INV-1",
        invoice_status=status,
        amount_due=amount_due,
        currency="USD",
        replayed=False,
    )


def types(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


# -- build ---------------------------------------------------------------------------------------


def test_paid_invoice_gets_both_events() -> None:
    """A payment that leaves the invoice paid: payment.recorded and invoice.paid."""
    assert types(build(KEY, deposit_event(), "INV-1", recorded("paid"), AT)) == [
        "payment.recorded",
        "invoice.paid",
    ]


@pytest.mark.parametrize("status", ["payment_due", "not_paid", "posted", "PAID", ""])
def test_unpaid_invoice_gets_payment_recorded_only(status: str) -> None:
    """Any status but exactly 'paid': payment.recorded alone."""
    events = build(KEY, deposit_event(), "INV-1", recorded(status, amount_due=500), AT)
    assert types(events) == ["payment.recorded"]


def test_data_has_every_spec_field() -> None:
    """data carries SPEC §5's fields with the event's and Chargebee's values."""
    event = build(KEY, deposit_event(), "INV-1", recorded("payment_due", amount_due=2500), AT)[0]
    assert event["data"] == {
        "invoice_id": "INV-1",
        "transaction_id": "txn_1",
        "amount": 125000,
        "currency": "USD",
        "payment_method": "bank_transfer",
        "reference_number": "BR-778",
        "invoice_status": "payment_due",
        "amount_due": 2500,
        "paid_at": "2026-11-25T08:00:00Z",
        "origin": "acme-bank",
        "cause": {"source": "urn:acme:core", "id": "evt-1", "type": "bank.deposit"},
    }


def test_check_data() -> None:
    """A check.scan: method check, check number as reference, BHD amount in minor units."""
    key = ("lockbox", "urn:lockbox", "chk-9")
    data = build(key, check_event(), "INV-2", recorded(), AT)[0]["data"]
    assert (data["amount"], data["currency"]) == (12345, "BHD")
    assert (data["payment_method"], data["reference_number"]) == ("check", "10442")
    assert data["cause"] == {"source": "urn:lockbox", "id": "chk-9", "type": "check.scan"}
    assert data["origin"] == "lockbox"


def test_invoice_paid_carries_the_same_data() -> None:
    """Both confirmations of one payment describe it identically."""
    recorded_event, paid_event = build(KEY, deposit_event(), "INV-1", recorded("paid"), AT)
    assert recorded_event["data"] == paid_event["data"]


def test_paid_at_is_utc_with_z() -> None:
    """paid_at is RFC 3339 in UTC with a Z, fractions kept."""
    event = build(KEY, deposit_event(booked_at="2026-11-25T10:00:00.5-05:00"), "INV-1", recorded(), AT)[0]
    assert event["data"]["paid_at"] == "2026-11-25T15:00:00.500000Z"


def test_envelope_attributes() -> None:
    """specversion 1.0, source payrelay, JSON data, the invoice as subject and `at` as time."""
    for event in build(KEY, deposit_event(), "INV-1", recorded(), AT):
        assert event["specversion"] == "1.0"
        assert event["source"] == "payrelay"
        assert event["datacontenttype"] == "application/json"
        assert event["subject"] == "INV-1"
        assert event["time"] == "2026-11-25T09:30:05Z"


def test_ids_are_the_confirmation_ids() -> None:
    """Each event's id is confirmation_id(identity, type), a UUID."""
    for event in build(KEY, deposit_event(), "INV-1", recorded(), AT):
        assert event["id"] == confirmation_id(KEY, event["type"])
        assert uuid.UUID(event["id"]).version == 5


# -- confirmation_id -----------------------------------------------------------------------------


def test_ids_are_stable() -> None:
    """The same identity and type always give the same id (a replay republishes it)."""
    same = ("acme-bank", "urn:acme:core", "evt-1")
    assert confirmation_id(KEY, "invoice.paid") == confirmation_id(same, "invoice.paid")


def test_ids_stable_across_builds() -> None:
    """Building again later, for a redelivery, yields the same ids."""
    first = build(KEY, deposit_event(), "INV-1", recorded(), AT)
    again = build(KEY, deposit_event(), "INV-1", recorded(), datetime(2026, 12, 1, tzinfo=UTC))
    assert [e["id"] for e in first] == [e["id"] for e in again]


def test_ids_differ_by_type() -> None:
    """payment.recorded and invoice.paid of one event have different ids."""
    assert confirmation_id(KEY, "payment.recorded") != confirmation_id(KEY, "invoice.paid")


@pytest.mark.parametrize(
    "other",
    [
        ("lockbox", "urn:acme:core", "evt-1"),
        ("acme-bank", "urn:acme:other", "evt-1"),
        ("acme-bank", "urn:acme:core", "evt-2"),
    ],
)
def test_ids_differ_by_identity(other: tuple[str, str, str]) -> None:
    """Every part of the inbound identity changes the id."""
    assert confirmation_id(KEY, "payment.recorded") != confirmation_id(other, "payment.recorded")


def test_ids_differ_when_identity_parts_contain_the_separator() -> None:
    """Identities that differ only in where a \\x1f falls get different ids.

    CloudEvent source and id are arbitrary strings; with a separator that may occur inside
    them, two inbound events share a confirmation id and downstream drops one as a duplicate.
    """
    first = ("acme-bank", "urn:a\x1fb", "c")
    second = ("acme-bank", "urn:a", "b\x1fc")
    assert confirmation_id(first, "payment.recorded") != confirmation_id(second, "payment.recorded")


# -- encode / outgoing ---------------------------------------------------------------------------


def test_round_trip_to_outgoing() -> None:
    """encode then outgoing: one message per event, routed by type, id as message_id."""
    events = build(KEY, deposit_event(), "INV-1", recorded("paid"), AT)
    headers = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    messages = outgoing("payrelay.confirmations", encode(events), headers)
    assert messages == [
        Outgoing(
            exchange="payrelay.confirmations",
            routing_key=event["type"],
            body=orjson.dumps(event),
            message_id=event["id"],
            headers=headers,
            type=event["type"],
            mandatory=False,
        )
        for event in events
    ]


def test_outgoing_bodies_decode_to_the_events() -> None:
    """Each message body is the CloudEvent itself."""
    events = build(KEY, deposit_event(), "INV-1", recorded("paid"), AT)
    messages = outgoing("x", encode(events), {})
    assert [orjson.loads(m.body) for m in messages] == events


def test_outgoing_is_not_mandatory() -> None:
    """Confirmations with no bound downstream queue are not a failure."""
    messages = outgoing("x", encode(build(KEY, deposit_event(), "INV-1", recorded(), AT)), {})
    assert [m.mandatory for m in messages] == [False, False]


def test_outgoing_content_type_is_cloudevents() -> None:
    """Messages are typed application/cloudevents+json."""
    messages = outgoing("x", encode(build(KEY, deposit_event(), "INV-1", recorded(), AT)), {})
    assert {m.content_type for m in messages} == {"application/cloudevents+json"}


def test_encode_is_deterministic() -> None:
    """The same confirmations encode to the same bytes (a duplicate republishes them byte for byte)."""
    events = build(KEY, deposit_event(), "INV-1", recorded(), AT)
    assert encode(events) == encode(build(KEY, deposit_event(), "INV-1", recorded(), AT))
