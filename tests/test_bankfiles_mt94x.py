"""The MT940/MT942 parser (service/bankfiles/mt94x.py): `:61:` credits, `:86:` styles, checks, errors.

Fixtures (tests/fixtures/bankfiles/mt940/), written by hand from the SWIFT field formats:
- styles.sta: one statement: `/EREF/.../REMI/.../ORDP//NAME/.../IBAN/` (line 5), the same with `//`
  separators and NOTPROVIDED (line 8), German `166?00...?20...?33` with a sub-field cut across
  lines (line 12), free text (line 16), a debit (19), RC and RD reversals (21, 22), a zero entry
  (23), statement-level `:86:` after the closing balance; the balances add up.
- year_end.sta: entry dates across a year-end both ways, and no entry date; a `:940:` header line.
- mt942.sta: an MT942 in a SWIFT envelope with `:34F:`, `:13D:`, `:90D:`/`:90C:`; its credit is
  styles.sta's first credit, reported before the statement.
- several.sta: three enveloped statements, two accounts (EUR and USD).
Public samples (tests/fixtures/bankfiles/samples/mt940/, BSD, see LICENSE there): ASNB_mt940.txt
(ASN Bank: the payer IBAN in the customer reference, many statements), citi_mt940.txt (zero
entries, funds codes). Errors are fixtures with one line changed; the property test writes MT940.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.bankfiles import mt94x
from service.bankfiles.model import DEBIT, DEPOSIT, NOT_BOOKED, REVERSAL, FileInvalid, Options, Statement
from service.money import to_major_string

FIXTURES = Path(__file__).parent / "fixtures" / "bankfiles"
STYLES = (FIXTURES / "mt940" / "styles.sta").read_bytes()


def _fixture(name: str) -> bytes:
    return (FIXTURES / "mt940" / name).read_bytes()


def _parse(data: bytes) -> Statement:
    return mt94x.parse(data, Options())


def _edit(line: int, new: str, data: bytes = STYLES) -> bytes:
    lines = data.decode().splitlines()
    lines[line - 1] = new
    return ("\n".join(lines) + "\n").encode()


def _fails(data: bytes, where: str, why: str) -> None:
    with pytest.raises(FileInvalid) as caught:
        _parse(data)
    assert (caught.value.where, why in caught.value.why) == (where, True), caught.value.why


def test_statement_counts_entries_and_accounts() -> None:
    """A statement counts every `:61:` line and its distinct `:25:` accounts."""
    statement = _parse(STYLES)
    assert (statement.format, statement.version, statement.accounts, statement.entries) == (
        "mt940",
        "MT940",
        1,
        8,
    )
    assert [(c.entry, c.position, c.kind) for c in statement.credits] == [
        ("line 5", 0, DEPOSIT),
        ("line 8", 1, DEPOSIT),
        ("line 12", 2, DEPOSIT),
        ("line 16", 3, DEPOSIT),
    ]


def test_credit_carries_account_amount_date_and_bank_reference() -> None:
    """A credit names the `:25:` account, the amount by exponent, the entry date and the `//` reference."""
    credit = _parse(STYLES).credits[0]
    assert (credit.account, credit.amount, credit.currency) == ("DE89370400440532013000", 25000, "EUR")
    assert (credit.booked_at, credit.reference) == (date(2024, 3, 15), "BR240315001")


def test_slash_style_details() -> None:
    """`/EREF/…/REMI/…/ORDP//NAME/…/IBAN/…` gives references, remittance, payer name and account."""
    credit = _parse(STYLES).credits[0]
    assert credit.references == ("E2E-4711",) and credit.remittance_information == "Invoice INV-1001"
    assert (credit.payer_name, credit.payer_account) == ("ACME GMBH", "DE44500105175407324931")


def test_slash_style_with_double_slashes_and_notprovided() -> None:
    """`//` between codes is read too; EREF NOTPROVIDED is no reference; the customer reference is one."""
    credit = _parse(STYLES).credits[1]
    assert (
        credit.references == ("CUST-REF-77",) and credit.remittance_information == "Payment INV-1002 INV-1003"
    )
    assert (credit.payer_name, credit.payer_account) == ("Widget Co Ltd", "GB33BUKB20201555555555")


def test_question_mark_style_details() -> None:
    """`?20`-`?29` join into the remittance, `?31` is the payer account, `?32`+`?33` the payer name."""
    credit = _parse(STYLES).credits[2]
    assert credit.remittance_information == "EREF+RE-2024-0815 SVWZ+Rechnung Nr RE-2024-0815 vom 01.03.2024"
    assert credit.references == ("RE-2024-0815",)
    assert (credit.payer_name, credit.payer_account) == (
        "MUSTERMANN HANS-PETER GMBH UND CO KG",
        "DE02120300000000202051",
    )


def test_free_text_details() -> None:
    """Free `:86:` text is the remittance information, its lines joined."""
    credit = _parse(STYLES).credits[3]
    text = "Thank you for your service, invoice INV-1004 paid by J. Smith and family"
    assert (credit.remittance_information, credit.references, credit.payer_name) == (text, (), None)


def test_debits_reversals_and_zero_entries_are_skipped() -> None:
    """D is a debit, RC and RD are reversals, a zero amount is not booked money; each says where."""
    skipped = _parse(STYLES).skipped
    assert [(s.entry, s.reason) for s in skipped] == [
        ("line 19", DEBIT),
        ("line 21", REVERSAL),
        ("line 22", REVERSAL),
        ("line 23", NOT_BOOKED),
    ]
    assert all(s.detail and "DE75512108001245126199" not in s.detail for s in skipped)


def test_entry_dates_across_a_year_end() -> None:
    """The MMDD entry date takes the year nearest the value date, both ways; without it, the value date."""
    credits = _parse(_fixture("year_end.sta")).credits
    assert [c.booked_at for c in credits] == [date(2024, 1, 2), date(2023, 12, 29), date(2024, 1, 2)]


def test_mt942_credit_has_the_identity_of_the_later_statement() -> None:
    """An MT942 entry is a booked credit with the same account, amount and reference as in the MT940."""
    interim = _parse(_fixture("mt942.sta"))
    assert (interim.version, interim.entries, [s.reason for s in interim.skipped]) == ("MT942", 2, [DEBIT])
    (early,) = interim.credits
    later = _parse(STYLES).credits[0]
    assert (early.account, early.reference, early.amount, early.booked_at) == (
        later.account,
        later.reference,
        later.amount,
        later.booked_at,
    )


def test_several_statements_and_accounts() -> None:
    """Enveloped statements of two accounts and currencies are read in file order."""
    statement = _parse(_fixture("several.sta"))
    assert (statement.accounts, statement.entries) == (2, 4)
    assert [(c.reference, c.amount, c.currency) for c in statement.credits] == [
        ("A-0301-1", 1000, "EUR"),
        ("B-0301-1", 123456, "USD"),
        ("B-0301-2", 1, "USD"),
        ("A-0302-1", 500, "EUR"),
    ]
    assert [c.position for c in statement.credits] == [0, 1, 2, 3]


def test_public_asn_bank_sample() -> None:
    """ASN Bank's sample: 3 credits of 8 entries; the IBAN in the customer reference is the payer account."""
    statement = _parse((FIXTURES / "samples" / "mt940" / "ASNB_mt940.txt").read_bytes())
    assert (statement.accounts, statement.entries, len(statement.credits)) == (1, 8, 3)
    assert [c.amount for c in statement.credits] == [100000, 82872, 100018]
    assert (
        statement.credits[0].payer_account == "NL56ASNB9999999999" and statement.credits[0].references == ()
    )
    assert statement.credits[0].reference is None


