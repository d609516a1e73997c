"""The ledger against a real SQLite file and the real PostgreSQL on 127.0.0.1:5432.

Every behaviour runs on both backends. PostgreSQL tests are isolated by a fresh schema per test
(`Ledger.open(url, schema=...)`, which sets the connections' search_path), dropped afterwards.
They fail, never skip, when the server is not there.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from service.ledger import Claim, Entry, EventKey, History, Ledger, Recorded, async_url
from service.ledger.tables import SCHEMA_VERSION

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
KEY: EventKey = ("acme-bank", "urn:acme:core-banking", "evt-1")


@dataclass(frozen=True)
class Backend:
    """Where one test's ledger lives; `open()` gives another instance (own engine) on the same data."""

    url: str
    schema: str | None = None

    async def open(self) -> Ledger:
        return await Ledger.open(self.url, schema=self.schema)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "sqlite":
        yield Backend(f"sqlite:///{tmp_path}/ledger.db")
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    yield Backend(POSTGRES_URL, schema)
    conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@pytest.fixture
async def ledger(backend: Backend) -> AsyncIterator[Ledger]:
    opened = await backend.open()
    try:
        yield opened
    finally:
        await opened.close()


def recorded(transaction_id: str = "txn_1", invoice_id: str = "INV-1") -> Recorded:
    return Recorded(
        transaction_id=transaction_id,
        invoice_id=invoice_id,
        invoice_status="paid",
        amount_due=0,
        amount=125_000,
        currency="USD",
        recorded_at=datetime(2025, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC),
        confirmation=b'{"payment.recorded": {"id": "c-1"}}',
    )


async def stored(ledger: Ledger, key: EventKey = KEY) -> Entry:
    entry = await ledger.get(key)
    assert entry is not None, f"no ledger entry for {key}"
    return entry


async def claim(ledger: Ledger, owner: str = "w1", key: EventKey = KEY, **kwargs: object) -> Claim:
    options: dict[str, object] = {"lease_seconds": 60.0, "invoice_id": "INV-1"} | kwargs
    return await ledger.claim(key, owner=owner, **options)  # type: ignore[arg-type]


async def test_new_event_is_claimed_with_one_attempt(ledger: Ledger) -> None:
    """A first claim inserts the event in progress, attempt 1, with its invoice and generation."""
    assert await claim(ledger, generation=2) == Claim("claimed", 1)
    entry = await stored(ledger)
    assert (entry.state, entry.attempts, entry.invoice_id, entry.generation) == ("in_progress", 1, "INV-1", 2)


async def test_recorded_event_short_circuits_with_the_stored_outcome(ledger: Ledger) -> None:
    """A claim of a recorded event changes nothing and returns exactly what was stored."""
    await claim(ledger)
    await ledger.record_success(KEY, recorded(), owner="w1")
    assert await claim(ledger, owner="w2") == Claim("recorded", 1, recorded())
    entry = await stored(ledger)
    assert (entry.state, entry.attempts) == ("recorded", 1)


async def test_live_lease_of_another_owner_is_busy(ledger: Ledger) -> None:
    """Another owner inside the lease gets "busy" and takes nothing."""
    await claim(ledger, owner="w1")
    assert await claim(ledger, owner="w2") == Claim("busy", 1)
    entry = await stored(ledger)
    assert entry.attempts == 1


async def test_owner_reclaims_its_own_lease(ledger: Ledger) -> None:
    """The lease holder claiming again (its own retry) is a new attempt."""
    await claim(ledger, owner="w1")
    assert await claim(ledger, owner="w1") == Claim("claimed", 2)


