"""The BAI2 parser on bad files, on the public samples and on generated files (hypothesis).

Which fixture covers which rule is listed in tests/test_bankfiles_bai.py.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

import pytest
from bai2 import bai2  # type: ignore[import-untyped]  # no type hints; the independent reading below
from hypothesis import given, settings
from hypothesis import strategies as st

from service.bankfiles import bai
from service.bankfiles.model import DEBIT, NOT_A_CREDIT_CODE, Options, Statement
from tests.test_bankfiles_bai import FIXTURES, load, mutated, refused

SAMPLES = FIXTURES.parent / "samples" / "bai2"

# --- control totals and refusals -----------------------------------------------------------


def test_account_control_total_mismatch_is_refused() -> None:
    """A 49 total that is not the sum of the account's amounts is refused, naming both figures."""
    error = refused(load("bad_account_total.bai2"))
    assert error.where == "line 5" and "3501" in error.why and "3500" in error.why


def test_record_count_mismatch_is_refused() -> None:
    """A 49 record count that is not the account's records is refused, naming both figures."""
    error = refused(load("bad_record_count.bai2"))
    assert error.where == "line 5" and "is 4" in error.why and "add up to 3" in error.why


@pytest.mark.parametrize(
    ("old", "new", "where", "what"),
    [
        (
            "98,3500,1,5/",
            "98,3400,1,5/",
            "line 6",
            "group control total is 3400, but the records add up to 3500",
        ),
        ("98,3500,1,5/", "98,3500,2,5/", "line 6", "number of accounts is 2, but the records add up to 1"),
        ("98,3500,1,5/", "98,3500,1,6/", "line 6", "number of records is 6, but the records add up to 5"),
        (
            "99,3500,1,7/",
            "99,-3500,1,7/",
            "line 7",
            "file control total is -3500, but the records add up to 3500",
        ),
        ("99,3500,1,7/", "99,3500,0,7/", "line 7", "number of groups is 0, but the records add up to 1"),
        ("99,3500,1,7/", "99,3500,1,8/", "line 7", "number of records is 8, but the records add up to 7"),
        ("99,3500,1,7/", "99,3500,1,/", "line 7", "count '' is not a number"),
    ],
)
def test_group_and_file_trailers_are_checked(old: str, new: str, where: str, what: str) -> None:
    """Every figure of the 98 and 99 trailers must match the records they close."""
    error = refused(mutated("good_small.bai2", old, new))
    assert (error.where, what in error.why) == (where, True), error.why


def test_truncated_file_is_refused() -> None:
    """A file that ends before its 99 trailer is refused at its last line."""
    error = refused(load("truncated.bai2"))
    assert error.where == "line 6" and "99" in error.why


@pytest.mark.parametrize(
    "data",
    [
        load("garbage.bai2"),
        b"hello, world\n",
        b"",
        b"\n\n",
        b"<?xml version='1.0'?><Document/>",
        b":20:STMT\n",
    ],
)
def test_garbage_is_refused(data: bytes) -> None:
    """Bytes that are no BAI2 file are FileInvalid at line 1."""
    assert refused(data).where == "line 1"


@pytest.mark.parametrize(
    "amount", ["25.00", "+2500", "-2500", "2_500", "25 00", "\uff12\uff15", "0x25", "9" * 19]
)
def test_amount_that_is_not_digits_is_refused(amount: str) -> None:
    """A 16 amount must be ASCII digits: no point, sign, separator or other script's digits."""
    data = (
        load("non_numeric_amount.bai2")
        if amount == "25.00"
        else mutated("good_small.bai2", ",2500,", f",{amount},")
    )
    error = refused(data)
    assert error.where == "line 4" and "amount" in error.why


def test_amount_beyond_what_money_records_is_refused() -> None:
    """Sixteen whole digits of dollars is more than an amount may have (money's limit)."""
    data = mutated("good_small.bai2", "16,142,2500,", "16,142,123456789012345678,")
    data = data.replace(b"3500", b"123456789012346678")
    assert "too large" in refused(data).why


