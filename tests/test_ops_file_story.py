"""The ops app tells a bank file's story: lookups by bank reference and by file id, and file facts.

Over real HTTP, a real RabbitMQ and a SQLite ledger, with test_ops_app's harness. Payments are put
in the ledger as the consumer leaves them, or recorded by the whole pipeline (receiver, consumer,
Chargebee sandbox) from an event carrying a bank file's extension attributes.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import urlencode

import pytest

from service.ledger import Ledger, Provenance, Recorded
from tests.factories import new_deposit
from tests.pipeline import pipeline, put_dead_letter
from tests.test_ops_app import Harness, event, harness  # noqa: F401  (the fixture)

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")

SOURCE = "urn:payrelay:account:6789-1f2e3d4c5b6a7988"
FILE = "import:sha256:9f86d081884c7d65"  # a file imported from disk: named by its digest


async def record_from_file(ops: Harness, event_id: str, story: Provenance, invoice: str = "INV-1001") -> None:
    """A payment of a bank file recorded in the ledger, as the consumer records one."""
    ledger = await Ledger.open(ops.settings.ledger.url)
    try:
        key = ("acme-bank", SOURCE, event_id)
        await ledger.claim(key, owner="test", lease_seconds=30, invoice_id=invoice, provenance=story)
        recorded = Recorded(
            transaction_id=f"txn_{event_id}", invoice_id=invoice, invoice_status="paid", amount_due=0,
            amount=2500, currency="USD", recorded_at=datetime.now(UTC), confirmation=b"{}",
        )  # fmt: skip
        await ledger.record_success(key, recorded, owner="test")
    finally:
        await ledger.close()


def ledger_table(page: str) -> str:
    return page.split('id="ledger-table"')[1].split("</table>")[0]


async def a_file_of_two(ops: Harness) -> None:
    """Two payments of one BAI2 file, and one of another file with the first one's reference."""
    await record_from_file(ops, "BR-1", Provenance("BR-1", FILE, "bai2", "line 14"))
    await record_from_file(ops, "BR-2", Provenance("BR-2", FILE, "bai2", "line 16"), "INV-1002")
    await record_from_file(ops, "dig-3", Provenance("BR-1", "whk_other", "mt940", ":61:[2]"))


async def test_the_api_finds_payments_by_their_bank_reference(harness: Harness) -> None:  # noqa: F811
    """`/api/events/lookup?q=<reference>` lists every payment with that reference number, with its file."""
    await a_file_of_two(harness)
    status, story = await harness.api("GET", "/api/events/lookup?q=BR-1")
    assert status == 200
    found = {e["event_id"]: e for e in story["ledger"]}
    assert set(found) == {"BR-1", "dig-3"}  # by event id and by reference: each payment once
    assert found["BR-1"]["reference_number"] == "BR-1"
    assert found["BR-1"]["file"] == {"id": FILE, "format": "bai2", "entry": "line 14"}
    assert found["dig-3"]["file"] == {"id": "whk_other", "format": "mt940", "entry": ":61:[2]"}


async def test_the_api_finds_every_payment_of_a_file_by_its_id(harness: Harness) -> None:  # noqa: F811
    """`/api/events/lookup?q=<file id>` lists the file's payments and no other."""
    await a_file_of_two(harness)
    status, story = await harness.api("GET", f"/api/events/lookup?{urlencode({'q': FILE})}")
    assert status == 200
    assert sorted((e["event_id"], e["file"]["entry"]) for e in story["ledger"]) == [
        ("BR-1", "line 14"),
        ("BR-2", "line 16"),
    ]


async def test_the_page_shows_reference_and_file_format_and_entry(harness: Harness) -> None:  # noqa: F811
    """The lookup page shows each payment's reference and "file · format · entry", both as lookup links."""
    await a_file_of_two(harness)
    status, _, page = await harness.request("GET", "/lookup?q=BR-2")
    assert status == 200
    table = ledger_table(page)
    file_link = f'<a href="/lookup?{urlencode({"q": FILE})}">{FILE}</a>'
    assert f"{file_link}</span> · bai2 · " in table and "line 16" in table
    assert '<a href="/lookup?q=BR-2">BR-2</a>' in table  # the reference number