async def test_expired_lease_is_taken_over(ledger: Ledger) -> None:
    """Once the holder's lease has run out (it crashed), another owner takes the event."""
    await claim(ledger, owner="w1", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    assert await claim(ledger, owner="w2") == Claim("claimed", 2)
    # ...and now w2 holds a live lease against w1.
    assert await claim(ledger, owner="w1") == Claim("busy", 2)


async def test_transient_failure_is_reclaimed_for_retry(ledger: Ledger) -> None:
    """A `failed` event (waiting for a retry) is claimable by any owner, with the attempt counted."""
    await claim(ledger, owner="w1")
    await ledger.record_failure(KEY, owner="w1", error="503 from Chargebee", reason=None, final=False)
    entry = await stored(ledger)
    assert (entry.state, entry.last_error) == ("failed", "503 from Chargebee")
    assert await claim(ledger, owner="w2") == Claim("claimed", 2)


async def test_dead_lettered_event_is_reclaimed_by_a_replay_with_its_generation(ledger: Ledger) -> None:
    """A replay takes a dead-lettered event, records the new generation and a corrected invoice."""
    await claim(ledger, owner="w1", invoice_id=None)
    await ledger.record_failure(
        KEY, owner="w1", error="no invoice in remittance", reason="unmatched_invoice", final=True
    )
    entry = await stored(ledger)
    assert (entry.state, entry.reason) == ("dead_lettered", "unmatched_invoice")
    assert await claim(ledger, owner="w2", invoice_id="INV-9", generation=1) == Claim("claimed", 2)
    entry = await stored(ledger)
    assert (entry.state, entry.generation, entry.invoice_id) == ("in_progress", 1, "INV-9")


async def test_record_success_keeps_the_first_outcome(ledger: Ledger) -> None:
    """Recording again, even with different data, never overwrites what was recorded first."""
    await claim(ledger)
    await ledger.record_success(KEY, recorded("txn_first"), owner="w1")
    await ledger.record_success(KEY, recorded("txn_first"), owner="w1")
    await ledger.record_success(KEY, recorded("txn_second", invoice_id="INV-2"), owner="w2")
    result = await claim(ledger, owner="w3")
    assert result == Claim("recorded", 1, recorded("txn_first"))


async def test_record_failure_never_downgrades_a_recorded_event(ledger: Ledger) -> None:
    """A late failure report for a recorded event leaves it recorded."""
    await claim(ledger)
    await ledger.record_success(KEY, recorded(), owner="w1")
    await ledger.record_failure(KEY, owner="w1", error="timeout", reason=None, final=True)
    entry = await stored(ledger)
    assert entry.state == "recorded" and entry.last_error is None


async def test_failure_from_an_owner_that_lost_its_lease_is_ignored(ledger: Ledger) -> None:
    """A stale owner's failure does not free an event another owner is working on."""
    await claim(ledger, owner="w1", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    await claim(ledger, owner="w2")
    await ledger.record_failure(KEY, owner="w1", error="timeout", reason=None, final=False)
    entry = await stored(ledger)
    assert entry.state == "in_progress"
    assert await claim(ledger, owner="w3") == Claim("busy", 2)


async def test_failure_before_any_claim_is_kept_and_replayable(ledger: Ledger) -> None:
    """An event dead-lettered without a claim (say, invalid) is listed with 0 attempts; a replay claims it."""
    await ledger.record_failure(KEY, owner="w1", error="bad amount", reason="invalid_event", final=True)
    entry = await stored(ledger)
    assert (entry.state, entry.attempts, entry.reason) == ("dead_lettered", 0, "invalid_event")
    assert await claim(ledger, owner="w2", generation=1) == Claim("claimed", 1)


async def test_concurrent_claims_have_exactly_one_winner(backend: Backend, ledger: Ledger) -> None:
    """20 owners claiming one event at once, through two ledgers (engines) on one database: one wins."""
    other = await backend.open()
    try:
        results = await asyncio.gather(*(claim(ledger if i % 2 else other, owner=f"w{i}") for i in range(20)))
    finally:
        await other.close()
    assert sorted(r.status for r in results) == ["busy"] * 19 + ["claimed"]
    assert all(r.attempts == 1 for r in results)


async def test_writes_in_flight_together_share_one_commit_and_fail_alone(ledger: Ledger) -> None:
    """Concurrent writes are committed together; one that fails fails alone, the others stand."""

    def broken(conn: Any) -> None:
        conn.execute(sa.text("SELECT * FROM no_such_table"))

    keys = [("acme-bank", "urn:acme", f"evt-{i}") for i in range(5)]
    results = await asyncio.gather(
        *(claim(ledger, key=key) for key in keys[:2]),
        ledger._grouped(broken),
        *(claim(ledger, key=key) for key in keys[2:]),
        return_exceptions=True,
    )
    assert [r.status for r in results if isinstance(r, Claim)] == ["claimed"] * 5
    assert sum(isinstance(r, sa.exc.SQLAlchemyError) for r in results) == 1
    for key in keys:
        assert (await stored(ledger, key)).state == "in_progress"


async def test_cleanup_deletes_entries_past_retention(ledger: Ledger) -> None:
    """Entries of any state not updated within the retention are deleted; newer ones stay."""
    old, new = ("acme-bank", "urn:acme", "old"), ("acme-bank", "urn:acme", "new")
    await claim(ledger, key=old)
    await ledger.record_success(old, recorded(), owner="w1")
    await claim(ledger, key=new)
    old_at, new_at = (await stored(ledger, old)).updated_at, (await stored(ledger, new)).updated_at
    now = old_at + timedelta(days=30) + (new_at - old_at) / 2
    assert await ledger.cleanup(retention_days=30, now=now) == 1
    assert await ledger.get(old) is None and await ledger.get(new) is not None
    assert await ledger.cleanup(retention_days=30, now=now) == 0


async def test_find_by_invoice_and_by_event_id(ledger: Ledger) -> None:
    """find() filters by invoice id, by CloudEvent id, or by both."""
    a, b, c = (("acme-bank", "urn:acme", f"evt-{n}") for n in "abc")
    await claim(ledger, key=a, invoice_id="INV-1")
    await claim(ledger, key=b, invoice_id="INV-1")
    await claim(ledger, key=c, invoice_id="INV-2")
    assert {e.key for e in await ledger.find(invoice_id="INV-1")} == {a, b}
    assert [e.key for e in await ledger.find(event_id="evt-c")] == [c]
    assert await ledger.find(invoice_id="INV-1", event_id="evt-c") == []
    assert len(await ledger.find(invoice_id="INV-1", limit=1)) == 1


async def test_recent_lists_newest_updated_first(ledger: Ledger) -> None:
    """recent() orders by last update, so an older event updated later comes first."""
    keys = [("acme-bank", "urn:acme", f"evt-{n}") for n in range(3)]
    for key in keys:
        await claim(ledger, key=key)
    await ledger.record_success(keys[0], recorded(), owner="w1")
    assert [e.key for e in await ledger.recent()] == [keys[0], keys[2], keys[1]]
    assert [e.key for e in await ledger.recent(limit=2)] == [keys[0], keys[2]]


async def test_outcomes_since_counts_states_and_reasons_updated_since(ledger: Ledger) -> None:
    """outcomes_since() counts entries per (state, reason) among those updated at or after a time."""
    keys = [("acme-bank", "urn:acme", f"evt-{n}") for n in range(4)]
    for key in keys:
        await claim(ledger, key=key)
    await ledger.record_success(keys[0], recorded(), owner="w1")
    await ledger.record_failure(keys[1], owner="w1", error="503", reason=None, final=False)
    await ledger.record_failure(keys[2], owner="w1", error="404", reason="invoice_not_found", final=True)
    assert await ledger.outcomes_since(datetime.now(UTC) - timedelta(minutes=1)) == {
        ("recorded", None): 1,
        ("failed", None): 1,
        ("dead_lettered", "invoice_not_found"): 1,
        ("in_progress", None): 1,
    }
    assert await ledger.outcomes_since(datetime.now(UTC) + timedelta(seconds=1)) == {}


async def test_times_are_aware_utc(ledger: Ledger) -> None:
    """Every time read back is timezone-aware UTC, whatever the backend stores."""
    await claim(ledger)
    await ledger.record_success(KEY, recorded(), owner="w1")
    entry = await stored(ledger)
    result = await claim(ledger)
    assert result.recorded is not None
    for moment in (entry.created_at, entry.updated_at, result.recorded.recorded_at):
        assert moment.utcoffset() == timedelta(0)
    assert abs(entry.updated_at - datetime.now(UTC)) < timedelta(minutes=1)


async def test_naive_times_are_refused(ledger: Ledger) -> None:
    """A naive datetime is ambiguous, so the ledger refuses it rather than guess its zone."""
    with pytest.raises(ValueError, match="naive"):
        await ledger.outcomes_since(datetime.now())


async def test_audit_is_appended_and_listed_newest_first(ledger: Ledger) -> None:
    """Audit records come back newest first with all their fields."""
    await ledger.append_audit(
        actor="alice", action="replay", selector="reason=x", count=3, details={"a": [1]}
    )
    await ledger.append_audit(actor="bob", action="purge", selector="all", count=7)
    records = await ledger.audit()
    assert [(r.actor, r.action, r.selector, r.count, r.details) for r in records] == [
        ("bob", "purge", "all", 7, {}),
        ("alice", "replay", "reason=x", 3, {"a": [1]}),
    ]
    assert records[0].id > records[1].id and records[0].at.utcoffset() == timedelta(0)
    assert len(await ledger.audit(limit=1)) == 1


async def test_reopening_keeps_the_data(backend: Backend, ledger: Ledger) -> None:
    """Opening an existing ledger again creates nothing new and sees the stored outcomes."""
    await claim(ledger)
    await ledger.record_success(KEY, recorded(), owner="w1")
    again = await backend.open()
    try:
        assert await claim(again, owner="w2") == Claim("recorded", 1, recorded())
    finally:
        await again.close()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///payrelay-ledger.db", "sqlite+aiosqlite:///payrelay-ledger.db"),
        ("sqlite:////var/lib/payrelay/ledger.db", "sqlite+aiosqlite:////var/lib/payrelay/ledger.db"),
        ("postgresql://payrelay@db:5432/payrelay", "postgresql+asyncpg://payrelay@db:5432/payrelay"),
        ("postgres://u:p@db/payrelay", "postgresql+asyncpg://u:p@db/payrelay"),
    ],
)
def test_ledger_urls_become_async_driver_urls(url: str, expected: str) -> None:
    """sqlite:// and postgresql:// (or postgres://) URLs map to the aiosqlite and asyncpg drivers."""
    assert async_url(url) == expected


