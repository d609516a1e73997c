"""The BAI lockbox parser (service/bankfiles/lockbox.py): checks, overflow invoices, totals, layouts.

Fixtures (tests/fixtures/bankfiles/lockbox/), written by hand from the default layout:
- two_batches.txt: one lockbox, two batches (5 record per batch); batch 1 item 1 has three
  invoices over two overflow records summing to the check (allocations), item 2 has no stub;
  batch 2 item 1 has invoice numbers without amounts, item 2 an invoice amount that does not sum
  to the check (both references only); 7, 8 and 9 totals that agree.
- custom_layout.txt: another bank's columns (12-digit amounts, a 17-digit MICR account, a remitter
  name, two invoices of 15 characters per overflow record), read through lockbox_columns.
Every error is the good fixture with one line changed (see `_edit`); the property test builds
transmissions of random checks and invoices with the default layout.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.bankfiles import lockbox
from service.bankfiles.model import CHECK, FileInvalid, Options

FIXTURES = Path(__file__).parent / "fixtures" / "bankfiles" / "lockbox"
TWO_BATCHES = (FIXTURES / "two_batches.txt").read_bytes()
CUSTOM = {
    "check_amount": (8, 19),
    "micr_routing": (20, 28),
    "micr_account": (29, 45),
    "check_number": (46, 55),
    "remitter_name": (56, 80),
    "invoice_1": (12, 26),
    "invoice_amount_1": (27, 38),
    "invoice_2": (39, 53),
    "invoice_amount_2": (54, 65),
    "invoice_3": (0, 0),
    "invoice_amount_3": (0, 0),
}


def _parse(data: bytes, columns: dict[str, tuple[int, int]] | None = None) -> lockbox.Statement:
    return lockbox.parse(data, Options(lockbox_columns=columns or {}))


def _edit(line: int, new: str | None, data: bytes = TWO_BATCHES) -> bytes:
    """The fixture with 1-based `line` replaced (None: removed)."""
    lines = data.decode().splitlines()
    if new is None:
        del lines[line - 1]
    else:
        lines[line - 1] = new
    return ("\n".join(lines) + "\n").encode()


def _fails(data: bytes, where: str, why: str) -> None:
    with pytest.raises(FileInvalid) as caught:
        _parse(data)
    assert caught.value.where == where
    assert why in caught.value.why


def test_statement_counts_checks_and_lockboxes() -> None:
    """A transmission's statement names the format, counts its 6 records and its distinct lockboxes."""
    statement = _parse(TWO_BATCHES)
    assert (statement.format, statement.version, statement.accounts, statement.entries) == (
        "lockbox",
        "BAI",
        1,
        4,
    )
    assert [c.position for c in statement.credits] == [0, 1, 2, 3]
    assert statement.skipped == ()


def test_check_with_overflow_invoices_summing_to_it_has_allocations() -> None:
    """Three invoices over two overflow records that sum to the check become its allocations."""
    credit = _parse(TWO_BATCHES).credits[0]
    assert credit.kind == CHECK and credit.amount == 150000 and credit.currency == "USD"
    assert credit.allocations == (("INV-1001", 50000), ("INV-1002", 70000), ("INV-1003", 30000))
    assert credit.references == ("INV-1001", "INV-1002", "INV-1003")


def test_check_carries_micr_lockbox_date_and_identity() -> None:
    """A check names its lockbox as account, the deposit date, its MICR line and lockbox:date:batch:item."""
    credit = _parse(TWO_BATCHES).credits[0]
    assert credit.account == "1234567" and credit.booked_at == date(2024, 3, 15)
    assert credit.reference == "1234567:20240315:001:001" and credit.entry == "line 4"
    assert (credit.check_number, credit.micr_routing) == ("0000001001", "021000021")
    assert credit.micr_account == credit.payer_account == "0012345678"
    assert credit.payer_name is None


def test_check_without_stub_has_no_documents() -> None:
    """A check with no overflow records has neither references nor allocations."""
    credit = _parse(TWO_BATCHES).credits[1]
    assert (credit.amount, credit.references, credit.allocations) == (25050, (), ())


