"""Realistic, deterministic bank files for the bank-file benchmark: a camt.053 statement and a BAI2 file.

Seeded, so one size always gives one file. `run` goes into every bank reference: the receiver
remembers recent identities and would not publish a file's events twice, so each timed run of
the benchmark posts the same file with fresh references (same size, same shape).
"""

from __future__ import annotations

import random
from datetime import date, timedelta

CAMT_NAMESPACE = "urn:iso:std:iso:20022:tech:xsd:camt.053.001.08"
ACCOUNT_IBAN = "DE89370400440532013000"
BAI_ACCOUNT = "000123456789"
_BOOKED = date(2026, 11, 30)
_PAYERS = (
    "Globex Corporation",
    "Initech LLC",
    "Umbrella Corp",
    "Stark Industries",
    "Wayne Enterprises",
    "Soylent GmbH",
    "Hooli Europe BV",
    "Tyrell Systems Ltd",
    "Cyberdyne AG",
    "Wonka Confectionery SA",
)
_IBAN_COUNTRIES = ("DE", "FR", "NL", "GB", "ES", "IT", "AT", "BE")


def _major(cents: int) -> str:
    return f"{cents // 100}.{cents % 100:02d}"


def _iban(rng: random.Random) -> str:
    return f"{rng.choice(_IBAN_COUNTRIES)}{rng.randint(10, 99)}{rng.randint(10**17, 10**18 - 1)}"


def _amounts(rng: random.Random, parts: int) -> list[int]:
    return [rng.randint(1_500, 2_500_000) for _ in range(parts)]


def _tx(rng: random.Random, amount: int, reference: str, direction: str, number: int) -> str:
    payer = rng.choice(_PAYERS)
    invoice = f"INV-{rng.randint(10_000, 99_999)}"
    return (
        "        <TxDtls>\n"
        f"          <Refs><EndToEndId>E2E-{reference}-{number}</EndToEndId></Refs>\n"
        f'          <Amt Ccy="EUR">{_major(amount)}</Amt>\n'
        f"          <CdtDbtInd>{direction}</CdtDbtInd>\n"
        "          <RltdPties>\n"
        f"            <Dbtr><Pty><Nm>{payer}</Nm></Pty></Dbtr>\n"
        f"            <DbtrAcct><Id><IBAN>{_iban(rng)}</IBAN></Id></DbtrAcct>\n"
        "          </RltdPties>\n"
        f"          <RmtInf><Ustrd>Payment of invoice {invoice} from {payer}, thank you</Ustrd></RmtInf>\n"
        "        </TxDtls>\n"
    )


def _ntry(rng: random.Random, reference: str, booked: date) -> tuple[str, int]:
    """One entry and its signed amount: ~10% debits, ~10% batch bookings of 2-3 transactions."""
    direction = "DBIT" if rng.random() < 0.10 else "CRDT"
    batch = direction == "CRDT" and rng.random() < 0.11
    parts = _amounts(rng, rng.choice((2, 3)) if batch else 1)
    total = sum(parts)
    family = ("RCDT", "ESCT") if direction == "CRDT" else ("ICDT", "ESCT")
    details = "".join(_tx(rng, amount, reference, direction, i) for i, amount in enumerate(parts, 1))
    batch_line = f"        <Btch><NbOfTxs>{len(parts)}</NbOfTxs></Btch>\n" if batch else ""
    xml = (
        "      <Ntry>\n"
        f'        <Amt Ccy="EUR">{_major(total)}</Amt>\n'
        f"        <CdtDbtInd>{direction}</CdtDbtInd>\n"
        "        <Sts><Cd>BOOK</Cd></Sts>\n"
        f"        <BookgDt><Dt>{booked.isoformat()}</Dt></BookgDt>\n"
        f"        <ValDt><Dt>{booked.isoformat()}</Dt></ValDt>\n"
        f"        <AcctSvcrRef>{reference}</AcctSvcrRef>\n"
        f"        <BkTxCd><Domn><Cd>PMNT</Cd><Fmly><Cd>{family[0]}</Cd>"
        f"<SubFmlyCd>{family[1]}</SubFmlyCd></Fmly></Domn></BkTxCd>\n"
        f"        <NtryDtls>\n{batch_line}{details}        </NtryDtls>\n"
        "      </Ntry>\n"
    )
    return xml, total if direction == "CRDT" else -total