@pytest.mark.parametrize(
    "url", ["mysql://u@db/x", "redis://127.0.0.1:6379/0", "not a url", "sqlite://", "sqlite://host/x.db"]
)
def test_unsupported_ledger_url_is_a_clear_value_error(url: str) -> None:
    """Anything but a SQLite file or a PostgreSQL URL is a ValueError naming the accepted forms."""
    with pytest.raises(ValueError, match=r"sqlite:///path/to/file\.db"):
        async_url(url)


# -- reconciliation: what a claim tells of earlier attempts ---------------------------------------


async def history(ledger: Ledger, owner: str, **kwargs: object) -> History:
    result = await claim(ledger, owner=owner, **kwargs)
    assert result.status == "claimed" and result.history is not None, result
    return result.history


async def test_a_first_claim_has_nothing_to_reconcile(ledger: Ledger) -> None:
    """A new payment of generation 0 has no earlier attempt to look for, and its key is new."""
    before = datetime.now(UTC)
    seen = await history(ledger, "w1")
    assert (seen.reconcile, seen.unreadable_200) == (False, False)
    assert before <= seen.key_first_used_at <= datetime.now(UTC)


async def test_a_definitive_failure_leaves_nothing_to_reconcile(ledger: Ledger) -> None:
    """A 429 or 4xx verdict means Chargebee recorded nothing: the retry calls without looking first."""
    first = await history(ledger, "w1")
    await ledger.record_failure(KEY, owner="w1", error="429", reason=None, final=False)
    again = await history(ledger, "w2")
    assert again.reconcile is False
    assert again.key_first_used_at == first.key_first_used_at  # same generation, same key


