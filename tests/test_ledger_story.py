"""Where each payment came from (schema v3): its reference number and its bank file, on both backends.

The ledger fixtures are test_ledger's (a SQLite file, and a fresh schema of the PostgreSQL on
127.0.0.1:5432); the consumer's reading of an event's story is tested on validated events.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from consumers.recording import provenance
from service.events import validate
from service.ledger import Ledger, Provenance, async_url
from service.ledger.tables import PROVENANCE_COLUMNS, SCHEMA_VERSION
from tests.factories import check, deposit
from tests.test_ledger import (
    _V1,
    _V1_LEDGER,
    KEY,
    Backend,
    backend,  # noqa: F401  (a fixture)
    claim,
    ledger,  # noqa: F401  (a fixture)
    recorded,
    stored,
)

CAMT = Provenance("ACSR-0042", "whk_2Yb9", "camt.054", "Ntfctn[1]/Ntry[3]/TxDtls[2]")
NEW_INDEXES = {"ix_payrelay_ledger_reference_number", "ix_payrelay_ledger_file_id"}


def from_file(**attributes: Any) -> dict[str, Any]:
    """A bank.deposit as a bank-file parser makes it, with the file's extension attributes."""
    story = {"payrelayfile": "whk_2Yb9", "payrelayformat": "camt.054", "payrelayentry": "Ntry[3]"}
    return deposit(bank_reference="ACSR-0042") | story | attributes


async def ledger_shape(conn: AsyncConnection) -> tuple[set[str], set[str]]:
    """(column names, index names) of the ledger table as the database has it."""

    def inspect(sync: sa.Connection) -> tuple[set[str], set[str]]:
        inspector = sa.inspect(sync)
        columns = {c["name"] for c in inspector.get_columns("payrelay_ledger")}
        indexes = {str(i["name"]) for i in inspector.get_indexes("payrelay_ledger")}
        return columns, indexes

    return await conn.run_sync(inspect)


# -- the consumer's reading of an event ---------------------------------------------------------


def test_a_file_events_story_is_its_reference_and_its_file_attributes() -> None:
    """provenance() takes the payment's reference number and the payrelayfile/format/entry attributes."""
    assert provenance(validate(from_file())) == Provenance("ACSR-0042", "whk_2Yb9", "camt.054", "Ntry[3]")


def test_an_event_from_no_file_has_only_its_reference() -> None:
    """A check.scan sent as a CloudEvent has its check number as reference and no file."""
    assert provenance(validate(check(check_number="10442"))) == Provenance("10442")


def test_untrusted_file_attributes_are_text_cut_to_200_characters_or_nothing() -> None:
    """A non-string or empty attribute is ignored; a long one is kept to its first 200 characters."""
    event = validate(from_file(payrelayfile="F" * 500, payrelayformat=7, payrelayentry=""))
    assert provenance(event) == Provenance("ACSR-0042", "F" * 200, None, None)


# -- the ledger -----------------------------------------------------------------------------


async def test_the_first_claim_stores_the_payments_story(ledger: Ledger) -> None:  # noqa: F811
    """A claim with a Provenance stores it on the new row; the entry and its JSON carry it."""
    await claim(ledger, provenance=CAMT)
    entry = await stored(ledger)
    assert (entry.reference_number, entry.file_id, entry.file_format, entry.file_entry) == (
        "ACSR-0042",
        "whk_2Yb9",
        "camt.054",
        "Ntfctn[1]/Ntry[3]/TxDtls[2]",
    )
    shown = entry.as_dict()
    assert shown["reference_number"] == "ACSR-0042"
    assert shown["file"] == {"id": "whk_2Yb9", "format": "camt.054", "entry": "Ntfctn[1]/Ntry[3]/TxDtls[2]"}


async def test_a_later_claim_never_overwrites_the_story(ledger: Ledger) -> None:  # noqa: F811
    """The same transaction claimed again from a later file (camt.053 after camt.054) keeps the first."""
    await claim(ledger, provenance=CAMT)
    await ledger.record_failure(KEY, owner="w1", error="503", reason=None, final=False)
    statement = Provenance("ACSR-0042", "whk_9Zz1", "camt.053", "Stmt[1]/Ntry[7]")
    assert (await claim(ledger, owner="w2", provenance=statement)).status == "claimed"
    await ledger.record_success(KEY, recorded(), owner="w2")
    entry = await stored(ledger)
    assert (entry.state, entry.file_id, entry.file_format) == ("recorded", "whk_2Yb9", "camt.054")


async def test_a_row_written_before_any_claim_gets_its_story_from_the_first_claim(
    ledger: Ledger,  # noqa: F811
) -> None:
    """A failure recorded before any claim stores no story; the replay's claim fills it in."""
    await ledger.record_failure(KEY, owner="w1", error="bad", reason="invalid_event", final=True)
    assert (await stored(ledger)).file_id is None
    await claim(ledger, generation=1, provenance=CAMT)
    assert (await stored(ledger)).file_id == "whk_2Yb9"


