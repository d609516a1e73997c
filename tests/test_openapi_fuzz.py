"""schemathesis against the receiver's own /openapi.json, over real HTTP, with signed requests.

Generated requests are signed (a requests auth hook) so the fuzzing reaches past the signature
check into parsing and validation; no input may produce a 5xx, and every response must match
the document.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import aio_pika
import hypothesis
import jsonschema
import pytest
import requests
import schemathesis
import uvicorn
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.events import ContractError, validate
from service.openapi import openapi_document
from service.receiver import create_app
from service.sender import signed_headers
from tests.conftest import AMQP_URL, LOCKBOX_SECRET, SECRET, delete_prefix, free_port, make_settings
from tests.factories import deposit

pytestmark = pytest.mark.usefixtures("rabbitmq_reachable")


class StandardWebhooksAuth(requests.auth.AuthBase):
    """Sign whatever body schemathesis generated, as an upstream bank would, with its source's secret."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        content_type = request.headers.get("content-type", "application/json")
        secret = LOCKBOX_SECRET if str(request.url).endswith("/lockbox") else SECRET
        for key, value in signed_headers(secret, body, content_type).items():
            if key != "content-type":
                request.headers[key] = value
        return request


@pytest.fixture(scope="module")
def receiver_url() -> Iterator[str]:
    prefix = f"fuzz{int(time.time() * 1000) % 10**8}"
    settings = make_settings(prefix)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="error")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    asyncio.run(_delete(prefix))


async def _delete(prefix: str) -> None:
    connection = await aio_pika.connect(AMQP_URL, timeout=15)
    await delete_prefix(connection, prefix)
    await connection.close()


@pytest.fixture(scope="module")
def api_schema(receiver_url: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{receiver_url}/openapi.json")


@pytest.mark.timeout(300)
def test_no_input_is_a_server_error(api_schema: schemathesis.BaseSchema, receiver_url: str) -> None:
    """Signed or not, valid or not: never a 500, always answered as the document says."""
    session = requests.Session()
    session.auth = StandardWebhooksAuth()
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    seen: set[int] = set()
    seen_422: list[str] = []

    @hypothesis.settings(
        max_examples=300,
        deadline=None,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate],
    )
    @hypothesis.given(case=api_schema["/v1/ingest/{source}"]["POST"].as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=receiver_url, session=session)
        seen.add(response.status_code)
        if response.status_code == 422 and len(seen_422) < 15:
            seen_422.append(response.text[:300])
        assert response.status_code != 500, case.as_curl_command()
        case.validate_response(response, checks=checks)

    run()
    # The fuzzing got past the signature check: generated events were accepted or rejected on content.
    assert 202 in seen and 422 in seen, (seen, seen_422)


TWO = [{"invoice_id": "INV-1", "amount": "1000.00"}, {"invoice_id": "INV-2", "amount": "250.00"}]


@pytest.mark.parametrize(
    ("event", "valid"),
    [
        (deposit(allocations=TWO, references=["RF18539007547034", "INV-1"]), True),
        (
            deposit(payer={"name": "Globex", "account_last4": "4417", "account_fingerprint": "hmac:Ab+/="}),
            True,
        ),
        ({**deposit(), "id": "j" * 255}, True),
        (deposit(invoice_id="INV-1", allocations=TWO), False),
        (deposit(allocations=[]), False),
        (deposit(allocations=[{"invoice_id": "INV-1", "amount": "1250.00", "note": "x"}]), False),
        (deposit(allocations=[{"invoice_id": "..", "amount": "1250.00"}]), False),
        (deposit(allocations=[{"invoice_id": "INV-1", "amount": "１２５０.００"}]), False),
        (deposit(references=[]), False),
        (deposit(references=["INV-1\x00"]), False),
        (deposit(references=["\u0085INV-1"]), False),
        (deposit(references=["   "]), False),
        (deposit(references=["x" * 101]), False),
        (deposit(payer={"account_fingerprint": "has space"}), False),
        (deposit(payer={"account_last4": "١٢٣٤"}), False),
        (deposit(amount="١٢٣٤"), False),
        ({**deposit(), "id": "j" * 256}, False),
    ],
)
def test_the_document_agrees_with_the_receiver(event: dict[str, Any], valid: bool) -> None:
    """What /openapi.json says of an event's shape is what the receiver decides.

    (Rules JSON Schema cannot state, such as sums and UTF-8 byte counts, are only described.)
    """
    document = openapi_document(make_settings("doc"))
    schema_errors = list(
        jsonschema.Draft202012Validator({**document, "$ref": "#/components/schemas/Event"}).iter_errors(event)
    )
    try:
        validate(event)
        accepted = True
    except ContractError:
        accepted = False
    assert (not schema_errors, accepted) == (valid, valid), schema_errors