async def test_a_maybe_recorded_failure_is_reconciled_on_every_later_attempt(ledger: Ledger) -> None:
    """After a lost answer every later claim says reconcile, even after a definitive failure since."""
    await history(ledger, "w1")
    await ledger.record_failure(
        KEY, owner="w1", error="timeout", reason=None, final=False, maybe_recorded=True
    )
    assert (await history(ledger, "w2")).reconcile is True
    await ledger.record_failure(KEY, owner="w2", error="429", reason=None, final=False)
    assert (await history(ledger, "w3")).reconcile is True


async def test_an_unreadable_200_is_remembered(ledger: Ledger) -> None:
    """Chargebee's unreadable 200 stays on the payment, so not finding it later is outcome_unknown."""
    await history(ledger, "w1")
    await ledger.record_failure(
        KEY,
        owner="w1",
        error="unreadable 200",
        reason=None,
        final=False,
        maybe_recorded=True,
        unreadable_200=True,
    )
    seen = await history(ledger, "w2")
    assert (seen.reconcile, seen.unreadable_200) == (True, True)


async def test_a_replay_forgets_the_unreadable_200_but_still_reconciles(ledger: Ledger) -> None:
    """After outcome_unknown a person replays: it looks in Chargebee again, and sends if not there."""
    await history(ledger, "w1")
    await ledger.record_failure(
        KEY, owner="w1", error="outcome unknown", reason="outcome_unknown", final=True,
        maybe_recorded=True, unreadable_200=True,
    )  # fmt: skip
    seen = await history(ledger, "w2", generation=1)
    assert (seen.reconcile, seen.unreadable_200) == (True, False)