def _balance(code: str, cents: int, day: date) -> str:
    sign = "CRDT" if cents >= 0 else "DBIT"
    return (
        f"      <Bal><Tp><CdOrPrtry><Cd>{code}</Cd></CdOrPrtry></Tp>"
        f'<Amt Ccy="EUR">{_major(abs(cents))}</Amt><CdtDbtInd>{sign}</CdtDbtInd>'
        f"<Dt><Dt>{day.isoformat()}</Dt></Dt></Bal>\n"
    )


def camt053(entries: int, *, run: int = 0, seed: int = 53) -> bytes:
    """A camt.053.001.08 statement of one account with `entries` entries (opening and closing balance)."""
    rng = random.Random(seed)
    opening = 12_500_000_00
    net = 0
    body: list[str] = []
    for number in range(1, entries + 1):
        booked = _BOOKED - timedelta(days=(entries - number) * 7 // max(entries, 1))
        xml, signed = _ntry(rng, f"R{run:02d}-STMT-{number:08d}", booked)
        body.append(xml)
        net += signed
    head = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<Document xmlns="{CAMT_NAMESPACE}">\n'
        "  <BkToCstmrStmt>\n"
        f"    <GrpHdr><MsgId>BENCH-STMT-R{run:02d}</MsgId>"
        "<CreDtTm>2026-11-30T18:00:00+00:00</CreDtTm></GrpHdr>\n"
        "    <Stmt>\n"
        f"      <Id>BENCH-STMT-R{run:02d}-1</Id>\n"
        "      <ElctrncSeqNb>1</ElctrncSeqNb>\n"
        "      <CreDtTm>2026-11-30T18:00:00+00:00</CreDtTm>\n"
        f"      <Acct><Id><IBAN>{ACCOUNT_IBAN}</IBAN></Id><Ccy>EUR</Ccy></Acct>\n"
        + _balance("OPBD", opening, _BOOKED - timedelta(days=7))
        + _balance("CLBD", opening + net, _BOOKED)
    )
    tail = "    </Stmt>\n  </BkToCstmrStmt>\n</Document>\n"
    return (head + "".join(body) + tail).encode()


def _bai_detail(rng: random.Random, reference: str) -> tuple[list[str], int]:
    """One 16 record with its 88 continuations, and its amount: mostly ACH credits (165), some
    wires (195), a few debits (475, checks paid)."""
    roll = rng.random()
    payer = rng.choice(_PAYERS).upper()
    invoice = f"INV-{rng.randint(10_000, 99_999)}"
    amount = rng.randint(1_500, 2_500_000)
    if roll < 0.03:
        check = rng.randint(1000, 99999)
        return [f"16,475,{amount},0,{reference},{check},CHECK PAID/"], amount
    if roll < 0.18:
        lines = [
            f"16,195,{amount},0,{reference},,INCOMING WIRE TRANSFER/",
            f"88,B/O: {payer} ORG=/{rng.randint(10**9, 10**10 - 1)} {payer}/",
            f"88,OBI: PAYMENT {invoice}/",
        ]
        return lines, amount
    customer = f"C{rng.randint(10**6, 10**7 - 1)}"
    lines = [
        f"16,165,{amount},0,{reference},{customer},ACH CREDIT RECEIVED/",
        f"88,ORIG CO NAME:{payer} ORIG ID:{rng.randint(10**9, 10**10 - 1)} ENTRY DESCR:PAYMENT/",
        f"88,REMITTANCE: PAYMENT OF INVOICE {invoice}/",
    ]
    return lines, amount


def bai2(entries: int, *, run: int = 0, seed: int = 2) -> bytes:
    """A BAI2 file of one group and one account with `entries` 16 records, every trailer right."""
    rng = random.Random(seed)
    opening, details, total = 8_400_000_00, [], 0
    for number in range(1, entries + 1):
        lines, amount = _bai_detail(rng, f"R{run:02d}B{number:08d}")
        details.extend(lines)
        total += amount
    account = [f"03,{BAI_ACCOUNT},USD,010,{opening},,,015,{opening + total},,/", *details]
    account_total = opening + (opening + total) + total  # the 03 summaries count, and every 16
    account.append(f"49,{account_total},{len(account) + 1}/")
    group = ["02,PAYRELAYCO,ACMEBANK,1,261130,1800,USD,2/", *account]
    group.append(f"98,{account_total},1,{len(group) + 1}/")
    lines = [f"01,ACMEBANK,PAYRELAYCO,261130,1800,R{run:02d},80,,2/", *group]
    lines.append(f"99,{account_total},1,{len(lines) + 1}/")
    return ("\n".join(lines) + "\n").encode()