def test_invoice_numbers_without_amounts_are_references_only() -> None:
    """Invoice numbers with blank amounts become references, not allocations."""
    credit = _parse(TWO_BATCHES).credits[2]
    assert (credit.references, credit.allocations) == (("INV-2001", "INV-2002"), ())
    assert credit.reference == "1234567:20240315:002:001"


def test_invoice_amounts_not_summing_to_the_check_are_references_only() -> None:
    """Invoice amounts that do not add up to the check give references and no allocations."""
    credit = _parse(TWO_BATCHES).credits[3]
    assert (credit.amount, credit.references, credit.allocations) == (20000, ("INV-2003",), ())


def test_custom_layout_reads_another_banks_columns() -> None:
    """lockbox_columns moves the fields: wide amounts, long MICR account, remitter name, two invoices."""
    statement = _parse((FIXTURES / "custom_layout.txt").read_bytes(), CUSTOM)
    (credit,) = statement.credits
    assert (credit.amount, credit.account, credit.booked_at) == (1234567, "7654321", date(2024, 12, 31))
    assert credit.micr_account == "00000987654321000" and credit.payer_name == "ACME WIDGETS LLC"
    assert credit.allocations == (("2024-INV-000042", 1000000), ("2024-INV-000043", 234567))


def test_default_layout_misreads_the_custom_file() -> None:
    """The custom file under the default columns fails its totals instead of yielding wrong amounts."""
    with pytest.raises(FileInvalid):
        _parse((FIXTURES / "custom_layout.txt").read_bytes())


def test_layout_applies_overrides_and_switches_fields_off() -> None:
    """layout() moves a field, and (0, 0) removes an optional one."""
    spec = lockbox.layout({"remitter_name": (47, 76), "invoice_3": (0, 0), "invoice_amount_3": (0, 0)})
    assert spec.remitter_name == (47, 76) and spec.invoice_3 is None and spec.check_amount == (8, 17)
    assert lockbox.layout({}) == lockbox.DEFAULT


@pytest.mark.parametrize(
    ("columns", "message"),
    [
        ({"amount": (8, 17)}, "unknown field 'amount'"),
        ({"check_amount": (17, 8)}, "is not 2 <= first <= last"),
        ({"check_amount": (1, 8)}, "is not 2 <= first <= last"),
        ({"check_amount": (0, 0)}, "is not 2 <= first <= last"),
        ({"check_amount": (8,)}, "must be (first column, last column)"),  # type: ignore[dict-item]
        ({"micr_routing": (15, 26)}, "overlap in the 6 record"),
        ({"invoice_4": (0, 0), "invoice_amount_4": (72, 80)}, "invoice_amount_4 is set but invoice_4 is not"),
    ],
)
def test_layout_refuses_bad_columns(columns: dict[str, tuple[int, int]], message: str) -> None:
    """Unknown field names, bad ranges, overlaps and orphan amounts are a ValueError that says which."""
    with pytest.raises(ValueError, match="lockbox_columns") as caught:
        lockbox.layout(columns)
    assert message in str(caught.value)


def test_parse_reports_bad_columns_as_file_invalid() -> None:
    """A bad layout reaching parse() is FileInvalid, not a ValueError escaping."""
    with pytest.raises(FileInvalid, match="unknown field"):
        _parse(TWO_BATCHES, {"nope": (2, 3)})


def test_batch_total_that_differs_names_both_figures() -> None:
    """A 7 record whose count or amount differs from its batch fails with both figures."""
    _fails(
        _edit(8, "700100012345672403150020000175051"),
        "line 8",
        "says 2 checks for 1750.51, but the batch holds 2 checks for 1750.50",
    )


def test_lockbox_total_that_differs_fails() -> None:
    """An 8 record counting another number of checks than the lockbox holds fails the file."""
    _fails(_edit(15, "8000000123456724031500050000295049"), "line 15", "says 5 checks for 2950.49")


