"""`POST /v1/files/{source}`'s HTTP contract, in-process (SPEC §9): answers, errors, all-or-nothing.

The app runs through httpx's ASGI transport with a `MemoryPublisher`; the files go through the real
parsers. End to end over real HTTP, RabbitMQ and the sandbox is tests/test_files_end_to_end.py.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest

from service.bankfiles import demo
from service.broker import MemoryPublisher
from service.receiver import create_app
from service.sender import signed_headers
from service.settings import Settings, SourceSettings
from tests.conftest import LOCKBOX_SECRET, SECRET, make_settings

FIXTURES = Path(__file__).parent / "fixtures" / "bankfiles"
CAMT054 = demo.path("camt054").read_bytes()
CAMT053 = (FIXTURES / "e2e" / "statement.camt053.xml").read_bytes()
KEY = "fingerprint-key-for-tests-only"


@pytest.fixture
def settings(prefix: str) -> Settings:
    return make_settings(
        prefix,
        payer_fingerprint_key=KEY,
        max_file_bytes=64 * 1024,
        sources={
            "acme-bank": SourceSettings(secrets=[SECRET]),
            "lockbox": SourceSettings(secrets=[LOCKBOX_SECRET], format="lockbox"),
        },
    )


@pytest.fixture
def publisher() -> MemoryPublisher:
    return MemoryPublisher()


@pytest.fixture
async def client(settings: Settings, publisher: MemoryPublisher) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings, publisher=publisher)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as c:
        yield c


async def post_file(
    client: httpx.AsyncClient,
    body: bytes,
    *,
    source: str = "acme-bank",
    secret: str = SECRET,
    file_id: str | None = None,
) -> httpx.Response:
    headers = signed_headers(secret, body, "application/xml", msg_id=file_id)
    return await client.post(f"/v1/files/{source}", content=body, headers=headers)


async def test_a_camt054_is_answered_with_its_story(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """202: the file (format, version, accounts, entries), accepted, published, skipped, ids."""
    response = await post_file(client, CAMT054, file_id="msg_demo_1")
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["file"] == {
        "id": "msg_demo_1",
        "format": "camt.054",
        "version": "camt.054.001.08",
        "accounts": 1,
        "entries": 3,
    }
    assert body["accepted"] == body["published"] == 3
    assert body["ids"] == ["DEMO-20261130-0001-A", "DEMO-20261130-0001-B", "DEMO-20261130-0002"]
    assert [s["reason"] for s in body["skipped"]] == ["debit"]
    assert [m.message_id for m in publisher.published] == body["ids"]
    assert {m.headers["x-payrelay-source"] for m in publisher.published} == {"acme-bank"}


async def test_a_batch_booked_entry_is_one_event_per_transaction(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """The two transfers of one booking are two events, each with its own amount and allocation."""
    await post_file(client, CAMT054)
    first, second, third = (orjson.loads(m.body) for m in publisher.published)
    assert first["data"]["amount"] == "199.99" and second["data"]["amount"] == "250.00"
    assert first["data"]["allocations"] == [{"invoice_id": "INV-1003", "amount": "199.99"}]
    assert first["data"]["payer"]["name"] == "Globex Corporation"
    assert third["data"]["remittance_information"] == "Umbrella payment for INV-1006, thank you"
    assert first["payrelayentry"].endswith("TxDtls[1]") and second["payrelayentry"].endswith("TxDtls[2]")


async def test_the_statement_after_the_notification_names_the_same_events(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """A camt.053 holding the camt.054's credits gives the same identities: nothing new to publish."""
    notified = (await post_file(client, CAMT054)).json()
    stated = (await post_file(client, CAMT053)).json()
    assert stated["file"]["format"] == "camt.053"
    assert stated["ids"] == notified["ids"]
    assert stated["published"] == 0
    assert len(publisher.published) == 3
    sources = {orjson.loads(m.body)["source"] for m in publisher.published}
    assert len(sources) == 1 and next(iter(sources)).startswith("urn:payrelay:account:3000-")


