"""Parsing and validating inbound CloudEvents (SPEC §2)."""

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.event_data import Allocation, parse_time
from service.events import BodyError, ContractError, parse_body, validate, validate_batch
from tests.factories import check, deposit


def fields(exc: pytest.ExceptionInfo[ContractError]) -> set[str]:
    return {e.field for e in exc.value.errors}


def test_bank_deposit_maps_to_a_bank_transfer() -> None:
    """A valid deposit becomes a bank_transfer payment in minor units, paid at booked_at."""
    event = validate(deposit(invoice_id="INV-1"))
    assert event.payment.method == "bank_transfer"
    assert event.payment.amount == 125000
    assert event.payment.reference_number == "BR-778"
    assert event.payment.paid_at == datetime(2026, 11, 25, 10, tzinfo=UTC)
    assert event.payment.invoice_id == "INV-1"


def test_check_scan_maps_to_a_check_with_utc_time() -> None:
    """A check scan becomes a check payment; offsets are normalised to UTC."""
    micr = {"routing_number": "021000021", "account_last4": "6789"}
    event = validate(check(scanned_at="2026-11-25T10:00:00+02:00", micr=micr))
    assert event.payment.method == "check"
    assert event.payment.reference_number == "10442"
    assert event.payment.paid_at == datetime(2026, 11, 25, 8, tzinfo=UTC)


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
    with pytest.raises(ContractError) as exc:
        validate(raw)
    assert field in fields(exc)


def test_missing_required_data_lists_every_field() -> None:
    """All missing required fields are reported at once."""
    raw = deposit()
    raw["data"] = {}
    with pytest.raises(ContractError) as exc:
        validate(raw)
    assert {"data.amount", "data.currency", "data.booked_at", "data.bank_reference"} <= fields(exc)


def test_type_not_allowed_for_the_source() -> None:
    """A type outside the source's `types` is rejected by name."""
    with pytest.raises(ContractError, match="not accepted from this source"):
        validate(check(), allowed_types=("bank.deposit",))


def test_batch_names_failing_indexes() -> None:
    """A batch fails whole, with the index of every failing event."""
    with pytest.raises(ContractError) as exc:
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


@pytest.mark.parametrize(
    "body",
    [
        b'{"specversion":"1.0","id":"a","id":"b"}',
        b'{"data": {"amount": "1.00", "amount": "1000000.00"}}',
        b'{"data":{"payer":{"name":"x:y","name":"z"}}}',
        b'{"k\\/":1,"k/":2}',  # one key, two spellings
        b'{"\\u0061":1,"a":2}',  # the same, by a \\u escape (the exact path)
        b'{"a":"\\u003a","a":1}',  # an escaped colon cannot hide the second key
    ],
)
def test_a_repeated_key_is_a_body_error(body: bytes) -> None:
    """orjson would keep the last of two equal keys; a signed body means one thing, so it is a 400."""
    with pytest.raises(BodyError, match="same key twice"):
        parse_body(body, "application/json")
    with pytest.raises(BodyError, match="same key twice"):
        parse_body(b"[" + body + b"]", "application/cloudevents-batch+json")


def test_colons_in_values_and_escapes_are_not_repeats() -> None:
    """Times, URNs, escaped text and the same key in two objects are all fine."""
    raw = {**deposit(), "source": "urn:acme-bank:statement", "time": "2026-11-25T10:00:00Z"}
    raw["data"]["memo"] = 'M\u00fcller: "INV:1"'
    for dumped in (orjson.dumps(raw), json.dumps(raw, indent=2).encode(), json.dumps(raw).encode()):
        assert parse_body(dumped, "application/json") == ([raw], False)
    assert parse_body(orjson.dumps([raw, raw]), "application/cloudevents-batch+json") == ([raw, raw], True)


# JSON text as written: `\\u003a` is a colon, `\\/` a slash, so keys repeat in more than one spelling.
_KEYS = st.sampled_from(["a", "b", ":", "a:b", "\\u00e9", "\\u003a", "\\/", "/"])
_JSON_TEXT = st.recursive(
    st.one_of(st.integers(), st.booleans(), st.none(), st.builds(lambda k: f"v{k}", _KEYS)),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.lists(st.tuples(_KEYS, inner), max_size=4),  # pairs: keys may repeat
    ),
    max_leaves=12,
)