def test_file_total_that_differs_fails() -> None:
    """A 9 record whose amount differs from all the checks fails the file."""
    _fails(_edit(16, "9000004000000295048"), "line 16", "but the file holds 4 checks for 2950.49")


def test_truncated_file_fails() -> None:
    """A file that ends before its 9 record is truncated."""
    _fails(_edit(16, None), "line 15", "truncated")


def test_overflow_before_any_check_fails() -> None:
    """A 4 record with no 6 before it fails."""
    _fails(_edit(4, "40010014019INV-1001  0000050000"), "line 4", "follows no check")


def test_overflow_after_a_batch_total_fails() -> None:
    """A 4 record after a 7 belongs to no check."""
    data = _edit(9, "40010024019INV-9999  0000000100")
    _fails(data, "line 9", "follows no check")


def test_unknown_record_type_fails() -> None:
    """A record type outside 1, 2, 4-9 fails with its line."""
    _fails(_edit(3, "3001000123456724031"), "line 3", "unknown record type '3'")


def test_non_numeric_amount_fails() -> None:
    """A check amount with letters in it fails with its line."""
    _fails(_edit(4, "600100100001500O00"), "line 4", "is not a number")


def test_zero_amount_fails() -> None:
    """A check of zero dollars fails with its line."""
    _fails(_edit(7, "6001002000000000002100002100123456780000001002"), "line 7", "greater than zero")


def test_non_numeric_invoice_amount_fails() -> None:
    """An invoice amount that is not digits fails with its line."""
    _fails(_edit(6, "40010014029INV-1003  00000300OO"), "line 6", "invoice amount")


def test_invoice_amount_without_number_fails() -> None:
    """An invoice amount with a blank invoice number cannot be allocated and fails."""
    _fails(_edit(6, "40010014029          0000030000"), "line 6", "without an invoice number")


def test_missing_last_overflow_fails() -> None:
    """Overflow records that stop without the last-overflow flag fail at their check."""
    _fails(_edit(6, None), "line 4", "without the last one")


def test_overflow_out_of_sequence_fails() -> None:
    """An overflow sequence number that skips one fails (an invoice would be missing)."""
    _fails(_edit(6, "40010014039INV-1003  0000030000"), "line 6", "expected 2")


def test_bad_last_overflow_flag_fails() -> None:
    """A last-overflow flag other than 0 or 9 fails."""
    _fails(_edit(6, "40010014021INV-1003  0000030000"), "line 6", "last-overflow flag '1'")


def test_overflow_after_the_last_one_fails() -> None:
    """A 4 record after the one flagged last fails."""
    data = _edit(6, "40010014029INV-1003  0000030000\n40010014039INV-1004  0000000100")
    _fails(data, "line 7", "after the last one")


def test_overflow_for_another_item_fails() -> None:
    """A 4 record whose item differs from the check before it fails."""
    _fails(_edit(5, "40010024010INV-1001  0000050000INV-1002  0000070000"), "line 5", "another item")


def test_check_before_lockbox_header_fails() -> None:
    """A 6 record before any 5 fails."""
    _fails(_edit(3, "20000000000000000000"), "line 4", "before any lockbox header")


def test_bad_deposit_date_fails() -> None:
    """A deposit date that is no YYMMDD date fails."""
    _fails(_edit(3, "50010001234567241315"), "line 3", "not a YYMMDD date")


def test_first_record_must_be_the_header() -> None:
    """A file that does not begin with a 1 record fails at line 1."""
    _fails(_edit(1, None), "line 1", "immediate address header")


def test_record_after_trailer_fails_but_nines_are_padding() -> None:
    """After the 9 record only lines of 9s (block padding) may follow."""
    assert _parse(TWO_BATCHES + b"9" * 80 + b"\n").entries == 4
    _fails(TWO_BATCHES + b"6002003000000010000\n", "line 17", "after the file trailer")


def test_duplicate_item_fails() -> None:
    """Two checks with the same lockbox, date, batch and item would be one identity: the file fails."""
    data = _edit(7, "6001001000002505002100002100123456780000001002")
    _fails(data, "line 7", "a second check with batch 001 item 001")


