"""The pure half of dead letters: decode, ages, filters, edits, replay headers, JSON shapes.

The queue I/O (`service.dead_letter_queue`) and the CLI around it are tested on the real broker in
`test_dlq_cli.py`; everything that decides *which* letters and *what* a replay carries is here.
"""

from __future__ import annotations

import argparse
import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from service import messages
from service.cli import build_parser
from service.cli.dlq import assignment, reason, selector
from service.dead_letters import (
    CLEARED,
    EDITABLE,
    ONLY_FOR,
    SELECTORS,
    EditError,
    Filter,
    FilterError,
    Letter,
    Outcome,
    apply_edits,
    chargebee_figures,
    check_edits,
    decode,
    parse_age,
    replay_headers,
)
from service.ledger.records import WHOLE, AuditRecord, Entry
from service.ops.operations import Selection
from tests.factories import check, deposit

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def ours(**overrides: Any) -> dict[str, Any]:
    """Headers as the consumer writes them when it dead-letters a message."""
    return {
        messages.SOURCE: "acme-bank",
        messages.REASON: "unmatched_invoice",
        messages.ERROR: "no invoice found",
        messages.ATTEMPTS: 1,
        messages.FAILED_AT: "2026-11-25T10:00:00Z",
    } | overrides


def letter(event: dict[str, Any] | None = None, **headers: Any) -> Letter:
    body = orjson.dumps(event if event is not None else deposit(invoice_id="INV-7"))
    return decode("evt-1", ours(**headers), body)


# -- ages ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "age"),
    [
        ("90s", timedelta(seconds=90)),
        ("90", timedelta(seconds=90)),
        ("30m", timedelta(minutes=30)),
        ("2h", timedelta(hours=2)),
        ("7d", timedelta(days=7)),
        (" 5 m ", timedelta(minutes=5)),
        ("0s", timedelta(0)),
    ],
)
def test_ages_are_seconds_minutes_hours_or_days(text: str, age: timedelta) -> None:
    assert parse_age(text) == age


@pytest.mark.parametrize("text", [None, "", "   "])
def test_an_empty_age_is_no_filter(text: str | None) -> None:
    assert parse_age(text) is None


@pytest.mark.parametrize("text", ["36501d", "9999999999d", "99999999999999999999s"])
def test_an_age_beyond_a_century_is_refused_not_an_overflow(text: str) -> None:
    """`?older_than=9999999999d` was a 500 (OverflowError); now it is a clear refusal (a 422)."""
    with pytest.raises(FilterError, match="at most 36500d"):
        parse_age(text)


@pytest.mark.parametrize("text", ["2w", "-1h", "1.5h", "h", "2 weeks", "1h30m", "١h", "𝟗s"])
def test_an_unreadable_age_is_refused_with_the_forms_it_takes(text: str) -> None:
    with pytest.raises(FilterError, match="such as 90s, 30m, 2h or 7d"):
        parse_age(text)


# -- decoding --------------------------------------------------------------------------------


def test_a_letter_carries_the_consumers_headers_and_the_events_fields() -> None:
    """Every field of `dlq list --json` (SPEC §6) comes from the headers or the event."""
    event = check(invoice_id="INV-9")
    got = decode("evt-2", ours(**{messages.ATTEMPTS: 6, messages.GENERATION: 2}), orjson.dumps(event))
    assert got.summary() == {
        "id": "",  # given when the keeper stores it
        "event_id": "evt-2",
        "state": "dead",
        "reason": "unmatched_invoice",
        "error": "no invoice found",
        "attempts": 6,
        "failed_at": "2026-11-25T10:00:00Z",
        "origin": "acme-bank",
        "source": "urn:acme:lockbox",
        "type": "check.scan",
        "invoice_id": "INV-9",
        "amount": "80.00",
        "currency": "USD",
        "replays": 2,
    }


def test_headers_read_as_bytes_read_the_same() -> None:
    """AMQP tables may hand long strings back as bytes; a letter reads them as text."""
    as_bytes = {k: v.encode() if isinstance(v, str) else v for k, v in ours().items()}
    body = orjson.dumps(deposit())
    assert decode("evt-1", as_bytes, body).summary() == decode("evt-1", ours(), body).summary()