def test_public_citi_sample() -> None:
    """Citi's sample: three debits and two zero-amount information lines, no credit."""
    statement = _parse((FIXTURES / "samples" / "mt940" / "citi_mt940.txt").read_bytes())
    assert (statement.entries, statement.credits) == (5, ())
    assert [s.reason for s in statement.skipped] == [DEBIT, DEBIT, NOT_BOOKED, NOT_BOOKED, DEBIT]


@pytest.mark.parametrize("name", ["styles.sta", "mt942.sta", "several.sta", "year_end.sta"])
def test_sniff_recognises_mt94x(name: str) -> None:
    """sniff() knows a `{1:` envelope or a `:20:` line near the start."""
    assert mt94x.sniff(_fixture(name)[:4096])


@pytest.mark.parametrize(
    "head", [b"01,BANK,CUST,240315,0930,1,,,2/", b"<?xml version='1.0'?><Document/>", b""]
)
def test_sniff_refuses_other_formats(head: bytes) -> None:
    """sniff() is False for BAI2, XML and empty heads."""
    assert not mt94x.sniff(head)


def test_garbage_does_not_parse() -> None:
    """A file with no message is FileInvalid (and a path is never opened: the data is data)."""
    _fails(b"/etc/passwd", "line 1", "no MT940/MT942 message")


def test_missing_closing_balance_is_truncated() -> None:
    """A statement without its `:62F:` is truncated."""
    data = b"\n".join(STYLES.splitlines()[:16]) + b"\n"
    _fails(data, "line 16", "no closing balance")


def test_envelope_without_end_is_truncated() -> None:
    """A SWIFT `{4:` block without its `-}` is truncated."""
    data = b"\n".join(_fixture("mt942.sta").splitlines()[:9]) + b"\n"
    _fails(data, "line 1", "no end")