def _render(value: Any) -> str:
    """JSON text with keys written as given (so escapes and repeats survive), pairs as objects."""
    if isinstance(value, list) and all(isinstance(v, tuple) for v in value) and value:
        return "{" + ",".join(f'"{k}" : {_render(v)}' for k, v in value) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_render(v) for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return json.dumps(value)


def _repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    if len({k for k, _ in pairs}) < len(pairs):
        raise KeyError("repeated")
    return dict(pairs)


@given(_JSON_TEXT)
def test_the_fast_repeat_check_agrees_with_an_exact_parse(value: Any) -> None:
    """Whatever the keys, escapes and nesting, a body is refused exactly when a key repeats."""
    text = _render(value).encode()
    try:
        json.loads(text, object_pairs_hook=_repeats)
        repeated = False
    except KeyError:
        repeated = True
    wrapped = b"[" + text + b"]"
    if repeated:
        with pytest.raises(BodyError, match="same key twice"):
            parse_body(wrapped, "application/cloudevents-batch+json")
    else:
        assert parse_body(wrapped, "application/cloudevents-batch+json") == ([orjson.loads(text)], True)


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


# -- identity: id and source are AMQP short strings ----------------------------------------------


@pytest.mark.parametrize("key", ["id", "source"])
@pytest.mark.parametrize("value", ["j" * 256, "中" * 100, "中" * 85 + "j"])
def test_identity_over_255_utf8_bytes_is_refused(key: str, value: str) -> None:
    """id and source are limited in UTF-8 bytes, not characters: 100 × "中" is 300 bytes."""
    with pytest.raises(ContractError) as exc:
        validate({**deposit(), key: value})
    [error] = exc.value.errors
    assert error.field == key
    assert error.message == f"must be at most 255 bytes in UTF-8; this one is {len(value.encode())}"


@pytest.mark.parametrize("value", ["j" * 255, "中" * 85])
def test_identity_of_255_utf8_bytes_is_accepted(value: str) -> None:
    """255 bytes is the limit itself."""
    event = validate({**deposit(), "id": value, "source": value})
    assert (event.id, event.source) == (value, value)


# -- ASCII digits only ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (deposit(amount="𝟗𝟗.00"), "data.amount"),
        (deposit(amount="١٢٣٤"), "data.amount"),
        (deposit(amount="１２.５０"), "data.amount"),
        (deposit(payer={"account_last4": "١٢٣٤"}), "data.payer.account_last4"),
        (deposit(payer={"account_last4": "１２３４"}), "data.payer.account_last4"),
        (check(micr={"account_last4": "𝟏𝟐𝟑𝟒"}), "data.micr.account_last4"),
        (check(micr={"routing_number": "０２１００００２１"}), "data.micr.routing_number"),
        (deposit(booked_at="２０２６-11-20"), "data.booked_at"),
        (deposit(amount="999999999999999.9999", currency="CLF"), "data.amount"),
    ],
)
def test_digits_of_other_scripts_and_int64_overflow_are_refused(raw: dict[str, Any], field: str) -> None:
    """Only ASCII digits are digits; an amount past a signed 64-bit integer is refused, not wrapped."""
    with pytest.raises(ContractError) as exc:
        validate(raw)
    assert fields(exc) == {field}


def test_unknown_currency_is_named_as_the_currency() -> None:
    """An unknown code fails data.currency alone, whatever the amount."""
    with pytest.raises(ContractError) as exc:
        validate(deposit(currency="ZZZ", amount="12.345"))
    assert fields(exc) == {"data.currency"}


# -- payer ---------------------------------------------------------------------------------------


def test_payer_account_fingerprint_is_accepted() -> None:
    """payer.account_fingerprint (SPEC §2) sits next to name and account_last4."""
    fingerprint = "hmac-sha256:" + "Ab0+/=_-" * 14
    validate(deposit(payer={"name": "Globex", "account_last4": "4417", "account_fingerprint": fingerprint}))
    validate(check(payer={"account_fingerprint": "fp_1"}))