async def test_a_claim_without_a_story_stores_none(ledger: Ledger) -> None:  # noqa: F811
    """Without a Provenance, the four columns stay empty and the JSON says there is no file."""
    await claim(ledger)
    entry = await stored(ledger)
    assert (entry.reference_number, entry.file_id) == (None, None)
    assert entry.as_dict()["file"] is None


async def test_find_by_reference_number_and_by_file_id(ledger: Ledger) -> None:  # noqa: F811
    """find() filters by reference number, by file id, and by both with the other filters."""
    a, b, c = (("acme-bank", "urn:payrelay:account:6789-ab", f"evt-{n}") for n in "abc")
    await claim(ledger, key=a, provenance=Provenance("REF-A", "file-1", "bai2", "line 14"))
    await claim(ledger, key=b, provenance=Provenance("REF-B", "file-1", "bai2", "line 16"))
    await claim(ledger, key=c, invoice_id="INV-2", provenance=Provenance("REF-A", "file-2", "bai2", "line 3"))
    assert {e.key for e in await ledger.find(reference_number="REF-A")} == {a, c}
    assert {e.key for e in await ledger.find(file_id="file-1")} == {a, b}
    assert [e.key for e in await ledger.find(reference_number="REF-A", file_id="file-1")] == [a]
    assert await ledger.find(file_id="file-2", invoice_id="INV-1") == []
    assert await ledger.find(reference_number="REF-C") == []


# -- the migration --------------------------------------------------------------------------


async def as_version_2(old: Ledger) -> None:
    """Take version 3's columns and indexes out again: the ledger as version 2 left it."""
    async with old._engine.begin() as conn:
        for index in NEW_INDEXES:
            await conn.execute(sa.text(f"DROP INDEX {index}"))
        for name in PROVENANCE_COLUMNS:
            await conn.execute(sa.text(f"ALTER TABLE payrelay_ledger DROP COLUMN {name}"))
        await conn.execute(sa.text("UPDATE payrelay_schema SET version = 2"))
        columns, indexes = await ledger_shape(conn)
    assert not columns & set(PROVENANCE_COLUMNS) and not indexes & NEW_INDEXES


async def test_a_version_2_ledger_gains_the_story_columns_and_keeps_its_rows(backend: Backend) -> None:  # noqa: F811
    """Opening a v2 ledger adds the four columns and their indexes in place; old rows have no story."""
    old = await backend.open()
    try:
        await claim(old)
        await old.record_success(KEY, recorded(), owner="w1")
        await as_version_2(old)
    finally:
        await old.close()
    migrated = await backend.open()
    try:
        async with migrated._engine.connect() as conn:
            columns, indexes = await ledger_shape(conn)
            version = await conn.scalar(sa.text("SELECT max(version) FROM payrelay_schema"))
        assert set(PROVENANCE_COLUMNS) <= columns and NEW_INDEXES <= indexes
        assert version == SCHEMA_VERSION == 4
        entry = await stored(migrated)
        assert (entry.state, entry.transaction_id, entry.file_id) == ("recorded", "txn_1", None)
        other = ("acme-bank", "urn:acme", "evt-after")
        await claim(migrated, key=other, provenance=CAMT)
        assert [e.key for e in await migrated.find(file_id="whk_2Yb9")] == [other]
    finally:
        await migrated.close()
    again = await backend.open()  # a second start finds version 3 and changes nothing
    await again.close()


async def test_a_version_1_ledger_is_migrated_all_the_way(backend: Backend) -> None:  # noqa: F811
    """A v1 ledger, rebuilt as today's table, has the story columns and indexes without a v3 step."""
    connect_args = {"server_settings": {"search_path": backend.schema}} if backend.schema else {}
    engine = create_async_engine(async_url(backend.url), connect_args=connect_args)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        if backend.schema:
            await conn.execute(sa.text(f'CREATE SCHEMA "{backend.schema}"'))
        await conn.run_sync(_V1.create_all)
        await conn.execute(sa.text("INSERT INTO payrelay_schema (version) VALUES (1)"))
        await conn.execute(
            _V1_LEDGER.insert(),
            {"origin": KEY[0], "source": KEY[1], "event_id": KEY[2], "state": "failed", "attempts": 1,
             "generation": 0, "invoice_id": "INV-1", "created_at": now, "updated_at": now},
        )  # fmt: skip
    await engine.dispose()
    migrated = await backend.open()
    try:
        async with migrated._engine.connect() as conn:
            columns, indexes = await ledger_shape(conn)
        assert set(PROVENANCE_COLUMNS) <= columns and NEW_INDEXES <= indexes
        await claim(migrated, provenance=CAMT)
        assert (await stored(migrated)).reference_number == "ACSR-0042"
    finally:
        await migrated.close()
