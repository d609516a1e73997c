"""Dead letters kept in the ledger database: the keeper, selection in SQL, exact previews, settling.

On the real RabbitMQ and on both ledger backends. The CLI around this is in `test_dlq_cli.py`,
the pure half (decode, edits, replay headers) in `test_dead_letters.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from service import messages
from service.broker import Broker, declare_once
from service.dead_letter_queue import Keeper
from service.dead_letter_store import DeadLetterStore
from service.dead_letters import EditError, Filter
from service.ledger import Ledger
from service.ledger.letters import Incoming, letter_number
from service.metrics import create_metrics
from service.topology import Topology
from tests.conftest import AMQP_URL, POSTGRES_URL, make_settings
from tests.factories import check, new_deposit
from tests.pipeline import put_dead_letter, until
from tests.proxy import TcpProxy
from tests.test_ledger import recorded

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

ALL = ("dead", "replayed", "purged")
NOW = datetime.now(UTC)


@dataclass
class Desk:
    topology: Topology
    broker: Broker
    ledger: Ledger
    keeper: Keeper
    store: DeadLetterStore


@contextlib.asynccontextmanager
async def desk(prefix: str, ledger_url: str) -> AsyncIterator[Desk]:
    settings = make_settings(prefix, ledger_url=ledger_url)
    topology = settings.broker.topology()
    await declare_once(AMQP_URL, topology)
    broker = settings.broker.broker("test-dead-letters")
    await broker.start(wait=5.0)
    ledger = await settings.ledger.open()
    keeper = Keeper(broker, topology, ledger, create_metrics())
    try:
        yield Desk(topology, broker, ledger, keeper, DeadLetterStore(keeper, broker, topology, ledger))
    finally:
        await ledger.close()
        await broker.stop()


@pytest.fixture
async def d(prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[Desk]:
    async with desk(prefix, ledger_url) as opened:
        yield opened


async def queue_depth(amqp: aio_pika.abc.AbstractConnection, name: str) -> int:
    channel = await amqp.channel()
    queue = await channel.declare_queue(name, passive=True)
    await channel.close()
    return queue.declaration_result.message_count or 0


async def work_queue(amqp: aio_pika.abc.AbstractConnection, prefix: str) -> list[dict[str, Any]]:
    channel = await amqp.channel()
    queue = await channel.get_queue(f"{prefix}.record-payment")
    got = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        got.append(orjson.loads(message.body))
    await channel.close()
    return got


# -- the keeper ------------------------------------------------------------------------------


async def test_the_keeper_stores_each_letter_then_acks_it_and_looking_changes_nothing(
    d: Desk, prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Taken in: the queue is empty, the letters are rows with ids; browsing twice reads the same."""
    events = [new_deposit(None), new_deposit("INV-7")]
    for event in events:
        await put_dead_letter(amqp, prefix, event)
    assert await d.keeper.take_in() == 2
    assert await queue_depth(amqp, d.topology.dead_letter) == 0
    first = await d.store.browse()
    assert [letter.event_id for letter in first] == [e["id"] for e in events]
    assert all(letter_number(letter.id) is not None and letter.state == "dead" for letter in first)
    assert await d.store.browse() == first
    assert await d.keeper.count() == 2
    assert d.keeper.metrics is not None and d.keeper.metrics.dead_letters_waiting._value.get() == 2


async def test_a_letter_taken_in_twice_is_kept_once(d: Desk) -> None:
    """A crash between the commit and the ack: the letter comes again and is not a second row."""
    headers = {messages.REASON: "unmatched_invoice", messages.FAILED_AT: "2026-11-25T10:00:00Z"}
    body = orjson.dumps(new_deposit(None))
    first = Incoming("evt-x", headers, body)
    again = Incoming("evt-x", headers | {"x-delivery-count": 1}, body)
    assert await d.keeper.table.keep([first], NOW) == 1
    assert await d.keeper.table.keep([again], NOW) == 0
    later = Incoming("evt-x", headers | {messages.FAILED_AT: "2026-11-26T10:00:00Z"}, body)
    assert await d.keeper.table.keep([later], NOW) == 1  # dead-lettered again: a letter of its own


