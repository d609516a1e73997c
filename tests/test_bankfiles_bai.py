"""The BAI2 parser (service/bankfiles/bai.py): credits, skips and refusals, fixture by fixture.

Fixtures in tests/fixtures/bankfiles/bai2/, written by hand from the BAI2 specification:
- continuations.bai2: 88 continuations of 16 text (a line wrapped at the 80-column record length
  joined directly, short lines with a space), references arriving in an 88, commas and "/" in text,
  03 summaries continued on an 88 (in the control total).
- groups.bai2: two groups, three accounts; currency from the 03, else the 02, else USD; as-of dates.
- currencies.bai2: implied decimals by exponent: JPY (0), USD (2), BHD (3); leading zeros.
- funds_types.bai2: funds types 0, 1, 2, Z, blank, V, S, D (with none and three distributions),
  and S with its references on an 88: the fields after the funds type move.
- skipped.bai2: debits (475, 699, 760), ZBA credit 275, non-monetary 890, a bank's own code 901,
  a zero amount, a blank bank reference, a test-only group (status 4); and custom bai2_credit_codes.
- checks_and_payers.bai2: check deposits 175 (check number from the customer reference, else the
  bank reference, else no check), payer names in ORIGINATOR:, ORG=/acct, BY ORDER OF:, ORIG NAME:.
- good_small.bai2: a minimal valid file, mutated in tests for every 49/98/99 figure.
- bad_account_total.bai2: 49 control total mismatch. bad_record_count.bai2: 49 record count mismatch.
- unknown_currency.bai2, truncated.bai2 (no 99), garbage.bai2 (binary), non_numeric_amount.bai2.
Refusals, the public samples (MIT, with LICENSE.txt, in tests/fixtures/bankfiles/samples/bai2/) and
the hypothesis property are in tests/test_bankfiles_bai_files.py.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from service.bankfiles import bai
from service.bankfiles.model import (
    CHECK,
    DEBIT,
    DEPOSIT,
    NOT_A_CREDIT_CODE,
    NOT_BOOKED,
    FileInvalid,
    Options,
    Statement,
)
from service.money import to_major_string

FIXTURES = Path(__file__).parent / "fixtures" / "bankfiles" / "bai2"


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parsed(name: str, *codes: str) -> Statement:
    return bai.parse(load(name), Options(bai2_credit_codes=frozenset(codes)))


def refused(data: bytes) -> FileInvalid:
    with pytest.raises(FileInvalid) as caught:
        bai.parse(data, Options())
    return caught.value


def mutated(name: str, old: str, new: str) -> bytes:
    data = load(name)
    assert old.encode() in data, old
    return data.replace(old.encode(), new.encode(), 1)


# --- continuations --------------------------------------------------------------------------


def test_text_continues_on_88_records() -> None:
    """A line that filled the 80-column record length joins its 88 directly; shorter ones with a space."""
    credit = parsed("continuations.bai2").credits[0]
    text = "ORIG CO NAME:ACME CORP ORIG ID:9000000001 INV-1001 FOR JANUARY THANK YOU"
    assert credit.remittance_information == text
    assert (credit.amount, credit.reference, credit.references) == (125025, "ACH001", ("INV-1001",))


def test_record_length_of_the_01_record_decides_wrapping() -> None:
    """With a declared record length of 100, the 80-character line was not wrapped: a space joins it."""
    data = mutated("continuations.bai2", "FILE01,80,,2/", "FILE01,100,,2/")
    text = bai.parse(data, Options()).credits[0].remittance_information
    assert text == "ORIG CO NAME:ACME CORP ORIG ID:9000000001 INV-10 01 FOR JANUARY THANK YOU"


def test_text_can_begin_on_an_88_after_a_slash() -> None:
    """A 16 record ended by "/" after its references takes its text from the 88s (last "/" dropped)."""
    credit = parsed("continuations.bai2").credits[1]
    assert credit.reference == "FW240104-77"
    assert credit.remittance_information == "B/O: GLOBEX LTD REF:INV-2002, INV-2003 PAID IN FULL"


def test_text_keeps_commas_and_slashes() -> None:
    """Commas and slashes inside a 16 record's text are text."""
    text = parsed("continuations.bai2").credits[2].remittance_information
    assert text == "SHORT TEXT, WITH A COMMA / AND A SLASH"


def test_continued_03_summaries_count_in_the_control_total() -> None:
    """The 03 amounts on its 88 are summed: a 49 total without them is refused."""
    data = mutated("continuations.bai2", "49,1875625,10/", "49,1500550,10/")
    assert "1500550" in refused(data).why and "1875625" in refused(data).why


# --- groups, accounts, currencies ----------------------------------------------------------


def test_groups_and_accounts() -> None:
    """Every group's accounts yield credits in file order, counted per 03 and per 16 record."""
    statement = parsed("groups.bai2")
    assert (statement.format, statement.version, statement.accounts, statement.entries) == ("bai2", "2", 3, 4)
    assert [(c.position, c.entry, c.reference) for c in statement.credits] == [
        (0, "line 4", "G1A1"),
        (1, "line 7", "G1A2"),
        (2, "line 13", "G2A1"),
    ]
    assert [c.account for c in statement.credits] == [
        "DE89370400440532013000",
        "GB29NWBK60161331926819",
        "7766554433",
    ]