def test_balances_that_do_not_add_up_fail() -> None:
    """Opening balance plus entries must be the closing balance."""
    _fails(_edit(24, ":62F:C240315EUR2260,48"), "line 24", "is not the closing balance")


def test_mt942_totals_that_differ_fail() -> None:
    """An MT942 `:90C:` that differs from its credits fails."""
    _fails(_edit(12, ":90C:2EUR250,00", _fixture("mt942.sta")), "line 12", "says 2 entries")


def test_amount_with_a_decimal_point_fails() -> None:
    """A `:61:` amount must use the decimal comma."""
    _fails(_edit(5, ":61:2403150315C250.00NTRFNONREF//BR240315001"), "line 5", "not a :61: statement line")


def test_jpy_amount_with_decimals_fails() -> None:
    """A JPY amount with decimals ("1000,50") fails by exponent."""
    data = b":20:J\n:25:JP123\n:60F:C240314JPY0,\n:61:240315C1000,50NTRFNONREF//J1\n:62F:C240315JPY1000,\n"
    _fails(data, "line 4", "JPY has 0 decimal place(s)")


def test_unknown_currency_fails() -> None:
    """A balance in a currency that is not ISO 4217 fails at its line."""
    _fails(_edit(4, ":60F:C240314XYZ1000,00"), "line 4", "unknown currency 'XYZ'")


def test_statement_line_without_type_code_fails() -> None:
    """Without a transaction type the amount's end is a guess: the line fails."""
    _fails(_edit(5, ":61:2403150315C250,001234//BR240315001"), "line 5", "not a :61: statement line")


def test_bad_value_date_fails() -> None:
    """A value date that is no date fails."""
    _fails(_edit(5, ":61:2402300315C250,00NTRFNONREF//BR240315001"), "line 5", "not a YYMMDD date")


def test_repeated_bank_reference_fails() -> None:
    """Two credits of one account with one bank reference cannot be told apart: the file fails."""
    _fails(_edit(8, ":61:240315C1200,50NTRFCUST-REF-77//BR240315001"), "line 8", "bank reference of line 5")


def test_message_must_begin_with_20_and_name_an_account() -> None:
    """A message's first field is `:20:` and it has a `:25:`."""
    _fails(_edit(1, ":21:STMT"), "line 1", "must begin with :20:")
    _fails(_edit(2, ":28:1"), "line 1", "no :25: account")


def test_errors_never_show_the_account() -> None:
    """No error message carries the full `:25:` account."""
    for data in (_edit(24, ":62F:C240315EUR2260,48"), _edit(4, ":60F:C240314XYZ1000,00")):
        with pytest.raises(FileInvalid) as caught:
            _parse(data)
        assert "0532013000" not in str(caught.value)


_credit = st.tuples(
    st.integers(1, 10**12),
    st.sampled_from(["C", "D"]),
    st.from_regex(r"[A-Z0-9]{1,16}", fullmatch=True),
    st.from_regex(r"[A-Za-z0-9 ]{0,40}", fullmatch=True),
)


@settings(max_examples=80, deadline=None)
@given(
    st.sampled_from(["EUR", "JPY", "BHD"]),
    st.lists(_credit, min_size=1, max_size=12, unique_by=lambda c: c[2]),
)
def test_generated_statements_parse_back_exactly(
    currency: str, entries: list[tuple[int, str, str, str]]
) -> None:
    """Random MT940 credits and debits parse back to the same amounts, references and remittance."""

    def amount(minor: int) -> str:
        return to_major_string(minor, currency).replace(".", ",") + ("," if currency == "JPY" else "")

    lines = [
        ":20:GEN",
        ":25:ACCOUNT-1",
        ":28C:1/1",
        f":60F:C240101{currency}0{',' if currency == 'JPY' else ',0'}",
    ]
    for minor, mark, reference, text in entries:
        lines += [f":61:240102{mark}{amount(minor)}NTRFNONREF//{reference}", f":86:/REMI/{text}/"]
    balance = sum(m if mark == "C" else -m for m, mark, _, _ in entries)
    lines.append(
        f":62F:{'C' if balance >= 0 else 'D'}240102{currency}{amount(abs(balance)) if balance else '0,'}"
    )
    statement = _parse(("\n".join(lines) + "\n").encode())
    credits = [e for e in entries if e[1] == "C"]
    assert [(c.amount, c.reference, c.currency) for c in statement.credits] == [
        (m, r, currency) for m, _, r, _ in credits
    ]
    assert [c.remittance_information for c in statement.credits] == [
        " ".join(t.split()) or None for *_, t in credits
    ]
    assert statement.entries == len(entries) and len(statement.skipped) == len(entries) - len(credits)