@pytest.mark.parametrize(
    ("broker_reason", "reason"),
    [
        ("delivery_limit", "delivery_limit_exceeded"),
        ("expired", "expired"),
        ("rejected", "rejected"),
        ("maxlen", "maxlen"),
        (None, "unknown"),
    ],
)
def test_a_letter_rabbitmq_dead_lettered_itself_says_why_in_our_words(
    broker_reason: str | None, reason: str
) -> None:
    headers: dict[str, Any] = {"x-delivery-count": 21}
    if broker_reason is not None:
        headers["x-first-death-reason"] = broker_reason
    got = decode("evt-1", headers, orjson.dumps(deposit()))
    assert (got.reason, got.error, got.attempts) == (reason, "dead-lettered by RabbitMQ", 21)


def test_the_last_death_reason_is_read_when_the_first_is_missing() -> None:
    got = decode("evt-1", {"x-last-death-reason": "delivery_limit"}, b"{}")
    assert got.reason == "delivery_limit_exceeded"


@pytest.mark.parametrize("body", [b"not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe"])
def test_a_body_that_is_not_an_event_object_still_decodes(body: bytes) -> None:
    """Shown as text; no event, no type; the id comes from the message."""
    got = decode("m-1", ours(), body)
    assert (got.event_id, got.event, got.type, got.amount) == ("m-1", None, None, None)
    assert got.detail()["body"] == body.decode(errors="replace")


def test_data_that_is_not_an_object_leaves_the_payment_fields_empty() -> None:
    got = decode("m-1", ours(), orjson.dumps({"id": "e", "type": "bank.deposit", "data": [1]}))
    assert (got.type, got.invoice_id, got.amount, got.currency) == ("bank.deposit", None, None, None)


def test_without_a_message_id_the_event_id_names_the_letter() -> None:
    assert decode(None, ours(), orjson.dumps(deposit(id="evt-from-body"))).event_id == "evt-from-body"


def test_a_long_body_is_kept_to_10000_characters_for_display() -> None:
    assert len(decode("m", ours(), b"x" * 20_000).body) == 10_000


@pytest.mark.parametrize(
    ("raw", "parsed"),
    [
        ('{"api_error_code": "payment_processing_failed"}', {"api_error_code": "payment_processing_failed"}),
        ("{broken", None),
        ("[1]", None),
    ],
)
def test_chargebees_error_is_read_when_it_is_a_json_object(raw: str, parsed: dict[str, Any] | None) -> None:
    assert letter(**{messages.CHARGEBEE_ERROR: raw}).chargebee_error == parsed


def test_attempts_fall_back_to_the_delivery_count_and_never_go_negative() -> None:
    assert letter(**{messages.ATTEMPTS: "junk", "x-delivery-count": 3}).attempts == 3
    assert letter(**{messages.ATTEMPTS: -4}).attempts == 0


def test_the_detail_is_json_even_for_binary_and_timestamp_headers() -> None:
    headers = {"x-raw": b"\x00ok", "x-at": NOW, "x-death": [{"queue": b"q", "time": NOW}]}
    detail = letter(**headers).detail()
    orjson.dumps(detail)
    assert detail["headers"]["x-death"] == [{"queue": "q", "time": NOW.isoformat()}]
    assert detail["body"] is None and detail["event"]["data"]["invoice_id"] == "INV-7"


# -- filters ---------------------------------------------------------------------------------


def test_a_filter_from_text_reads_ages_and_treats_empty_as_absent() -> None:
    values = {"reason": "", "source": "acme-bank", "older_than": "2h", "newer_than": "", "page": "3"}
    got = Filter.from_text(values, ids=("a", "", "b"))
    assert got == Filter(ids=("a", "b"), source="acme-bank", older_than=timedelta(hours=2))
    assert Filter.from_text({}).empty and Filter.from_text({}, everything=True).everything
    with pytest.raises(FilterError):
        Filter.from_text({"newer_than": "soon"})