@pytest.mark.parametrize("fingerprint", ["", "a" * 129, "has space", "ünïcode", "semi;colon", 12])
def test_payer_account_fingerprint_is_checked(fingerprint: Any) -> None:
    """A fingerprint is 1-128 characters of [A-Za-z0-9_:=+/-]."""
    with pytest.raises(ContractError) as exc:
        validate(deposit(payer={"account_fingerprint": fingerprint}))
    assert [(e.field, e.message) for e in exc.value.errors] == [
        (
            "data.payer.account_fingerprint",
            "must be 1-128 characters of A-Z, a-z, 0-9, '_', ':', '=', '+', '/' or '-'",
        )
    ]


# -- allocations ---------------------------------------------------------------------------------


def errors_of(raw: dict[str, Any]) -> list[tuple[str, str]]:
    with pytest.raises(ContractError) as exc:
        validate(raw)
    return [(e.field, e.message) for e in exc.value.errors]


def test_allocations_become_minor_units_in_order() -> None:
    """Allocations that sum to the amount become Allocation(invoice_id, minor units), in order."""
    payment = validate(
        deposit(
            amount="1250.00",
            allocations=[
                {"invoice_id": "INV-2", "amount": "1000"},
                {"invoice_id": "INV-1", "amount": "250.00"},
            ],
        )
    ).payment
    assert payment.allocations == (Allocation("INV-2", 100000), Allocation("INV-1", 25000))
    assert payment.invoice_id is None


def test_allocations_follow_the_currency_exponent() -> None:
    """An allocation's amount has the payment currency's decimals: BHD 3, JPY 0."""
    bhd = validate(
        deposit(amount="1.500", currency="BHD", allocations=[{"invoice_id": "A", "amount": "1.5"}])
    )
    assert bhd.payment.allocations == (Allocation("A", 1500),)
    assert errors_of(
        deposit(amount="10", currency="JPY", allocations=[{"invoice_id": "A", "amount": "10.0"}])
    ) == [("data.allocations[0].amount", "JPY has 0 decimal place(s); '10.0' has 1")]


def test_payment_without_allocations_or_references_has_empty_tuples() -> None:
    """Both fields default to ()."""
    payment = validate(deposit()).payment
    assert (payment.allocations, payment.references) == ((), ())


def test_allocations_must_sum_to_the_amount() -> None:
    """A sum that differs from data.amount, by a cent either way, is refused at data.allocations."""
    two = [{"invoice_id": "INV-1", "amount": "1000.00"}, {"invoice_id": "INV-2", "amount": "249.99"}]
    assert errors_of(deposit(amount="1250.00", allocations=two)) == [
        ("data.allocations", "the allocations sum to 1249.99 but data.amount is 1250.00: they must be equal")
    ]
    two[1]["amount"] = "250.01"
    assert errors_of(deposit(amount="1250.00", allocations=two)) == [
        ("data.allocations", "the allocations sum to 1250.01 but data.amount is 1250.00: they must be equal")
    ]


def test_invoice_id_and_allocations_together_are_refused() -> None:
    """One invoice or several, not both."""
    assert errors_of(
        deposit(invoice_id="INV-1", allocations=[{"invoice_id": "INV-1", "amount": "1250.00"}])
    ) == [("data.invoice_id", "give either data.invoice_id or data.allocations, not both")]


def test_an_invoice_is_allocated_once() -> None:
    """The same invoice twice is refused at its second place, even when the sum is right."""
    twice = [{"invoice_id": "INV-1", "amount": "625.00"}, {"invoice_id": "INV-1", "amount": "625.00"}]
    assert errors_of(deposit(amount="1250.00", allocations=twice)) == [
        (
            "data.allocations[1].invoice_id",
            "'INV-1' is already allocated at data.allocations[0]; give each invoice once",
        )
    ]