async def test_taking_over_a_lapsed_lease_reconciles(ledger: Ledger) -> None:
    """The holder of a lapsed lease may have called Chargebee and died: its successor looks first."""
    await history(ledger, "w1", lease_seconds=0.01)
    await asyncio.sleep(0.05)
    assert (await history(ledger, "w2")).reconcile is True


async def test_the_owner_reclaiming_its_own_lease_does_not_reconcile(ledger: Ledger) -> None:
    """Its own earlier claim is not a crash: the same delivery trying again knows what it did."""
    await history(ledger, "w1")
    assert (await history(ledger, "w1")).reconcile is False


async def test_a_replay_generation_reconciles_and_gets_a_new_key(ledger: Ledger) -> None:
    """A replay (new generation) looks in Chargebee first, and its idempotency key is new."""
    first = await history(ledger, "w1")
    await ledger.record_failure(KEY, owner="w1", error="retries", reason="retries_exhausted", final=True)
    await asyncio.sleep(0.01)
    replay = await history(ledger, "w2", generation=1)
    assert replay.reconcile is True
    assert replay.key_first_used_at > first.key_first_used_at


async def test_a_replay_whose_row_retention_deleted_reconciles(ledger: Ledger) -> None:
    """A replay of an event the ledger no longer knows (deleted by retention) looks first too."""
    assert (await history(ledger, "w1", generation=3)).reconcile is True


# -- parts, leases, the outbox, plans -----------------------------------------------------------


async def test_parts_of_one_event_are_claimed_and_recorded_on_their_own(ledger: Ledger) -> None:
    """A split event has a payment per invoice: one recorded, the other still claimable."""
    assert (await claim(ledger, part="INV-1", invoice_id="INV-1")).status == "claimed"
    assert (await claim(ledger, owner="w2", part="INV-2", invoice_id="INV-2")).status == "claimed"
    await ledger.record_success(KEY, recorded("txn_a", "INV-1"), owner="w1", part="INV-1")
    assert await claim(ledger, owner="w3", part="INV-1") == Claim("recorded", 1, recorded("txn_a", "INV-1"))
    await ledger.record_failure(KEY, owner="w2", error="503", reason=None, final=False, part="INV-2")
    assert (await claim(ledger, owner="w3", part="INV-2")).status == "claimed"
    assert await ledger.get(KEY) is None
    assert {(e.part, e.state) for e in await ledger.find(event_id=KEY[2])} == {
        ("INV-1", "recorded"),
        ("INV-2", "in_progress"),
    }