async def test_deployments_sharing_a_database_see_their_own_letters(
    d: Desk, prefix: str, amqp: aio_pika.abc.AbstractConnection, ledger_url: str
) -> None:
    await put_dead_letter(amqp, prefix, new_deposit(None))
    other = f"{prefix}b"
    async with desk(other, ledger_url) as second:
        await put_dead_letter(amqp, other, new_deposit(None))
        await put_dead_letter(amqp, other, new_deposit(None))
        assert len(await d.store.browse()) == 1
        assert len(await second.store.browse()) == 2


async def test_the_keeper_pauses_while_the_database_is_down_and_loses_nothing(
    prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """PostgreSQL unreachable while letters arrive: they wait in the queue, then all are kept."""
    database = TcpProxy(target_port=5432)
    await database.start()
    url = POSTGRES_URL.replace(":5432/", f":{database.port}/")
    try:
        async with desk(prefix, url) as opened:
            keeping = asyncio.create_task(opened.keeper.keep_forever())
            try:
                await put_dead_letter(amqp, prefix, new_deposit(None))
                await until(lambda: _kept(opened, 1), what="the first letter to be kept")
                await database.cut()
                events = [new_deposit(None) for _ in range(5)]
                for event in events:
                    await put_dead_letter(amqp, prefix, event)
                await asyncio.sleep(2.5)  # the keeper tries, fails, pauses
                assert await queue_depth(amqp, opened.topology.dead_letter) == 5
                await database.restore()
                await until(lambda: _kept(opened, 6), within=40, what="every letter to be kept")
                assert await queue_depth(amqp, opened.topology.dead_letter) == 0
            finally:
                keeping.cancel()
    finally:
        await database.cut()


async def _kept(opened: Desk, count: int) -> bool:
    with contextlib.suppress(Exception):
        return await opened.keeper.table.count() == count
    return False


# -- selecting -------------------------------------------------------------------------------


SUBJECT_HEADERS = {
    messages.SOURCE: "acme-bank",
    messages.REASON: "unmatched_invoice",
    messages.ERROR: "no invoice found",
    messages.FAILED_AT: messages.rfc3339(NOW - timedelta(hours=2)),
}


@pytest.fixture
async def subject(d: Desk) -> str:
    """One stored letter (acme-bank / urn:acme:core, bank.deposit, INV-7, failed 2 h ago)."""
    event = new_deposit("INV-7") | {"source": "urn:acme:core"}
    await d.keeper.table.keep([Incoming(event["id"], SUBJECT_HEADERS, orjson.dumps(event))], NOW)
    [letter] = await d.keeper.table.select(None, now=NOW)
    return letter.event_id


@pytest.mark.parametrize(
    ("selection", "matches"),
    [
        (lambda e: Filter(ids=(e,)), True),
        (lambda e: Filter(ids=("other", e)), True),
        (lambda e: Filter(ids=("other",)), False),
        (lambda e: Filter(reason="unmatched_invoice"), True),
        (lambda e: Filter(reason="retries_exhausted"), False),
        (lambda e: Filter(source="acme-bank"), True),  # the configured source
        (lambda e: Filter(source="urn:acme:core"), True),  # or the CloudEvent source
        (lambda e: Filter(source="lockbox"), False),
        (lambda e: Filter(type="bank.deposit"), True),
        (lambda e: Filter(type="check.scan"), False),
        (lambda e: Filter(invoice="INV-7"), True),
        (lambda e: Filter(invoice="INV-8"), False),
        (lambda e: Filter(older_than=timedelta(hours=1)), True),
        (lambda e: Filter(older_than=timedelta(hours=3)), False),
        (lambda e: Filter(newer_than=timedelta(hours=3)), True),
        (lambda e: Filter(newer_than=timedelta(hours=1)), False),
        (lambda e: Filter(older_than=timedelta(hours=1), newer_than=timedelta(hours=3)), True),
        (lambda e: Filter(reason="unmatched_invoice", invoice="INV-8"), False),  # every field must hold
        (lambda e: Filter(reason="unmatched_invoice", type="bank.deposit", source="acme-bank"), True),
        (lambda e: Filter(reason="retries_exhausted", everything=True), False),  # a selector wins over all
        (lambda e: Filter(), False),  # empty selects nothing
        (lambda e: Filter(everything=True), True),
    ],
)
async def test_each_selector_field_selects_or_not(
    d: Desk, subject: str, selection: Any, matches: bool
) -> None:
    found = await d.keeper.table.select(selection(subject), now=NOW)
    assert [letter.event_id for letter in found] == ([subject] if matches else [])


async def test_a_letter_id_selects_that_letter_and_an_event_id_every_letter_of_the_event(d: Desk) -> None:
    event = new_deposit(None)
    body = orjson.dumps(event)
    for origin, failed in (("acme-bank", "2026-11-25T10:00:00Z"), ("lockbox", "2026-11-25T11:00:00Z")):
        headers = {messages.SOURCE: origin, messages.REASON: "unmatched_invoice", messages.FAILED_AT: failed}
        await d.keeper.table.keep([Incoming(event["id"], headers, body)], NOW)
    both = await d.keeper.table.select(Filter(ids=(event["id"],)), now=NOW)
    assert [letter.origin for letter in both] == ["acme-bank", "lockbox"]
    second = await d.keeper.table.select(Filter(ids=(both[1].id,)), now=NOW)
    assert second == [both[1]]


@pytest.mark.parametrize("failed_at", [None, "yesterday", "2026-11-25T10:00:00"])
async def test_a_letter_without_a_readable_aware_time_matches_no_age_filter(
    d: Desk, failed_at: str | None
) -> None:
    headers: dict[str, Any] = {messages.REASON: "unmatched_invoice"}
    if failed_at is not None:
        headers[messages.FAILED_AT] = failed_at
    await d.keeper.table.keep([Incoming("evt-t", headers, b"{}")], NOW)
    assert await d.keeper.table.select(Filter(older_than=timedelta(0)), now=NOW) == []
    assert await d.keeper.table.select(Filter(newer_than=timedelta(days=9999)), now=NOW) == []
    assert len(await d.keeper.table.select(Filter(reason="unmatched_invoice"), now=NOW)) == 1


# -- acting on exactly what was previewed ----------------------------------------------------


async def audit_of(d: Desk, *actors: str) -> list[Any]:
    """This test's audit rows (PostgreSQL's audit is shared by every test)."""
    return [record for record in await d.ledger.audit(limit=1000) if record.actor in actors]


async def test_a_confirmed_replay_moves_exactly_the_letters_previewed(
    d: Desk, prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """A letter arriving between the preview and the confirmation is not swept along."""
    shown = [new_deposit(None), new_deposit(None)]
    for event in shown:
        await put_dead_letter(amqp, prefix, event)
    preview = await d.store.preview(Filter(reason="unmatched_invoice"))
    late = new_deposit(None)
    await put_dead_letter(amqp, prefix, late)
    outcome = await d.store.replay(
        [letter.id for letter in preview.matched], actor="ana", selector="reason=unmatched_invoice"
    )
    assert outcome.moved == 2 and outcome.skipped == []
    assert sorted(e["id"] for e in await work_queue(amqp, prefix)) == sorted(e["id"] for e in shown)
    assert [letter.event_id for letter in await d.store.browse()] == [late["id"]]
    replayed = await d.keeper.table.select(None, now=NOW, states=("replayed",))
    assert sorted(letter.event_id for letter in replayed) == sorted(e["id"] for e in shown)


async def test_two_operators_acting_on_one_letter_move_it_once(
    d: Desk, prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    await put_dead_letter(amqp, prefix, new_deposit(None))
    [letter] = (await d.store.preview(Filter(everything=True))).matched
    ana, bob = f"ana-{prefix}", f"bob-{prefix}"
    purged = await d.store.purge([letter.id], actor=ana, selector="all")
    replayed = await d.store.replay([letter.id], actor=bob, selector="all")
    assert (purged.moved, replayed.moved, replayed.skipped) == (1, 0, [letter.id])
    assert await work_queue(amqp, prefix) == []
    [record] = await audit_of(d, ana, bob)
    assert (record.actor, record.action, record.count) == (ana, "purge", 1)
    assert record.details["ids"] == [letter.id]


async def test_the_audit_is_written_with_each_batch(
    d: Desk, prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """250 letters: three audit rows (100, 100, 50), each naming its letters and their events."""
    headers = {messages.REASON: "unmatched_invoice", messages.FAILED_AT: "2026-11-25T10:00:00Z"}
    events = [new_deposit(None) for _ in range(250)]
    await d.keeper.table.keep([Incoming(e["id"], headers, orjson.dumps(e)) for e in events], NOW)
    preview = await d.store.preview(Filter(everything=True))
    actor = f"ana-{prefix}"
    outcome = await d.store.replay([letter.id for letter in preview.matched], actor=actor, selector="all")
    assert outcome.moved == 250
    records = await audit_of(d, actor)
    assert [r.count for r in records] == [50, 100, 100]
    assert sorted(i for r in records for i in r.details["event_ids"]) == sorted(e["id"] for e in events)
    assert len(await work_queue(amqp, prefix)) == 250


async def test_an_edit_replay_checks_every_letter_first_and_refuses_a_recorded_event(
    d: Desk, prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """All or nothing; and an edit on an event the ledger has recorded says so instead of vanishing."""
    deposit_event, check_event = new_deposit(None), check(id="evt-check") | {"source": "urn:lockbox"}
    await put_dead_letter(amqp, prefix, deposit_event)
    await put_dead_letter(amqp, prefix, check_event)
    with pytest.raises(EditError, match="booked_at belongs to bank.deposit"):
        await d.store.preview(Filter(everything=True), edits={"booked_at": "2026-11-24T09:00:00Z"})
    key = ("acme-bank", deposit_event["source"], deposit_event["id"])
    await d.ledger.claim(key, owner="t", lease_seconds=30, invoice_id="INV-1")
    await d.ledger.record_success(key, recorded("txn_1", "INV-1"), owner="t")
    with pytest.raises(EditError, match=r"already recorded on INV-1; an edit would not apply"):
        await d.store.preview(Filter(ids=(deposit_event["id"],)), edits={"invoice_id": "INV-2"})
    ids = [letter.id for letter in (await d.store.preview(Filter(everything=True))).matched]
    with pytest.raises(EditError):
        await d.store.replay(ids, actor="ana", selector="all", edits={"invoice_id": "INV-2"})
    assert await work_queue(amqp, prefix) == []
    assert len(await d.store.browse()) == 2


async def test_a_purged_letter_keeps_its_body_for_the_retention_period(
    d: Desk, prefix: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    event = new_deposit(None)
    await put_dead_letter(amqp, prefix, event)
    [letter] = (await d.store.preview(Filter(everything=True))).matched
    await d.store.purge([letter.id], actor="ana", selector="all")
    [kept] = await d.store.show(letter.id)
    assert (kept.state, kept.event) == ("purged", event)
    await d.ledger.cleanup(retention_days=30, now=datetime.now(UTC) + timedelta(days=31))
    [gone] = await d.store.show(letter.id)
    assert (gone.state, gone.event, gone.reason) == ("purged", None, "unmatched_invoice")


async def test_the_keeper_pauses_while_sqlite_is_locked_and_loses_nothing(
    prefix: str, amqp: aio_pika.abc.AbstractConnection, tmp_path: Path
) -> None:
    """SQLite's outage: another process holds the database's write lock. The keeper's write times
    out, it pauses, the letters wait in the queue; once the lock is gone every letter is kept."""
    path = tmp_path / "ledger.db"
    settings = make_settings(prefix, ledger_url=f"sqlite:///{path}", ledger_statement_timeout_seconds=1)
    topology = settings.broker.topology()
    await declare_once(AMQP_URL, topology)
    broker = settings.broker.broker("test-keeper-sqlite")
    await broker.start(wait=5.0)
    ledger = await settings.ledger.open()
    keeper = Keeper(broker, topology, ledger)
    keeping = asyncio.create_task(keeper.keep_forever())
    blocker = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        blocker.execute("BEGIN EXCLUSIVE")  # the write lock, held
        events = [new_deposit(None) for _ in range(3)]
        for event in events:
            await put_dead_letter(amqp, prefix, event)
        await asyncio.sleep(3)  # the keeper tries, times out, pauses
        assert await queue_depth(amqp, topology.dead_letter) == 3
        blocker.execute("ROLLBACK")
        await until(lambda: _kept_in(keeper, 3), within=40, what="every letter to be kept")
        assert await queue_depth(amqp, topology.dead_letter) == 0
    finally:
        blocker.close()
        keeping.cancel()
        await ledger.close()
        await broker.stop()


async def _kept_in(keeper: Keeper, count: int) -> bool:
    with contextlib.suppress(Exception):
        return await keeper.table.count() == count
    return False