def test_errors_never_show_the_micr_account() -> None:
    """No error message carries the full MICR account number."""
    for data in (_edit(8, "700100012345672403150020000175051"), _edit(6, None)):
        with pytest.raises(FileInvalid) as caught:
            _parse(data)
        assert "0012345678" not in str(caught.value)


# The property test writes transmissions with the default layout's columns.
def _record(kind: str, fields: dict[str, str]) -> str:
    line = [" "] * 80
    line[0] = kind
    for name, text in fields.items():
        first, last = getattr(lockbox.DEFAULT, name)
        line[first - 1 : last] = (
            text.rjust(last - first + 1, "0")
            if name.endswith(("amount", "count"))
            else text.ljust(last - first + 1)
        )
    return "".join(line)


_invoice = st.from_regex(r"[A-Z0-9][A-Z0-9-]{0,9}", fullmatch=True)
_check = st.tuples(st.lists(st.tuples(_invoice, st.integers(1, 99_999_999)), max_size=7), st.booleans())


def _transmission(lockboxes: list[list[list[tuple[list[tuple[str, int]], bool]]]]) -> tuple[str, list[int]]:
    """Records for lockboxes -> batches -> checks (invoices, with amounts?) and the check amounts."""
    lines, amounts = [_record("1", {})], []
    for box, batches in enumerate(lockboxes):
        box_amounts: list[int] = []
        for b, checks in enumerate(batches, 1):
            batch = f"{b:03d}"
            lines.append(
                _record(
                    "5", {"batch_number": batch, "lockbox_number": f"{box:07d}", "deposit_date": "240229"}
                )
            )
            batch_amounts = []
            for i, (invoices, with_amounts) in enumerate(checks, 1):
                amount = sum(a for _, a in invoices) if with_amounts and invoices else 1000 + i
                batch_amounts.append(amount)
                item = {"batch_number": batch, "item_number": f"{i:03d}"}
                lines.append(_record("6", {**item, "check_amount": str(amount), "micr_account": "12345678"}))
                for s in range(0, len(invoices), 3):
                    group = invoices[s : s + 3]
                    over = {"overflow_batch": batch, "overflow_item": item["item_number"]}
                    over |= {
                        "overflow_sequence": f"{s // 3 + 1:02d}",
                        "overflow_last": "9" if s + 3 >= len(invoices) else "0",
                    }
                    for n, (number, part) in enumerate(group, 1):
                        over[f"invoice_{n}"] = number
                        over[f"invoice_amount_{n}"] = str(part) if with_amounts else ""
                    lines.append(_record("4", over))
            lines.append(
                _record("7", {"batch_count": str(len(checks)), "batch_amount": str(sum(batch_amounts))})
            )
            box_amounts += batch_amounts
        lines.append(
            _record("8", {"lockbox_count": str(len(box_amounts)), "lockbox_amount": str(sum(box_amounts))})
        )
        amounts += box_amounts
    lines.append(_record("9", {"file_count": str(len(amounts)), "file_amount": str(sum(amounts))}))
    return "\n".join(lines) + "\n", amounts


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.lists(_check, min_size=1, max_size=4), min_size=1, max_size=3), min_size=1, max_size=3
    )
)
def test_generated_transmissions_parse_back_exactly(
    lockboxes: list[list[list[tuple[list[tuple[str, int]], bool]]]],
) -> None:
    """Random checks and invoices parse back to the same amounts, allocations and references."""
    text, amounts = _transmission(lockboxes)
    statement = _parse(text.encode())
    checks = [check for batches in lockboxes for checks in batches for check in checks]
    assert [c.amount for c in statement.credits] == amounts
    assert statement.accounts == len(lockboxes) and statement.entries == len(checks)
    for credit, (invoices, with_amounts) in zip(statement.credits, checks, strict=True):
        assert credit.references == tuple(number for number, _ in invoices)
        assert credit.allocations == (tuple(invoices) if with_amounts else ())
        assert credit.booked_at == date(2024, 2, 29)