@pytest.mark.parametrize(
    ("selection", "described"),
    [
        (Filter(), "nothing"),
        (Filter(everything=True), "all"),
        (Filter(ids=("a", "b")), "id=a id=b"),
        (
            Filter(reason="unmatched_invoice", invoice="INV-7", older_than=timedelta(hours=2)),
            "reason=unmatched_invoice invoice=INV-7 older_than=2:00:00",
        ),
    ],
)
def test_the_audit_describes_a_filter_in_one_line(selection: Filter, described: str) -> None:
    assert selection.describe() == described


def test_one_field_list_for_the_filter_the_api_body_and_the_cli_flags() -> None:
    """`SELECTORS` names every selector; the API's body and the CLI's flags take exactly those."""
    assert {f.name for f in dataclasses.fields(Filter)} == {"ids", "everything", *SELECTORS}
    assert set(Selection.model_fields) == {"ids", "everything", *SELECTORS}
    args = build_parser().parse_args(
        [
            "dlq",
            "replay",
            "--id",
            "e1",
            "--reason",
            "retries_exhausted",
            "--source",
            "s",
            "--type",
            "check.scan",
        ]
        + ["--invoice", "I-1", "--older-than", "1h", "--newer-than", "2d"]
    )
    from_flags = selector(args)
    body = {
        "ids": ["e1"],
        "reason": "retries_exhausted",
        "source": "s",
        "type": "check.scan",
        "invoice": "I-1",
    }
    from_body = Selection.model_validate(body | {"older_than": "1h", "newer_than": "2d"}).filter()
    assert (
        from_flags
        == from_body
        == Filter(
            ids=("e1",),
            reason="retries_exhausted",
            source="s",
            type="check.scan",
            invoice="I-1",
            older_than=timedelta(hours=1),
            newer_than=timedelta(days=2),
        )
    )


# -- edits -----------------------------------------------------------------------------------


EDIT_VALUES = {
    "invoice_id": "INV-1001",
    "memo": "corrected by ops",
    "remittance_information": "INV-1001 thanks",
    "bank_reference": "BR-9",
    "check_number": "10443",
    "booked_at": "2026-11-24T09:00:00Z",
    "scanned_at": "2026-11-24T09:00:00Z",
}


@pytest.mark.parametrize(
    ("name", "event"),
    [
        (name, event)
        for name in EDITABLE
        for event in (deposit(), check())
        if ONLY_FOR.get(name, event["type"]) == event["type"]
    ],
)
def test_every_editable_field_can_be_set_and_the_event_is_not_mutated(
    name: str, event: dict[str, Any]
) -> None:
    before = orjson.loads(orjson.dumps(event))
    edited = apply_edits(event, {name: EDIT_VALUES[name]})
    assert edited["data"][name] == EDIT_VALUES[name]
    assert event == before


@pytest.mark.parametrize("name", ["amount", "currency"])
def test_how_much_arrived_and_in_which_currency_is_never_editable(name: str) -> None:
    """SPEC §6: an operator corrects where money goes; a wrong amount is the bank's to resend."""
    with pytest.raises(EditError, match=f"^{name} is never editable: correct where money goes"):
        apply_edits(deposit(), {name: "1000.00" if name == "amount" else "EUR", "invoice_id": "INV-1"})


@pytest.mark.parametrize(
    ("event", "edits", "refused"),
    [
        (check(), {"booked_at": "2026-11-24T09:00:00Z"}, "cannot --set booked_at on a check.scan event"),
        (check(), {"bank_reference": "BR-1"}, "bank_reference belongs to bank.deposit"),
        (
            deposit(),
            {"scanned_at": "2026-11-24T09:00:00Z"},
            "cannot --set scanned_at on a bank.deposit event",
        ),
        (deposit(), {"check_number": "1", "memo": "m"}, "check_number belongs to check.scan"),
    ],
)
def test_an_edit_of_a_field_the_events_type_does_not_have_is_refused(
    event: dict[str, Any], edits: dict[str, str], refused: str
) -> None:
    """Not silently ignored: the contract does not read the field, so the edit would change nothing."""
    with pytest.raises(EditError, match=refused):
        apply_edits(event, edits)