@pytest.mark.parametrize(
    ("old", "new", "where", "needle"),
    [
        (",80,,2/", ",80,,3/", "line 1", "BAI version '3'"),
        (",80,,2/", ",80,,/", "line 1", "BAI version ''"),
        (",1,240104,", ",1,240230,", "line 2", "as-of date '...0230' is not a date"),
        (",1,240104,", ",7,240104,", "line 2", "group status '7'"),
        ("16,142,2500,", "16,14A,2500,", "line 4", "type code '14A'"),
        ("16,142,2500,", "17,142,2500,", "line 4", "does not begin a BAI2 record"),
        ("03,5000000001,USD,", "03,,USD,", "line 3", "names no account"),
        ("03,5000000001,USD,010,1000,", "03,5000000001,USD,010,1O00,", "line 3", "amount '1O00'"),
        ("49,3500,3/\n", "", "line 5", "a 98 record where BAI2 expects 16 or 49"),
        ("99,3500,1,7/\n", "99,3500,1,7/\n16,142,1,,/\n", "line 8", "after the 99"),
        ("02,PAYRELAY", "16,142,1,,/\n02,PAYRELAY", "line 2", "a 16 record where BAI2 expects 02 or 99"),
    ],
)
def test_malformed_records_are_refused_at_their_line(old: str, new: str, where: str, needle: str) -> None:
    """Records out of order or with unreadable fields are FileInvalid at the line, saying why."""
    error = refused(mutated("good_small.bai2", old, new))
    assert (error.where, needle in error.why) == (where, True), error.why


def test_file_must_begin_with_01() -> None:
    """A file whose first record is not 01, or an 88 with nothing before it, is refused."""
    assert "01 file header" in refused(load("good_small.bai2").split(b"\n", 1)[1]).why
    assert "88" in refused(b"88,TEXT\n" + load("good_small.bai2")).why


def test_non_ascii_bytes() -> None:
    """UTF-8 text is read; a byte that is neither ASCII nor UTF-8 is refused at its line."""
    credit = bai.parse(mutated("good_small.bai2", ",ONE/", ",CAF\u00c9 ONE/"), Options()).credits[0]
    assert credit.remittance_information == "CAF\u00c9 ONE"
    error = refused(load("good_small.bai2").replace(b",ONE/", b",CAF\xc9 ONE/"))
    assert error.where == "line 4" and "0xC9" in error.why


def test_blank_lines_crlf_and_bom_are_accepted() -> None:
    """CRLF endings, a UTF-8 BOM and blank lines parse; line numbers still count the blank lines."""
    data = b"\xef\xbb\xbf" + load("good_small.bai2").replace(b"\n", b"\r\n").replace(
        b"\r\n16,", b"\r\n\r\n16,"
    )
    assert bai.parse(data, Options()).credits[0].entry == "line 5"


# --- public samples ------------------------------------------------------------------------


def sample(name: str, *codes: str) -> Statement:
    return bai.parse((SAMPLES / name).read_bytes(), Options(bai2_credit_codes=frozenset(codes)))


def test_sample_svb() -> None:
    """SVB's sample: two groups of one account, each an ACH credit received (142) with text on an 88."""
    statement = sample("svb_us_example.bai2")
    assert (statement.accounts, statement.entries, statement.skipped) == (2, 2, ())
    assert [(c.amount, c.currency, c.reference, c.booked_at, c.account) for c in statement.credits] == [
        (490196, "USD", "172629", date(2022, 2, 1), "1234567890"),
        (905800, "USD", "150675", date(2022, 2, 2), "1234567890"),
    ]
    assert {c.remittance_information for c in statement.credits} == {"SOME PAYMENT ACH OFFSET"}


def test_sample_citi() -> None:
    """Citi's sample: one internal transfer (191, skipped by default) with a V funds type and seven 88s."""
    statement = sample("citi_example.bai2")
    assert (statement.accounts, statement.entries, statement.credits) == (1, 1, ())
    assert [(s.entry, s.reason) for s in statement.skipped] == [("line 4", NOT_A_CREDIT_CODE)]
    (credit,) = sample("citi_example.bai2", "191").credits
    assert (credit.amount, credit.currency, credit.booked_at) == (1, "GBP", date(2015, 7, 15))
    assert (credit.reference, credit.references, credit.payer_name) == (
        "1234567890",
        ("RP12312312312312",),
        "DOE JO",
    )
    assert credit.remittance_information is not None
    assert credit.remittance_information.startswith("FR:FP SIP INCOMING ENDT:20150715 TRID:")


def test_sample_nwb() -> None:
    """NatWest's sample: four debits (699) and a 399 credit whose text wraps mid-word at 80 columns."""
    statement = sample("nwb_example.bai2")
    assert (statement.accounts, statement.entries, statement.credits) == (1, 5, ())
    assert [s.reason for s in statement.skipped] == [DEBIT] * 4 + [NOT_A_CREDIT_CODE]
    (credit,) = sample("nwb_example.bai2", "399").credits
    assert (credit.amount, credit.currency, credit.reference, credit.booked_at) == (
        89,
        "GBP",
        None,
        date(2009, 12, 16),
    )
    assert credit.remittance_information is not None
    assert credit.remittance_information.endswith("BGC INTERNATIONAL-5373 CLIENT SECCY AC TFR")