def test_currency_comes_from_the_03_else_the_02_else_usd() -> None:
    """A blank 03 currency is the group's; a blank group currency is USD."""
    assert [c.currency for c in parsed("groups.bai2").credits] == ["EUR", "GBP", "USD"]


def test_booked_at_is_the_groups_as_of_date() -> None:
    """Each credit is booked on its 02 record's as-of date."""
    assert [c.booked_at for c in parsed("groups.bai2").credits] == [date(2024, 1, 4)] * 2 + [date(2024, 1, 5)]


def test_amounts_are_minor_units_of_the_currency() -> None:
    """BAI2 amounts have no decimal point: JPY has none, USD two, BHD three."""
    credits = parsed("currencies.bai2").credits
    shown = [(c.currency, c.amount, to_major_string(c.amount, c.currency)) for c in credits]
    assert shown == [
        ("JPY", 150000, "150000"),
        ("USD", 123456, "1234.56"),
        ("USD", 105, "1.05"),
        ("BHD", 1234567, "1234.567"),
        ("BHD", 5, "0.005"),
    ]


@pytest.mark.parametrize(
    ("where", "needle", "data"),
    [
        ("line 3", "'XYZ'", load("unknown_currency.bai2")),
        ("line 2", "'ZZZ'", mutated("good_small.bai2", ",240104,,USD,", ",240104,,ZZZ,")),
        ("line 3", "'usd'", mutated("good_small.bai2", "5000000001,USD,", "5000000001,usd,")),
    ],
)
def test_unknown_currency_is_refused(where: str, needle: str, data: bytes) -> None:
    """A currency that is not an ISO 4217 code payrelay knows is refused at its record."""
    error = refused(data)
    assert (error.where, needle in error.why) == (where, True)


# --- funds types ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("index", "funds", "amount", "reference", "customer", "text"),
    [
        (0, "0", 1000, "REF0", "CUST0", "TEXT ZERO"),
        (1, "1", 1001, "REF1", "CUST1", "TEXT ONE"),
        (2, "2", 1002, "REF2", "CUST2", "TEXT TWO"),
        (3, "Z", 1003, "REFZ", "CUSTZ", "TEXT Z"),
        (4, "blank", 1004, "REFB", "CUSTB", "TEXT BLANK"),
        (5, "V", 1005, "REFV", "CUSTV", "TEXT V"),
        (6, "S", 1006, "REFS", "CUSTS", "TEXT S"),
        (7, "D", 1007, "REFD", "CUSTD", "TEXT D"),
        (8, "D none", 1008, "REFD0", "CUSTD0", "TEXT D0"),
        (9, "S, 88", 1009, "REFS2", "CUSTS2", "TEXT S2"),
    ],
)
def test_funds_type_moves_the_references(
    index: int, funds: str, amount: int, reference: str, customer: str, text: str
) -> None:
    """After a funds type come its availability fields; the references and text follow them."""
    credit = parsed("funds_types.bai2").credits[index]
    got = (credit.amount, credit.reference, credit.references, credit.remittance_information)
    assert got == (amount, reference, (customer,), text), funds


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ("16,142,1003,Z,", "16,142,1003,X,", "funds type 'X'"),
        ("16,142,1008,D,0,", "16,142,1008,D,A,", "distributed availability count 'A'"),
    ],
)
def test_unknown_funds_type_is_refused(old: str, new: str, needle: str) -> None:
    """A funds type outside 0, 1, 2, S, V, D, Z (or D without a count) cannot place the references."""
    error = refused(mutated("funds_types.bai2", old, new))
    assert error.where in ("line 7", "line 12") and needle in error.why


# --- skipped and credit codes --------------------------------------------------------------


def test_debits_and_other_codes_are_skipped_with_reasons() -> None:
    """Debits, codes outside the default credits, zero amounts and test groups become no credit."""
    statement = parsed("skipped.bai2")
    assert [(s.entry, s.reason) for s in statement.skipped] == [
        ("line 4", DEBIT),
        ("line 5", DEBIT),
        ("line 6", NOT_A_CREDIT_CODE),
        ("line 7", NOT_A_CREDIT_CODE),
        ("line 8", NOT_A_CREDIT_CODE),
        ("line 9", DEBIT),
        ("line 11", NOT_BOOKED),
        ("line 16", NOT_BOOKED),
    ]
    assert statement.entries == 9 and statement.accounts == 2


def test_skip_details_name_the_code() -> None:
    """A skipped credit code's detail names the code and its BAI2 name."""
    details = {s.entry: s.detail for s in parsed("skipped.bai2").skipped}
    assert details["line 6"] == "type code 275 (ZBA Credit) is not in bai2_credit_codes"
    assert details["line 8"] == "type code 901 is not in bai2_credit_codes"
    assert details["line 4"] == "type code 475 (Check Paid) is a debit"
    assert "zero" in details["line 11"] and "test only" in details["line 16"]