def test_an_unknown_field_is_refused_with_the_editable_list() -> None:
    with pytest.raises(EditError, match=r"cannot --set payer; editable fields: invoice_id, memo"):
        apply_edits(deposit(), {"payer": "x", "memo": "ok"})


@pytest.mark.parametrize(
    "edits",
    [{"invoice_id": "not valid!"}, {"booked_at": "tomorrow"}, {"bank_reference": ""}, {"memo": "x" * 2001}],
)
def test_an_edit_that_breaks_the_contract_is_refused(edits: dict[str, str]) -> None:
    with pytest.raises(EditError, match="the edited event is invalid"):
        apply_edits(deposit(), edits)


def test_check_edits_names_the_letter_it_refuses() -> None:
    unreadable = decode("m-9", ours(), b"not json")
    with pytest.raises(EditError, match="^m-9: the body is not a JSON event"):
        check_edits(unreadable, {"invoice_id": "INV-1"})
    with pytest.raises(EditError, match="^evt-1: the edited event is invalid"):
        check_edits(letter(), {"booked_at": "tomorrow"})
    check_edits(letter(), {"invoice_id": "INV-1"})


# -- replay headers --------------------------------------------------------------------------


def failed(**extra: Any) -> dict[str, Any]:
    """A dead letter's headers with everything a failure and the broker can add."""
    broker = {name: "x" for name in CLEARED if name.startswith("x-") and "payrelay" not in name}
    return ours(**{messages.CHARGEBEE_ERROR: "{}", messages.LAST_ERROR: "504"}) | broker | extra