async def test_renew_extends_only_the_holders_lease(ledger: Ledger) -> None:
    """The holder renews; another owner, or anyone after the payment is recorded, cannot."""
    await claim(ledger, owner="w1", lease_seconds=0.05)
    assert await ledger.renew(KEY, owner="w1", lease_seconds=60) is True
    await asyncio.sleep(0.1)
    assert (await claim(ledger, owner="w2")).status == "busy"  # the renewed lease holds
    assert await ledger.renew(KEY, owner="w2", lease_seconds=60) is False
    await ledger.record_success(KEY, recorded(), owner="w1")
    assert await ledger.renew(KEY, owner="w1", lease_seconds=60) is False


async def test_recorded_payments_wait_in_the_outbox_until_confirmed(ledger: Ledger) -> None:
    """A recorded payment is unconfirmed until mark_confirmed; then the drainer no longer sees it."""
    await claim(ledger)
    await ledger.record_success(KEY, recorded(), owner="w1")
    [waiting] = await ledger.unconfirmed(older_than=0)
    assert (waiting.key, waiting.part, waiting.confirmation) == (KEY, "", recorded().confirmation)
    assert await ledger.unconfirmed(older_than=3600) == []
    await ledger.mark_confirmed(KEY)
    assert await ledger.unconfirmed(older_than=0) == []
    assert (await stored(ledger)).confirmed_at is not None


async def test_owned_elsewhere_names_transactions_another_payment_holds(ledger: Ledger) -> None:
    """A transaction the ledger holds for another payment is not this payment's."""
    other: EventKey = ("acme-bank", "urn:acme", "evt-other")
    await claim(ledger, key=other)
    await ledger.record_success(other, recorded("txn_taken"), owner="w1")
    assert await ledger.owned_elsewhere(["txn_taken", "txn_free"], KEY) == {"txn_taken"}
    assert await ledger.owned_elsewhere(["txn_taken"], other) == set()
    assert await ledger.owned_elsewhere([], KEY) == set()


async def test_the_first_plan_of_an_event_is_kept(ledger: Ledger) -> None:
    """Two plans proposed for one event: both callers get the first, whatever the second said."""
    first = [("INV-1", 100), ("INV-2", 50)]
    assert await ledger.plan(KEY, first) == first
    assert await ledger.plan(KEY, [("INV-2", 150)]) == first
    assert await ledger.stored_plan(KEY) == first
    assert await ledger.stored_plan(("acme-bank", "urn:acme", "nothing")) is None


async def test_cleanup_removes_a_plan_with_the_last_entry_of_its_event(ledger: Ledger) -> None:
    """A plan outlives retention while an entry of its event remains, and goes with the last one."""
    await ledger.plan(KEY, [("INV-1", 100)])
    await claim(ledger, part="INV-1")
    later = datetime.now(UTC) + timedelta(days=31)
    await ledger.record_failure(
        KEY, owner="w1", error="x", reason="invoice_not_found", final=True, part="INV-1"
    )
    assert await ledger.cleanup(retention_days=30, now=later) == 1
    assert await ledger.stored_plan(KEY) is None


# -- the database itself ------------------------------------------------------------------------


async def test_sqlite_syncs_every_commit(tmp_path: Path) -> None:
    """synchronous=FULL: an acknowledged outcome survives a power cut, not only a process crash."""
    opened = await Ledger.open(f"sqlite:///{tmp_path}/ledger.db")
    try:
        async with opened._engine.connect() as conn:
            assert await conn.scalar(sa.text("PRAGMA synchronous")) == 2  # FULL
    finally:
        await opened.close()


