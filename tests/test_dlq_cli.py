"""`payrelay dlq` as operators run it (a subprocess), against the real RabbitMQ and ledger."""

from __future__ import annotations

import asyncio
import getpass
import os
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import orjson
import pytest

from service.broker import declare_once
from service.messages import rfc3339
from service.sender import example_event
from service.topology import build
from tests.conftest import AMQP_URL
from tests.factories import new_deposit
from tests.pipeline import pipeline, put_dead_letter, until

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

PAYRELAY = str(Path(sys.executable).parent / "payrelay")
ME = f"{getpass.getuser()}@{socket.gethostname()}"


@pytest.fixture
def ledger_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture
async def topology(prefix: str, amqp: aio_pika.abc.AbstractConnection) -> AsyncIterator[None]:
    await declare_once(AMQP_URL, build(prefix, [5, 30, 120, 600, 1800], 20))
    yield


async def dlq(prefix: str, ledger_url: str, *args: str, stdin: bytes | None = None) -> tuple[int, str, str]:
    env = {
        **os.environ,
        "PAYRELAY_AMQP_PREFIX": prefix,
        "PAYRELAY_LEDGER_URL": ledger_url,
        "PAYRELAY_AMQP_URL": AMQP_URL,
    }
    env.pop("PAYRELAY_CONFIG", None)
    process = await asyncio.create_subprocess_exec(
        PAYRELAY,
        "dlq",
        *args,
        env=env,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), 120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def listed(prefix: str, ledger_url: str, *args: str) -> list[dict[str, Any]]:
    code, out, err = await dlq(prefix, ledger_url, "list", "--json", *args)
    assert code == 0, err
    rows: list[dict[str, Any]] = orjson.loads(out)
    return rows