def test_sample_with_blank_account_totals() -> None:
    """The bai2 package's sample of two empty accounts with blank 49 totals parses to nothing."""
    statement = sample("account_trailer_amount_blank_example.bai2")
    assert (statement.accounts, statement.entries, statement.credits, statement.skipped) == (2, 0, (), ())


@pytest.mark.parametrize("path", sorted(SAMPLES.glob("*.bai2")), ids=lambda p: p.name)
def test_samples_agree_with_the_bai2_package(path: Path) -> None:
    """The bai2 package, checking every trailer, reads the same 16 amounts from every sample."""
    library = _library(path.read_text())
    theirs = [(d.type_code.code, d.amount) for g in library.children for a in g.children for d in a.children]
    every_credit = {f"{code:03}" for code in range(1000) if not 400 <= code <= 699}
    ours = sample(path.name, *every_credit)
    assert ours.entries == len(theirs)
    assert [c.amount for c in ours.credits] == [
        amount for code, amount in theirs if not 400 <= int(code) <= 699
    ]


def _library(text: str) -> Any:
    return bai2.parse_from_string(text, check_integrity=True)


# --- properties ----------------------------------------------------------------------------

_TEXT = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -.:#,", max_size=90)
_REF = st.from_regex(r"[A-Z0-9]{0,10}", fullmatch=True)
_FUNDS = st.sampled_from(["", "0", "1", "2", "Z", "V,240105,1200", "S,100,200,300", "D,0", "D,2,0,5,1,7"])


@st.composite
def _credit(draw: st.DrawFn) -> dict[str, Any]:
    text = draw(_TEXT)
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=4)))
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return {
        "code": draw(st.sampled_from(sorted(bai.DEFAULT_CREDIT_CODES - bai.CHECK_CODES))),
        "amount": draw(st.integers(1, 10**12)),
        "funds": draw(_FUNDS),
        "bank": draw(_REF),
        "customer": draw(_REF),
        "pieces": pieces,
        "slash": draw(st.booleans()),  # the 16 record ends at "/" and all its text is on 88s
        "text": text,
    }


_CURRENCY = st.sampled_from(["", "USD", "JPY", "BHD", "EUR", "CLF"])
_ACCOUNT = st.tuples(
    st.from_regex(r"[0-9]{6,12}", fullmatch=True), _CURRENCY, st.lists(_credit(), max_size=4)
)
_GROUP = st.tuples(_CURRENCY, st.lists(_ACCOUNT, min_size=1, max_size=3))


def _write(groups: list[tuple[str, list[tuple[str, str, list[dict[str, Any]]]]]]) -> str:
    """A BAI2 file of these credits, with correct trailers (the oracle: the bai2 package checks them)."""
    lines = ["01,BANK,US,240105,0600,F1,,,2/"]
    for group_currency, accounts in groups:
        start, group_total = len(lines), 0
        lines.append(f"02,US,BANK,1,240104,,{group_currency},2/")
        for number, currency, credits in accounts:
            first, total = len(lines), -123
            lines.append(f"03,{number},{currency},015,-123,,/")
            for c in credits:
                head = f"16,{c['code']},{c['amount']},{c['funds']},{c['bank']},{c['customer']}"
                pieces = list(c["pieces"])
                lines.append(head + "/" if c["slash"] else f"{head},{pieces.pop(0)}")
                lines.extend(f"88,{piece}" for piece in pieces)
                total += c["amount"]
            lines.append(f"49,{total},{len(lines) - first + 1}/")
            group_total += total
        lines.append(f"98,{group_total},{len(accounts)},{len(lines) - start + 1}/")
    total = sum(int(line.split(",")[1]) for line in lines if line.startswith("98,"))
    lines.append(f"99,{total},{len(groups)},{len(lines) + 1}/")
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None)
@given(st.lists(_GROUP, min_size=1, max_size=3))
def test_generated_files_parse_back_exactly(
    groups: list[tuple[str, list[tuple[str, str, list[dict[str, Any]]]]]],
) -> None:
    """Any file of random credits, currencies, funds types and continuations gives back its amounts."""
    text = _write(groups)
    _library(text)  # the trailers are right by an independent reading
    expected = [
        (number, currency or group_currency or "USD", c["amount"], c["bank"] or None, c["text"])
        for group_currency, accounts in groups
        for number, currency, credits in accounts
        for c in credits
    ]
    statement = bai.parse(text.encode(), Options())
    got = [
        (c.account, c.currency, c.amount, c.reference, "".join((c.remittance_information or "").split()))
        for c in statement.credits
    ]
    assert got == [(*e[:4], "".join(str(e[4]).split())) for e in expected]
    assert statement.entries == len(expected)