async def test_the_file_link_lists_every_payment_of_the_file(harness: Harness) -> None:  # noqa: F811
    """Following a payment's file link shows the page of that file: all its payments, each with its entry."""
    await a_file_of_two(harness)
    _, _, page = await harness.request("GET", "/lookup?q=BR-2")
    href = re.search(r'<a href="(/lookup\?q=import[^"]+)">', ledger_table(page))
    assert href is not None
    status, _, file_page = await harness.request("GET", href.group(1).replace("&amp;", "&"))
    assert status == 200
    table = ledger_table(file_page)
    assert "txn_BR-1" in table and "txn_BR-2" in table and "txn_dig-3" not in table
    assert "line 14" in table and "line 16" in table


async def test_a_files_untrusted_story_is_shown_as_text(harness: Harness) -> None:  # noqa: F811
    """Markup in a file's format or entry (an event is untrusted) is escaped on the lookup page."""
    attack = "<script>alert(1)</script>"
    await record_from_file(harness, "BR-9", Provenance("BR-9", "whk_9", attack, f"Ntry[{attack}]"))
    _, _, page = await harness.request("GET", "/lookup?q=whk_9")
    assert attack not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in ledger_table(page)


async def test_a_dead_letter_from_a_file_shows_the_files_facts(harness: Harness) -> None:  # noqa: F811
    """The detail page of a letter whose event has payrelayfile shows the file (a link), format and entry."""
    from_file = event("BR-5") | {
        "payrelayfile": FILE,
        "payrelayformat": "lockbox",
        "payrelayentry": "batch 2 item 7",
    }
    await put_dead_letter(harness.amqp, harness.prefix, from_file, reason="invoice_not_found")
    await put_dead_letter(harness.amqp, harness.prefix, event("plain-1"), reason="invoice_not_found")
    status, _, page = await harness.request("GET", "/dead-letters/BR-5")
    assert status == 200
    assert f'<dt>Bank file</dt><dd><a href="/lookup?{urlencode({"q": FILE})}">{FILE}</a></dd>' in page
    assert "<dt>File format</dt><dd>lockbox</dd>" in page
    assert "<dt>Entry in the file</dt><dd>batch 2 item 7</dd>" in page
    _, _, plain = await harness.request("GET", "/dead-letters/plain-1")
    assert "Bank file" not in plain


async def test_a_payment_the_consumer_records_from_a_file_is_found_by_reference_and_file(
    harness: Harness,  # noqa: F811
) -> None:
    """An event with a bank file's attributes, recorded by the real consumer, is found by both ids."""
    sent = new_deposit(reference="ACSR-7781") | {
        "payrelayfile": "whk_2Yb9",
        "payrelayformat": "camt.054",
        "payrelayentry": "Ntfctn[1]/Ntry[3]/TxDtls[2]",
    }
    # Its own prefix (cleaned up with the harness's): the pipeline's retry tiers differ.
    async with pipeline(f"{harness.prefix}p", harness.settings.ledger.url, harness.amqp) as pipe:
        await pipe.send(sent)
        await pipe.confirmations(1)
    for query in ("ACSR-7781", "whk_2Yb9"):
        status, story = await harness.api("GET", f"/api/events/lookup?q={query}")
        assert status == 200
        (entry,) = story["ledger"]
        assert (entry["event_id"], entry["state"], entry["reference_number"]) == (
            sent["id"],
            "recorded",
            "ACSR-7781",
        )
        assert entry["file"] == {
            "id": "whk_2Yb9",
            "format": "camt.054",
            "entry": "Ntfctn[1]/Ntry[3]/TxDtls[2]",
        }