@pytest.mark.parametrize(
    ("allocations", "expected"),
    [
        ([], [("data.allocations", "must be a list of 1 to 100 objects {invoice_id, amount}")]),
        (
            {"INV-1": "1250.00"},
            [("data.allocations", "must be a list of 1 to 100 objects {invoice_id, amount}")],
        ),
        (
            [{"invoice_id": f"INV-{i}", "amount": "0.01"} for i in range(101)],
            [("data.allocations", "must be a list of 1 to 100 objects {invoice_id, amount}")],
        ),
        (["INV-1"], [("data.allocations[0]", "must be an object {invoice_id, amount}")]),
        (
            [{"invoice_id": "INV-1", "amount": "1250.00", "memo": "x"}],
            [("data.allocations[0].memo", "is not a known field")],
        ),
        (
            [{"amount": "1250.00"}],
            [("data.allocations[0].invoice_id", "is required: 1-50 letters, digits, '_', '-' or '.'")],
        ),
        (
            [{"invoice_id": "../admin", "amount": "1250.00"}],
            [("data.allocations[0].invoice_id", "must be 1-50 letters, digits, '_', '-' or '.'")],
        ),
        (
            [{"invoice_id": "INV-1"}],
            [("data.allocations[0].amount", "is required: a decimal string in major units, e.g. '1250.00'")],
        ),
        (
            [{"invoice_id": "INV-1", "amount": 1250}],
            [("data.allocations[0].amount", "is required: a decimal string in major units, e.g. '1250.00'")],
        ),
        (
            [{"invoice_id": "INV-1", "amount": "1250.00"}, {"invoice_id": "INV-2", "amount": "0.00"}],
            [("data.allocations[1].amount", "amount must be greater than zero")],
        ),
        (
            [{"invoice_id": "INV-1", "amount": "1250.001"}],
            [("data.allocations[0].amount", "USD has 2 decimal place(s); '1250.001' has 3")],
        ),
        (
            [{"invoice_id": "INV-1", "amount": "1e3"}],
            [("data.allocations[0].amount", "'1e3' is not a positive decimal string such as '1250.00'")],
        ),
        (
            [{"invoice_id": "INV-1", "amount": "１２５０.００"}],
            [
                (
                    "data.allocations[0].amount",
                    "'１２５０.００' is not a positive decimal string such as '1250.00'",
                )
            ],
        ),
    ],
)
def test_invalid_allocations_are_named_by_path(allocations: Any, expected: list[tuple[str, str]]) -> None:
    """Each failing allocation is reported by its JSON path, and no sum is checked then."""
    assert errors_of(deposit(amount="1250.00", allocations=allocations)) == expected


def test_every_failing_allocation_is_reported_in_one_pass() -> None:
    """Several bad allocations, and other bad fields, all come back at once."""
    allocations = [{"invoice_id": "..", "amount": "1"}, {"invoice_id": "INV-2", "amount": "-1"}, 7]
    assert {f for f, _ in errors_of(deposit(amount="x", allocations=allocations))} == {
        "data.amount",
        "data.allocations[0].invoice_id",
        "data.allocations[1].amount",
        "data.allocations[2]",
    }


def test_allocations_in_a_check_scan() -> None:
    """check.scan takes allocations too."""
    payment = validate(check(allocations=[{"invoice_id": "INV-9", "amount": "80.00"}])).payment
    assert payment.allocations == (Allocation("INV-9", 8000),)


# -- references ----------------------------------------------------------------------------------


def test_references_are_kept_in_order() -> None:
    """references are the remitter's own words, kept as given and in order."""
    given = ["RF18539007547034", "INV-1042", "Rechnung 7 / 2026", "x" * 100]
    assert validate(deposit(references=given)).payment.references == tuple(given)


@pytest.mark.parametrize(
    ("references", "field"),
    [
        ([], "data.references"),
        ("INV-1", "data.references"),
        ([f"INV-{i}" for i in range(51)], "data.references"),
        (["INV-1", ""], "data.references[1]"),
        (["   "], "data.references[0]"),
        (["x" * 101], "data.references[0]"),
        (["INV-1\n"], "data.references[0]"),
        (["INV\x00-1"], "data.references[0]"),
        (["INV-1\x85"], "data.references[0]"),
        ([7], "data.references[0]"),
        ([None], "data.references[0]"),
    ],
)
def test_invalid_references_are_named(references: Any, field: str) -> None:
    """A non-empty list of at most 50 non-blank strings of at most 100 characters, no control characters."""
    [(got, message)] = errors_of(deposit(references=references))
    assert got == field
    assert message in (
        "must be a list of 1 to 50 strings",
        "must be a non-empty string of at most 100 characters, no control characters",
    )