@pytest.mark.postgres
async def test_a_hung_postgresql_fails_the_write_instead_of_waiting_for_ever() -> None:
    """A table locked by someone else: the claim gives up after the statement timeout."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    opened = await Ledger.open(POSTGRES_URL, schema=schema, statement_timeout=1.0)
    blocker = await asyncpg.connect(POSTGRES_URL, timeout=5)
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(f'LOCK TABLE "{schema}".payrelay_ledger IN ACCESS EXCLUSIVE MODE')
        started = asyncio.get_running_loop().time()
        with pytest.raises(sa.exc.DBAPIError, match="statement timeout"):
            await claim(opened)
        assert asyncio.get_running_loop().time() - started < 5
        await transaction.rollback()
    finally:
        await opened.close()
        await blocker.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await blocker.close()


# The ledger table as version 1 shipped it, to test the migration from it.
_V1 = sa.MetaData()
_V1_LEDGER = sa.Table(
    "payrelay_ledger",
    _V1,
    *(sa.Column(name, sa.Text, primary_key=True) for name in ("origin", "source", "event_id")),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("owner", sa.Text),
    sa.Column("lease_until", sa.DateTime(timezone=True)),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("generation", sa.Integer, nullable=False),
    sa.Column("invoice_id", sa.Text),
    sa.Column("transaction_id", sa.Text),
    sa.Column("invoice_status", sa.Text),
    sa.Column("amount_due", sa.BigInteger),
    sa.Column("amount", sa.BigInteger),
    sa.Column("currency", sa.String(3)),
    sa.Column("recorded_at", sa.DateTime(timezone=True)),
    sa.Column("confirmation", sa.LargeBinary),
    sa.Column("last_error", sa.Text),
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_payrelay_ledger_updated_at", "updated_at"),
    sa.Index("ix_payrelay_ledger_invoice_id", "invoice_id"),
    sa.Index("ix_payrelay_ledger_event_id", "event_id"),
)
sa.Table("payrelay_schema", _V1, sa.Column("version", sa.Integer, primary_key=True))


async def test_a_version_1_ledger_is_migrated_keeping_every_row(backend: Backend) -> None:
    """Rows of a version-1 ledger survive as whole-event payments; unfinished ones will reconcile."""
    from sqlalchemy.ext.asyncio import create_async_engine

    connect_args = {"server_settings": {"search_path": backend.schema}} if backend.schema else {}
    if backend.schema:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        await conn.execute(f'CREATE SCHEMA "{backend.schema}"')
        await conn.close()
    engine = create_async_engine(async_url(backend.url), connect_args=connect_args)
    now = datetime.now(UTC)
    row = {"origin": "acme-bank", "source": "urn:acme", "attempts": 1, "generation": 0, "created_at": now}
    async with engine.begin() as conn:
        await conn.run_sync(_V1.create_all)
        await conn.execute(sa.text("INSERT INTO payrelay_schema (version) VALUES (1)"))
        await conn.execute(
            _V1_LEDGER.insert(),
            {**row, "event_id": "done", "state": "recorded", "transaction_id": "txn_9", "invoice_id": "INV-9",
             "invoice_status": "paid", "amount_due": 0, "amount": 500, "currency": "USD",
             "recorded_at": now, "confirmation": b"[]", "updated_at": now},
        )  # fmt: skip
        await conn.execute(
            _V1_LEDGER.insert(),
            {**row, "event_id": "midway", "state": "failed", "invoice_id": "INV-8", "updated_at": now},
        )
    await engine.dispose()
    migrated = await backend.open()
    try:
        done = await migrated.get(("acme-bank", "urn:acme", "done"))
        midway = await migrated.get(("acme-bank", "urn:acme", "midway"))
        assert done is not None and midway is not None
        assert (done.part, done.state, done.transaction_id, done.reconcile) == (
            "",
            "recorded",
            "txn_9",
            False,
        )
        assert done.confirmed_at is not None
        assert (midway.state, midway.invoice_id, midway.reconcile) == ("failed", "INV-8", True)
        assert await migrated.unconfirmed(older_than=0) == []
        async with migrated._engine.connect() as conn:
            assert await conn.scalar(sa.text("SELECT max(version) FROM payrelay_schema")) == SCHEMA_VERSION
    finally:
        await migrated.close()
    again = await backend.open()  # a second start finds the current version and changes nothing
    await again.close()