def test_a_replay_starts_clean_keeps_the_rest_and_is_stamped() -> None:
    headers = failed(**{messages.TRACEPARENT: "00-abc-def-01"})
    at = datetime(2026, 11, 25, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    replayed = replay_headers(headers, actor="ana@ops", at=at, edits=None, original=b"{}")
    assert not set(CLEARED) & set(replayed)
    assert replayed == {
        messages.SOURCE: "acme-bank",
        messages.TRACEPARENT: "00-abc-def-01",
        messages.GENERATION: 1,
        messages.REPLAYED_AT: "2026-11-25T12:00:00Z",
        messages.REPLAYED_BY: "ana@ops",
        messages.PREVIOUS_REASON: "unmatched_invoice",
    }


@pytest.mark.parametrize(("before", "after"), [(None, 1), (0, 1), (2, 3), (b"4", 5), ("junk", 1)])
def test_each_replay_is_a_new_generation(before: Any, after: int) -> None:
    headers = ours() if before is None else ours(**{messages.GENERATION: before})
    assert replay_headers(headers, actor="a", at=NOW, edits=None, original=None)[messages.GENERATION] == after


def test_a_replay_of_rabbitmqs_own_dead_letter_names_its_reason() -> None:
    headers = {"x-first-death-reason": "delivery_limit", "x-delivery-count": 21}
    replayed = replay_headers(headers, actor="a", at=NOW, edits=None, original=None)
    assert replayed[messages.PREVIOUS_REASON] == "delivery_limit_exceeded"
    assert "x-delivery-count" not in replayed


def test_an_edit_replay_keeps_the_edits_and_the_first_original() -> None:
    edits = {"invoice_id": "INV-1001"}
    first = replay_headers(ours(), actor="a", at=NOW, edits=edits, original=b'{"v": 1}')
    assert orjson.loads(first[messages.EDITS]) == edits and first[messages.ORIGINAL] == '{"v": 1}'
    second = replay_headers(first, actor="a", at=NOW, edits={"memo": "m"}, original=b'{"v": 2}')
    assert second[messages.ORIGINAL] == '{"v": 1}'  # what the bank sent, not the first correction
    plain = replay_headers(ours(), actor="a", at=NOW, edits={}, original=b"{}")
    assert messages.EDITS not in plain and messages.ORIGINAL not in plain


# -- the JSON shapes the CLI and the API share -----------------------------------------------


def test_an_outcome_as_json() -> None:
    first, second = (dataclasses.replace(letter(), id=f"dl-{n}") for n in (1, 2))
    outcome = Outcome(matched=[first, second], moved=1, scanned=5, dry_run=False, skipped=["dl-2"])
    assert outcome.as_dict() == {
        "matched": 2,
        "moved": 1,
        "dry_run": False,
        "ids": ["dl-1", "dl-2"],
        "event_ids": ["evt-1", "evt-1"],
        "skipped": ["dl-2"],
    }


def test_audit_records_and_ledger_entries_as_json_in_utc() -> None:
    at = datetime(2026, 11, 25, 13, 0, tzinfo=timezone(timedelta(hours=1)))
    record = AuditRecord(7, at, "ana", "replay", "reason=x", 2, {"ids": ["a", "b"]})
    assert record.as_dict() == {
        "id": 7,
        "at": "2026-11-25T12:00:00Z",
        "actor": "ana",
        "action": "replay",
        "selector": "reason=x",
        "count": 2,
        "details": {"ids": ["a", "b"]},
    }
    entry = Entry(
        key=("acme-bank", "urn:acme:core", "evt-1"),
        part=WHOLE,
        state="recorded",
        invoice_id="INV-7",
        attempts=1,
        transaction_id="txn_1",
        invoice_status="paid",
        last_error=None,
        reason=None,
        created_at=NOW,
        updated_at=at,
        generation=0,
        reconcile=False,
        confirmed_at=None,
    )
    assert entry.as_dict() == {
        "origin": "acme-bank",
        "source": "urn:acme:core",
        "event_id": "evt-1",
        "state": "recorded",
        "invoice_id": "INV-7",
        "attempts": 1,
        "transaction_id": "txn_1",
        "invoice_status": "paid",
        "last_error": None,
        "reason": None,
        "generation": 0,
        "amount": None,
        "currency": None,
        "created_at": "2026-11-25T12:00:00Z",
        "updated_at": "2026-11-25T12:00:00Z",
        "reference_number": None,
        "file": None,
    }


@pytest.mark.parametrize(
    ("text", "refusal"),
    [
        ("payer=x", "cannot --set payer; editable fields: invoice_id"),
        ("amount=1000.00", "amount is never editable"),
        ("invoice_id", "--set takes FIELD=VALUE"),
    ],
)
def test_the_cli_refuses_a_set_it_cannot_apply_before_reading_the_queue(text: str, refusal: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=refusal):
        assignment(text)


@pytest.mark.parametrize(
    "name", ["unmatched_invoice", "delivery_limit_exceeded", "expired", "rejected", "unknown"]
)
def test_the_cli_takes_every_reason_a_letter_can_have(name: str) -> None:
    """RabbitMQ's own rarer reasons too: otherwise such letters could be reached only by id or --all."""
    assert reason(name) == name
    with pytest.raises(argparse.ArgumentTypeError, match="unknown reason 'bogus'"):
        reason("bogus")


@pytest.mark.parametrize(
    ("error", "currency", "shown"),
    [
        (
            "Chargebee 400: amount due (50000) is less",
            "USD",
            "Chargebee 400: amount due (50000 = 500.00 USD) is less",
        ),
        ("Chargebee 400: amount due (5000)", "JPY", "Chargebee 400: amount due (5000 = 5000 JPY)"),
        ("no invoice found (3)", "USD", "no invoice found (3)"),  # not Chargebee's text
        ("Chargebee 400: amount (100)", None, "Chargebee 400: amount (100)"),  # no currency to read it by
        ("Chargebee 400: amount (100)", "XXX", "Chargebee 400: amount (100)"),
    ],
)
def test_chargebees_minor_unit_figures_are_read_for_people(
    error: str, currency: str | None, shown: str
) -> None:
    assert chargebee_figures(error, currency) == shown