async def work_queue(
    amqp: aio_pika.abc.AbstractConnection, prefix: str
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    channel = await amqp.channel()
    queue = await channel.get_queue(f"{prefix}.record-payment")
    got = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        got.append(message)
    await channel.close()
    return got


async def test_list_json_has_the_contract_fields_and_filters(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """--json prints one array with SPEC §6's fields; the flags reach the filter."""
    old = rfc3339(datetime.now(UTC) - timedelta(days=3))
    new = rfc3339(datetime.now(UTC))
    a, b = new_deposit(None, "10.00"), new_deposit("INV-77", "10.00")
    c = example_event("check.scan", amount="5.00", currency="EUR", invoice_id="INV-78")
    await put_dead_letter(amqp, prefix, a, reason="unmatched_invoice", failed_at=old)
    await put_dead_letter(amqp, prefix, b, reason="invoice_not_found", failed_at=new, origin="lockbox")
    await put_dead_letter(amqp, prefix, c, reason="retries_exhausted", failed_at=new, attempts=6)
    rows = await listed(prefix, ledger_url)
    assert [r["event_id"] for r in rows] == [a["id"], b["id"], c["id"]]
    required = {
        "id",
        "reason",
        "error",
        "attempts",
        "failed_at",
        "origin",
        "source",
        "type",
        "invoice_id",
        "amount",
        "currency",
    }
    assert all(required <= set(r) for r in rows)
    assert rows[2]["attempts"] == 6 and rows[2]["currency"] == "EUR" and rows[2]["type"] == "check.scan"
    assert [r["event_id"] for r in await listed(prefix, ledger_url, "--source", "lockbox")] == [b["id"]]
    assert [
        r["event_id"] for r in await listed(prefix, ledger_url, "--newer-than", "1h", "--type", "check.scan")
    ] == [c["id"]]
    # Listing is read-only: everything is still there, in order.
    assert [r["event_id"] for r in await listed(prefix, ledger_url)] == [a["id"], b["id"], c["id"]]


async def test_human_list_and_show(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """The table names reason and invoice; show prints headers, the event and Chargebee's error."""
    event = new_deposit("INV-9002", "10.00")
    body = {
        "message": "Invoice is voided",
        "api_error_code": "invalid_state_for_request",
        "type": "invalid_request",
    }
    await put_dead_letter(amqp, prefix, event, reason="invoice_not_payable", chargebee=body)
    code, out, _ = await dlq(prefix, ledger_url, "list")
    assert code == 0 and "invoice_not_payable" in out and "INV-9002" in out
    code, out, _ = await dlq(prefix, ledger_url, "show", event["id"], "--json")
    assert code == 0
    detail = orjson.loads(out)
    assert detail["chargebee_error"] == body
    assert detail["event"] == event
    assert detail["headers"]["x-payrelay-reason"] == "invoice_not_payable"
    code, _, err = await dlq(prefix, ledger_url, "show", "no-such-id")
    assert code == 1 and "no dead letter" in err


async def test_dry_run_touches_nothing(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """--dry-run lists what would move and moves nothing."""
    events = [new_deposit(None, "10.00") for _ in range(3)]
    for event in events:
        await put_dead_letter(amqp, prefix, event)
    code, out, _ = await dlq(prefix, ledger_url, "replay", "--all", "--dry-run", "--json")
    assert code == 0
    preview = orjson.loads(out)
    assert (preview["matched"], preview["moved"], preview["dry_run"]) == (3, 0, True)
    assert preview["event_ids"] == [e["id"] for e in events]
    assert all(i.startswith("dl-") for i in preview["ids"])  # each letter's own id
    assert [r["event_id"] for r in await listed(prefix, ledger_url)] == [e["id"] for e in events]
    assert await work_queue(amqp, prefix) == []


async def test_replay_by_id_moves_only_that_one(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """Replay by id republishes it to the work queue reset and stamped; the others stay, in order."""
    events = [new_deposit(f"INV-{i}", "10.00") for i in range(5)]
    for event in events:
        await put_dead_letter(amqp, prefix, event, attempts=6, reason="retries_exhausted")
    code, out, err = await dlq(prefix, ledger_url, "replay", "--id", events[2]["id"], "--yes")
    assert code == 0, err
    assert "replayed 1" in out
    [moved] = await work_queue(amqp, prefix)
    assert moved.message_id == events[2]["id"]
    assert orjson.loads(moved.body) == events[2]
    assert moved.headers["x-payrelay-generation"] == 1
    assert moved.headers["x-payrelay-replayed-by"] == ME  # who ran it, as the system says
    assert moved.headers["x-payrelay-previous-reason"] == "retries_exhausted"
    assert "x-payrelay-attempts" not in moved.headers and "x-payrelay-reason" not in moved.headers
    assert moved.headers["x-payrelay-source"] == "acme-bank"
    remaining = [e["id"] for i, e in enumerate(events) if i != 2]
    assert [r["event_id"] for r in await listed(prefix, ledger_url)] == remaining


async def test_replay_needs_a_selector_and_a_confirmation(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """No selector: refused (3). No --yes and no terminal: refused (3), nothing moved."""
    await put_dead_letter(amqp, prefix, new_deposit(None, "10.00"))
    code, _, err = await dlq(prefix, ledger_url, "replay")
    assert code == 3 and "--all" in err
    code, _, err = await dlq(prefix, ledger_url, "replay", "--all")
    assert code == 3 and "--yes" in err
    assert len(await listed(prefix, ledger_url)) == 1


async def test_edit_replay_keeps_the_original_and_rejects_bad_edits(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """--set corrects data fields, with the original body in a header; an invalid edit moves nothing."""
    event = new_deposit(None, "10.00", remittance="paid, thanks")
    await put_dead_letter(amqp, prefix, event)
    code, _, err = await dlq(prefix, ledger_url, "replay", "--all", "--set", "booked_at=tomorrow", "--yes")
    assert code == 2 and "invalid" in err
    assert len(await listed(prefix, ledger_url)) == 1
    code, _, err = await dlq(
        prefix, ledger_url, "replay", "--reason", "unmatched_invoice", "--set", "invoice_id=INV-1001", "--yes"
    )
    assert code == 0, err
    [moved] = await work_queue(amqp, prefix)
    assert orjson.loads(moved.body)["data"]["invoice_id"] == "INV-1001"
    assert orjson.loads(moved.headers["x-payrelay-original"]) == event
    assert orjson.loads(moved.headers["x-payrelay-edits"]) == {"invoice_id": "INV-1001"}


async def test_purge_and_the_audit(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """purge needs --yes; replays, edits and purges all land in the audit with who and how many."""
    for reason in ("invalid_event", "invalid_event", "unmatched_invoice"):
        await put_dead_letter(amqp, prefix, new_deposit(None, "10.00"), reason=reason)
    code, _, _ = await dlq(prefix, ledger_url, "purge", "--reason", "invalid_event")
    assert code == 3
    code, out, _ = await dlq(prefix, ledger_url, "purge", "--reason", "invalid_event", "--yes")
    assert code == 0 and "purged 2" in out
    assert [r["reason"] for r in await listed(prefix, ledger_url)] == ["unmatched_invoice"]
    await dlq(prefix, ledger_url, "replay", "--all", "--set", "invoice_id=INV-1", "--yes")
    code, out, _ = await dlq(prefix, ledger_url, "audit", "--json")
    records = orjson.loads(out)
    assert [(r["actor"], r["action"], r["selector"], r["count"]) for r in records] == [
        (ME, "edit-replay", "all", 1),
        (ME, "purge", "reason=invalid_event", 2),
    ]
    assert records[0]["details"]["edits"] == {"invoice_id": "INV-1"}


async def test_unmatched_invoice_fixed_and_replayed_is_recorded_once(
    prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """The operator's day: unmatched → edit-and-replay → recorded; replaying it again records nothing more.

    Cash application off: with it on, such a payment waits in review (tests/test_cash_application.py).
    """
    async with pipeline(prefix, ledger_url, amqp, matching={"enabled": False}) as pipe:
        event = new_deposit(None, "10.00", remittance="thanks for everything")
        await pipe.send(event)
        [dead] = await pipe.dead_letters(1)
        # put it back: dead_letters() consumed it to look at it
        await put_dead_letter(amqp, prefix, event, reason=str(dead.headers["x-payrelay-reason"]))
        code, _, err = await dlq(
            prefix, ledger_url, "replay", "--id", event["id"], "--set", "invoice_id=INV-1001", "--yes"
        )
        assert code == 0, err
        [first] = await pipe.confirmations(1)
        assert first["data"]["invoice_id"] == "INV-1001"
        # The same dead letter replayed once more (say, by a second operator): no second payment.
        await put_dead_letter(amqp, prefix, event)
        code, _, err = await dlq(
            prefix, ledger_url, "replay", "--all", "--set", "invoice_id=INV-1001", "--yes"
        )
        assert code == 0, err
        [again] = await pipe.confirmations(1)
        assert again == first
        assert len(await pipe.requests("INV-1001")) == 1
        assert (await pipe.invoice("INV-1001"))["amount_paid"] == 1000


@pytest.mark.timeout(240)
async def test_replay_of_1000_while_the_consumer_runs(
    prefix: str, ledger_url: str, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """1,000 dead letters replayed while the consumer runs: every one recorded exactly once, none lost."""
    async with pipeline(prefix, ledger_url, amqp, consumer_prefetch=100) as pipe:
        await pipe.admin(
            "POST", "/sandbox/invoices", {"id": "BIG-1", "total": 1000 * 1000, "currency_code": "USD"}
        )
        events = [new_deposit(None, "10.00") for _ in range(1000)]
        for event in events:
            await put_dead_letter(amqp, prefix, event)
        await until(lambda: _kept(pipe, 1000), what="the keeper to store 1,000 letters")
        code, out, err = await dlq(
            prefix,
            ledger_url,
            "replay",
            "--reason",
            "unmatched_invoice",
            "--set",
            "invoice_id=BIG-1",
            "--yes",
            "--json",
        )
        assert code == 0, err
        assert orjson.loads(out)["moved"] == 1000
        confirmations = await pipe.confirmations(1000, within=180)
        assert sorted(c["data"]["cause"]["id"] for c in confirmations) == sorted(e["id"] for e in events)
        await until(lambda: _empty(pipe), what="queues to drain")
        assert await pipe.dead_letter_count() == 0
        calls = await pipe.requests("BIG-1")
        assert len(calls) == 1000
        assert (await pipe.invoice("BIG-1"))["amount_paid"] == 1000 * 1000


async def _kept(pipe: Any, count: int) -> bool:
    return await pipe.dead_letter_count() == count


async def _empty(pipe: Any) -> bool:
    return await pipe.queue_depth("record-payment") == 0


async def test_replay_rate_spaces_the_moves(
    prefix: str, ledger_url: str, topology: None, amqp: aio_pika.abc.AbstractConnection
) -> None:
    """--rate 10/s: replayed messages are stamped at least 0.1 s apart."""
    for _ in range(5):
        await put_dead_letter(amqp, prefix, new_deposit(None, "10.00"))
    code, _, err = await dlq(prefix, ledger_url, "replay", "--all", "--rate", "10/s", "--yes")
    assert code == 0, err
    stamps = [
        datetime.fromisoformat(str(m.headers["x-payrelay-replayed-at"]).replace("Z", "+00:00"))
        for m in await work_queue(amqp, prefix)
    ]
    assert len(stamps) == 5
    gaps = [(b - a).total_seconds() for a, b in zip(stamps, stamps[1:], strict=False)]
    assert min(gaps) >= 0.095, gaps