async def test_nothing_of_a_file_is_published_when_the_broker_refuses(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """503 with Retry-After, nothing half-published, and the re-sent file goes through whole."""
    publisher.refuse = "broker down"
    refused = await post_file(client, CAMT054)
    assert refused.status_code == 503 and refused.headers["retry-after"]
    assert publisher.published == []
    publisher.refuse = None
    again = await post_file(client, CAMT054)
    assert again.status_code == 202 and again.json()["published"] == 3


async def test_a_malformed_file_is_422_with_where_and_nothing_published(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """A truncated camt is refused with a line and why; nothing of it reaches the broker."""
    response = await post_file(client, CAMT054[: len(CAMT054) // 2])
    assert response.status_code == 422
    problem = response.json()
    assert response.headers["content-type"].startswith("application/problem+json")
    [error] = problem["errors"]
    assert error["where"] and error["why"]
    assert publisher.published == []


async def test_an_entity_declaration_is_400_and_never_expanded(
    client: httpx.AsyncClient, publisher: MemoryPublisher, tmp_path: Path
) -> None:
    """A DTD naming a local file is refused at once; the file's content appears nowhere."""
    secret_file = tmp_path / "secret.txt"
    secret_file.write_text("TOP-SECRET-CONTENT")
    evil = CAMT054.replace(
        b'<?xml version="1.0" encoding="UTF-8"?>',
        f'<?xml version="1.0"?><!DOCTYPE Document [<!ENTITY x SYSTEM "file://{secret_file}">]>'.encode(),
    ).replace(b"DEMO-NTFCTN-0001</MsgId>", b"&x;</MsgId>")
    response = await post_file(client, evil)
    assert response.status_code == 400
    assert "TOP-SECRET-CONTENT" not in response.text and str(secret_file) not in response.text
    assert publisher.published == []


async def test_a_file_of_another_format_than_the_source_sends_is_422(
    client: httpx.AsyncClient, publisher: MemoryPublisher
) -> None:
    """A source configured for lockbox that is sent camt XML: refused, saying what it looks like."""
    response = await post_file(client, CAMT054, source="lockbox", secret=LOCKBOX_SECRET)
    assert response.status_code == 422
    assert publisher.published == []


async def test_a_file_over_max_file_bytes_is_413(client: httpx.AsyncClient) -> None:
    """The size limit is max_file_bytes, not the events' max_body_bytes."""
    response = await post_file(client, CAMT054 + b" " * (64 * 1024))
    assert response.status_code == 413


async def test_a_file_signed_wrongly_is_401(client: httpx.AsyncClient, publisher: MemoryPublisher) -> None:
    """The signature covers the raw file bytes: another source's secret does not do."""
    response = await post_file(client, CAMT054, secret=LOCKBOX_SECRET)
    assert response.status_code == 401
    assert publisher.published == []


async def test_an_unknown_source_is_404(client: httpx.AsyncClient) -> None:
    """Files, like events, only come from configured sources."""
    assert (await post_file(client, CAMT054, source="nobody")).status_code == 404


async def test_files_are_counted_in_the_metrics(client: httpx.AsyncClient, settings: Settings) -> None:
    """payrelay_files by source, format and status; payrelay_file_entries by outcome."""
    await post_file(client, CAMT054)
    await post_file(client, CAMT054)
    app = client._transport.app  # type: ignore[attr-defined]
    text = app.state.metrics.render().decode()
    assert 'payrelay_files_total{format="camt.054",source="acme-bank",status="202"} 2.0' in text
    assert 'payrelay_file_entries_total{format="camt.054",outcome="published",source="acme-bank"} 3.0' in text
    assert 'payrelay_file_entries_total{format="camt.054",outcome="duplicate",source="acme-bank"} 3.0' in text
    assert (
        'payrelay_file_entries_total{format="camt.054",outcome="skipped_debit",source="acme-bank"} 2.0'
        in text
    )