def test_blank_bank_reference_is_none() -> None:
    """A credit without a bank reference has reference None; its customer reference is kept."""
    (credit,) = parsed("skipped.bai2").credits
    assert (credit.entry, credit.reference, credit.references) == ("line 10", None, ("CUST75",))


def test_default_credit_codes_never_hold_sweeps() -> None:
    """The default takes ACH, wire, lockbox and deposit credits and no ZBA or internal transfer."""
    assert {"142", "165", "166", "195", "206", "208", "115", "116", "301"} <= bai.DEFAULT_CREDIT_CODES
    assert not {"275", "270", "277", "191", "201", "145", "252", "258"} & bai.DEFAULT_CREDIT_CODES
    assert "175" in bai.CHECK_CODES


def test_custom_credit_codes_are_exactly_the_set() -> None:
    """Given bai2_credit_codes, exactly those codes are credits: 275 and 901 in, 142 out."""
    statement = parsed("skipped.bai2", "275", "901")
    assert [(c.entry, c.amount) for c in statement.credits] == [("line 6", 7200), ("line 8", 7300)]
    details = {s.entry: s.detail for s in statement.skipped}
    assert details["line 10"] == "type code 142 (ACH Credit Received) is not in bai2_credit_codes"


def test_a_debit_code_is_never_a_credit() -> None:
    """Listing a debit code among the credit codes does not make a debit a payment."""
    statement = parsed("skipped.bai2", "475", "760")
    assert statement.credits == ()
    assert {s.entry: s.reason for s in statement.skipped}["line 4"] == DEBIT


# --- checks and payers ---------------------------------------------------------------------


def test_check_deposits_are_checks() -> None:
    """Code 175 is a check: its number is the customer reference, else the bank reference."""
    credits = parsed("checks_and_payers.bai2").credits
    assert [(c.kind, c.check_number, c.reference) for c in credits[:3]] == [
        (CHECK, "1234", "DEP001"),
        (CHECK, "DEP002", "DEP002"),
        (DEPOSIT, None, None),
    ]
    assert all(c.kind == DEPOSIT for c in credits[3:])


@pytest.mark.parametrize(
    ("index", "name"),
    [
        (3, "INITECH INC"),
        (4, "UMBRELLA CORP"),
        (5, "STARK INDUSTRIES LTD"),
        (6, "WAYNE ENTERPRISES"),
        (7, None),
    ],
)
def test_payer_name_from_common_text_styles(index: int, name: str | None) -> None:
    """ORIGINATOR:, ORG=/account, BY ORDER OF: and ORIG NAME: name the payer; the text stays whole."""
    credit = parsed("checks_and_payers.bai2").credits[index]
    assert credit.payer_name == name
    assert credit.payer_account is None
    assert credit.remittance_information is not None and len(credit.remittance_information) > 20


def test_payer_names_in_continued_text() -> None:
    """ORIG CO NAME: and B/O: are found in text joined from 88 records."""
    assert [c.payer_name for c in parsed("continuations.bai2").credits] == ["ACME CORP", "GLOBEX LTD", None]


def test_parsing_is_deterministic() -> None:
    """The same file parsed twice gives identical statements."""
    for path in sorted(FIXTURES.glob("*.bai2")):
        try:
            first = bai.parse(path.read_bytes(), Options())
        except FileInvalid as error:
            assert str(refused(path.read_bytes())) == str(error)
            continue
        assert bai.parse(path.read_bytes(), Options()) == first


_ACCOUNTS = ("5000000001", "4455667788", "3000000001", "3000000002", "4000000001", "2000000001")


@pytest.mark.parametrize(
    "data",
    [
        *(
            load(name)
            for name in ("bad_account_total.bai2", "unknown_currency.bai2", "non_numeric_amount.bai2")
        ),
        mutated("good_small.bai2", "03,5000000001,USD,", "03,USD,5000000001,"),
        mutated("good_small.bai2", "16,142,2500,", "16,5000000001,2500,"),
        mutated("good_small.bai2", "16,142,2500,", "16,142,5000000001X,"),
        mutated("good_small.bai2", "16,142,2500,,", "16,142,2500,5000000001,"),
    ],
)
def test_errors_never_show_an_account_number(data: bytes) -> None:
    """An error quoting a field shows at most the last four digits of a long number."""
    message = str(refused(data))
    assert not any(account in message for account in _ACCOUNTS), message


def test_skip_details_never_show_an_account_number() -> None:
    """Skipped details name codes and reasons, never the account."""
    for name in ("skipped.bai2", "groups.bai2"):
        for skipped in parsed(name).skipped:
            assert not any(account in skipped.detail for account in (*_ACCOUNTS, "GB29NWBK60161331926819"))


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"01,BANK,US,240105", True),
        (b"\xef\xbb\xbf01,BANK", True),
        (b"\r\n  01,BANK", True),
        (b"<?xml version='1.0'?>", False),
        (b":20:STATEMENT", False),
        (b"1ABCDEFGHIJ0123456789", False),
        (b"", False),
    ],
)
def test_sniff(head: bytes, expected: bool) -> None:
    """A file is BAI2 by its leading 01 record."""
    assert bai.sniff(head) is expected
