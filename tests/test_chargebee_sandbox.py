"""The Chargebee sandbox: record_payment as Chargebee documents it, idempotency, limits, faults, admin."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from service.chargebee_sandbox import ConnectionDropped, SandboxConfig, create_app
from tests.conftest import serve

KEY = "test_sandbox_key"
NOW = 1_750_000_000.0
PAID_AT = "1749990000"


class FakeClock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_client(clock: FakeClock, **config: Any) -> httpx.AsyncClient:
    """The app in-process through httpx's ASGI transport, authenticated with the sandbox key."""
    app = create_app(SandboxConfig(clock=clock, **config))
    transport = httpx.ASGITransport(app=app)
    headers = {"Authorization": basic(KEY)}
    return httpx.AsyncClient(transport=transport, base_url="http://sandbox", headers=headers)


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(clock) as test_client:
        yield test_client


def v1_form(**overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "amount": "2500",
        "payment_method": "bank_transfer",
        "reference_number": "DEP-1",
        "memo": "deposit",
        "paid_at": PAID_AT,
    }
    form.update(overrides)
    return {name: value for name, value in form.items() if value is not None}


def v2_form(**overrides: str | None) -> dict[str, str]:
    form: dict[str, str | None] = {
        "transaction[amount]": "2500",
        "transaction[payment_method]": "check",
        "transaction[reference_number]": "CHK-1",
        "transaction[date]": PAID_AT,
        "comment": "scanned check",
    }
    form.update(overrides)
    return {name: value for name, value in form.items() if value is not None}


async def pay(
    client: httpx.AsyncClient,
    invoice_id: str,
    form: dict[str, str],
    *,
    version: str = "v1",
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    all_headers = dict(headers or {})
    if key is not None:
        all_headers["chargebee-idempotency-key"] = key
    url = f"/api/{version}/invoices/{invoice_id}/record_payment"
    return await client.post(url, data=form, headers=all_headers)


async def invoice(client: httpx.AsyncClient, invoice_id: str, version: str = "v1") -> dict[str, Any]:
    response = await client.get(f"/api/{version}/invoices/{invoice_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["invoice"]
    return body


# --- record_payment: success ------------------------------------------------------------------------


async def test_v1_success_returns_invoice_and_transaction_in_v1_names(client: httpx.AsyncClient) -> None:
    """A v1 payment answers 200 with the invoice and transaction as OAS-v1 names them."""
    response = await pay(client, "INV-1001", v1_form())

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    inv, txn = body["invoice"], body["transaction"]
    assert (inv["id"], inv["customer_id"], inv["currency_code"]) == ("INV-1001", "cust_INV-1001", "USD")
    assert (inv["amount"], inv["amount_paid"], inv["amount_due"]) == (10000, 2500, 7500)
    assert inv["status"] == "payment_due" and "paid_on" not in inv
    assert {"start_date", "end_date", "price_type", "recurring", "sub_total", "tax"} <= inv.keys()
    assert not {"total", "paid_at", "date", "linked_payments", "object", "resource_version"} & inv.keys()
    assert inv["linked_transactions"] == [
        {
            "txn_id": txn["id"],
            "applied_amount": 2500,
            "applied_at": int(NOW),
            "txn_type": "payment",
            "txn_status": "success",
            "txn_date": int(PAID_AT),
            "txn_amount": 2500,
        }
    ]
    assert txn["id"].startswith("txn_")
    assert (txn["amount"], txn["amount_unused"], txn["currency_code"]) == (2500, 0, "USD")
    assert (txn["payment_method"], txn["reference_number"], txn["date"]) == (
        "bank_transfer",
        "DEP-1",
        int(PAID_AT),
    )
    assert (txn["status"], txn["type"], txn["gateway"]) == ("success", "payment", "not_applicable")
    assert txn["linked_invoices"] == [
        {
            "invoice_id": "INV-1001",
            "applied_amount": 2500,
            "applied_at": int(NOW),
            "invoice_date": inv["end_date"],
            "invoice_amount": 10000,
        }
    ]
    assert not {"object", "deleted", "resource_version", "updated_at"} & txn.keys()


async def test_v2_success_links_invoice_and_transaction(client: httpx.AsyncClient) -> None:
    """A v2 payment (transaction[...] fields) links the transaction and the invoice both ways, v2 names."""
    response = await pay(client, "INV-2001", v2_form(**{"transaction[amount]": "50000"}), version="v2")

    assert response.status_code == 200
    inv, txn = response.json()["invoice"], response.json()["transaction"]
    assert (inv["currency_code"], inv["total"], inv["amount_paid"], inv["amount_due"]) == (
        "JPY",
        150000,
        50000,
        100000,
    )
    assert (inv["amount_adjusted"], inv["credits_applied"], inv["object"]) == (0, 0, "invoice")
    assert {"date", "due_date", "resource_version", "updated_at"} <= inv.keys()
    assert "linked_transactions" not in inv and "amount" not in inv
    assert inv["linked_payments"] == [
        {
            "txn_id": txn["id"],
            "applied_amount": 50000,
            "applied_at": int(NOW),
            "txn_status": "success",
            "txn_date": int(PAID_AT),
            "txn_amount": 50000,
        }
    ]
    assert (txn["payment_method"], txn["reference_number"], txn["amount_unused"]) == ("check", "CHK-1", 0)
    assert (txn["object"], txn["deleted"]) == ("transaction", False)
    assert txn["linked_invoices"] == [
        {
            "invoice_id": "INV-2001",
            "applied_amount": 50000,
            "applied_at": int(NOW),
            "invoice_date": inv["date"],
            "invoice_total": 150000,
            "invoice_status": "payment_due",
        }
    ]


async def test_partial_payment_keeps_the_status_until_paid(client: httpx.AsyncClient) -> None:
    """A partial payment leaves not_paid as not_paid; the one that brings amount_due to 0 makes it paid."""
    first = await pay(client, "INV-4001", v1_form(amount="5000"))
    assert first.json()["invoice"]["status"] == "not_paid"

    second = await pay(client, "INV-4001", v1_form(amount="15000", paid_at="1749995000"))

    inv = second.json()["invoice"]
    assert (inv["status"], inv["amount_paid"], inv["amount_due"], inv["paid_on"]) == (
        "paid",
        20000,
        0,
        1749995000,
    )
    assert (await invoice(client, "INV-4001"))["status"] == "paid"


async def test_v2_records_on_a_posted_invoice_which_stays_posted_until_paid(
    client: httpx.AsyncClient,
) -> None:
    """v2 takes payments on posted invoices (OAS-v2); partial keeps posted, the rest makes it paid."""
    partial = await pay(client, "INV-9004", v2_form(**{"transaction[amount]": "2000"}), version="v2")
    assert partial.status_code == 200
    assert (partial.json()["invoice"]["status"], partial.json()["invoice"]["amount_due"]) == ("posted", 10000)

    rest = await pay(client, "INV-9004", v2_form(**{"transaction[amount]": None}), version="v2")

    inv = rest.json()["invoice"]
    assert (inv["status"], inv["amount_due"], inv["paid_at"]) == ("paid", 0, int(PAID_AT))
    assert rest.json()["transaction"]["amount"] == 10000


async def test_absent_amount_records_the_whole_amount_due(client: httpx.AsyncClient) -> None:
    """Without `amount`, the entire amount due is recorded, as documented."""
    await pay(client, "INV-1002", v1_form(amount="550"))

    response = await pay(client, "INV-1002", v1_form(amount=None))

    assert response.json()["transaction"]["amount"] == 12000
    assert response.json()["invoice"]["status"] == "paid"


async def test_v2_date_is_optional_and_defaults_to_now(client: httpx.AsyncClient) -> None:
    """transaction[date] is optional in v2: the transaction (and paid_at) take the time of the call."""
    form = v2_form(**{"transaction[date]": None, "transaction[amount]": None})

    response = await pay(client, "INV-1003", form, version="v2")

    assert response.status_code == 200
    assert response.json()["transaction"]["date"] == int(NOW)
    assert response.json()["invoice"]["paid_at"] == int(NOW)


@pytest.mark.parametrize("version", ["v1", "v2"])
async def test_overpayment_pays_the_invoice_and_keeps_the_excess(
    client: httpx.AsyncClient, version: str
) -> None:
    """Above amount_due: the invoice is paid, the transaction keeps the full amount with amount_unused
    = the excess, and the excess is added to the customer's excess_payments."""
    amount = {"amount": "12500"} if version == "v1" else {"transaction[amount]": "12500"}
    form = v1_form(**amount) if version == "v1" else v2_form(**amount)

    response = await pay(client, "INV-1001", form, version=version)

    assert response.status_code == 200
    inv, txn = response.json()["invoice"], response.json()["transaction"]
    assert (inv["status"], inv["amount_paid"], inv["amount_due"]) == ("paid", 10000, 0)
    assert (txn["amount"], txn["amount_unused"]) == (12500, 2500)
    assert txn["linked_invoices"][0]["applied_amount"] == 10000
    links = inv["linked_transactions" if version == "v1" else "linked_payments"]
    assert (links[0]["applied_amount"], links[0]["txn_amount"]) == (10000, 12500)
    customer = (await client.get(f"/api/{version}/customers/cust_INV-1001")).json()["customer"]
    assert customer["excess_payments"] == 2500


# --- record_payment: errors -------------------------------------------------------------------------


async def test_unknown_invoice_is_404_resource_not_found(client: httpx.AsyncClient) -> None:
    """An invoice id that does not exist answers 404 resource_not_found."""
    response = await pay(client, "INV-0000", v1_form())

    assert response.status_code == 404
    body = response.json()
    assert (body["api_error_code"], body["type"], body["http_status_code"]) == (
        "resource_not_found",
        "invalid_request",
        404,
    )
    assert "INV-0000" in body["message"]


@pytest.mark.parametrize(
    ("version", "invoice_id", "status"),
    [
        ("v1", "INV-9001", "paid"),
        ("v1", "INV-9002", "voided"),
        ("v1", "INV-9003", "pending"),
        ("v1", "INV-9004", "posted"),
        ("v2", "INV-9001", "paid"),
        ("v2", "INV-9002", "voided"),
        ("v2", "INV-9003", "pending"),
    ],
)
async def test_non_payable_invoice_is_409_invalid_state(
    client: httpx.AsyncClient, version: str, invoice_id: str, status: str
) -> None:
    """v1 takes payments on payment_due and not_paid, v2 on posted too; any other status answers 409."""
    form = v1_form(amount="100") if version == "v1" else v2_form(**{"transaction[amount]": "100"})

    response = await pay(client, invoice_id, form, version=version)

    assert response.status_code == 409
    body = response.json()
    assert (body["api_error_code"], body["type"], body["http_status_code"]) == (
        "invalid_state_for_request",
        "invalid_request",
        409,
    )
    assert body["error_code"] == "invalid_invoice_state"
    assert status in body["message"]
    assert (await invoice(client, invoice_id))["status"] == status


@pytest.mark.parametrize(
    ("version", "overrides", "param"),
    [
        ("v1", {"amount": "0"}, "amount"),
        ("v1", {"amount": "-5"}, "amount"),
        ("v1", {"amount": "12.50"}, "amount"),
        ("v1", {"payment_method": "bitcoin"}, "payment_method"),
        ("v1", {"payment_method": "card"}, "payment_method"),
        ("v1", {"payment_method": "chargeback"}, "payment_method"),
        ("v1", {"payment_method": "custom"}, "payment_method"),
        ("v1", {"paid_at": "yesterday"}, "paid_at"),
        ("v1", {"reference_number": "x" * 101}, "reference_number"),
        ("v1", {"memo": "x" * 301}, "memo"),
        ("v2", {"transaction[amount]": "abc"}, "transaction[amount]"),
        ("v2", {"transaction[payment_method]": "card"}, "transaction[payment_method]"),
        ("v2", {"transaction[payment_method]": "direct_debit"}, "transaction[payment_method]"),
        ("v2", {"transaction[date]": "soon"}, "transaction[date]"),
    ],
)
async def test_wrong_parameter_is_400_param_wrong_value(
    client: httpx.AsyncClient, version: str, overrides: dict[str, str | None], param: str
) -> None:
    """Each invalid parameter answers 400 param_wrong_value naming it; nothing is recorded."""
    form = v1_form(**overrides) if version == "v1" else v2_form(**overrides)

    response = await pay(client, "INV-1001", form, version=version)

    assert response.status_code == 400
    body = response.json()
    assert (body["api_error_code"], body["type"], body["param"]) == (
        "param_wrong_value",
        "invalid_request",
        param,
    )
    assert body["http_status_code"] == 400 and body["message"].startswith(f"{param} : ")
    assert "error_param" not in body
    assert (await invoice(client, "INV-1001"))["amount_paid"] == 0


@pytest.mark.parametrize(
    ("version", "overrides", "param"),
    [
        ("v1", {"payment_method": None}, "payment_method"),
        ("v1", {"paid_at": None}, "paid_at"),
        ("v2", {"transaction[payment_method]": None}, "transaction[payment_method]"),
    ],
)
async def test_missing_parameter_is_400_param_required(
    client: httpx.AsyncClient, version: str, overrides: dict[str, str | None], param: str
) -> None:
    """A blank required parameter answers 400 invalid_request, legacy error_code param_required."""
    form = v1_form(**overrides) if version == "v1" else v2_form(**overrides)

    response = await pay(client, "INV-1001", form, version=version)

    assert response.status_code == 400
    body = response.json()
    assert (body["api_error_code"], body["type"], body["param"]) == (
        "invalid_request",
        "invalid_request",
        param,
    )
    assert (body["error_code"], body["error_msg"]) == ("param_required", "cannot be blank")
    assert body["message"] == f"{param} : cannot be blank"


@pytest.mark.parametrize(
    ("version", "method"),
    [
        ("v1", "direct_debit"),
        ("v1", "other"),
        ("v2", "custom"),
        ("v2", "wero"),
        ("v2", "p24"),
        ("v2", "app_store"),
        ("v2", "touch_n_go"),
    ],
)
async def test_each_version_takes_its_own_payment_methods(
    client: httpx.AsyncClient, version: str, method: str
) -> None:
    """payment_method is the endpoint's enum: v1's five values; v2's OAS list plus the NODE extras."""
    form = (
        v1_form(payment_method=method)
        if version == "v1"
        else v2_form(**{"transaction[payment_method]": method})
    )

    response = await pay(client, "INV-1005", form, version=version)

    assert response.status_code == 200, response.text
    assert response.json()["transaction"]["payment_method"] == method


async def test_json_body_carries_no_parameters(client: httpx.AsyncClient) -> None:
    """record_payment is form-encoded: a JSON body leaves the required parameters blank."""
    response = await client.post("/api/v1/invoices/INV-1001/record_payment", json=v1_form())

    assert response.status_code == 400
    assert response.json()["param"] == "payment_method"
    assert response.json()["error_code"] == "param_required"


# --- authentication ---------------------------------------------------------------------------------


async def test_wrong_or_missing_key_is_401(client: httpx.AsyncClient) -> None:
    """A wrong or missing API key answers 401 api_authentication_failed, type untyped."""
    wrong = await pay(client, "INV-1001", v1_form(), headers={"Authorization": basic("not_the_key")})
    missing = await client.post(
        "/api/v1/invoices/INV-1001/record_payment", data=v1_form(), headers={"Authorization": ""}
    )

    for response in (wrong, missing):
        assert response.status_code == 401
        body = response.json()
        assert (body["api_error_code"], body["http_status_code"]) == ("api_authentication_failed", 401)
        assert (body["type"], body["error_code"]) == ("untyped", "api_authentication_failed")
    assert (await invoice(client, "INV-1001"))["amount_paid"] == 0


async def test_switching_the_key_rejects_then_recovers(client: httpx.AsyncClient) -> None:
    """PUT /sandbox/api-key makes the old key fail (401) until the client uses the new one."""
    assert (await client.put("/sandbox/api-key", json={"api_key": "rotated_key"})).status_code == 204

    assert (await pay(client, "INV-1001", v1_form())).status_code == 401
    recovered = await pay(client, "INV-1001", v1_form(), headers={"Authorization": basic("rotated_key")})

    assert recovered.status_code == 200


# --- idempotency ------------------------------------------------------------------------------------


async def test_same_key_and_request_replays_without_recording_again(client: httpx.AsyncClient) -> None:
    """A retry with the same key and form replays the stored answer, flagged, and records nothing."""
    first = await pay(client, "INV-1003", v1_form(), key="evt-1")

    second = await pay(client, "INV-1003", v1_form(), key="evt-1")

    assert second.status_code == 200
    assert second.content == first.content
    assert second.headers["chargebee-idempotency-replayed"] == "true"
    assert "chargebee-idempotency-replayed" not in first.headers
    assert (await invoice(client, "INV-1003"))["amount_paid"] == 2500
    log = (await client.get("/sandbox/requests")).json()["requests"]
    assert [entry["replayed"] for entry in log] == [False, True]


async def test_stored_error_is_replayed_too(client: httpx.AsyncClient) -> None:
    """An error is stored under its key: the same retry gets the same 404 even once the invoice exists."""
    assert (await pay(client, "INV-7777", v1_form(), key="evt-404")).status_code == 404
    await client.post("/sandbox/invoices", json={"id": "INV-7777", "total": 5000})

    replay = await pay(client, "INV-7777", v1_form(), key="evt-404")

    assert replay.status_code == 404
    assert replay.headers["chargebee-idempotency-replayed"] == "true"
    assert (await pay(client, "INV-7777", v1_form(), key="evt-404-fixed")).status_code == 200


async def test_key_reused_with_a_different_request_is_422(client: httpx.AsyncClient) -> None:
    """The same key with another form answers 422 unable_to_process_request and records nothing."""
    await pay(client, "INV-1004", v1_form(amount="1000"), key="evt-2")

    response = await pay(client, "INV-1004", v1_form(amount="2000"), key="evt-2")

    assert response.status_code == 422
    body = response.json()
    assert (body["api_error_code"], body["type"], body["http_status_code"]) == (
        "unable_to_process_request",
        "invalid_request",
        422,
    )
    assert "different request" in body["message"]
    assert (await invoice(client, "INV-1004"))["amount_paid"] == 1000


async def test_key_is_forgotten_after_thirty_minutes(client: httpx.AsyncClient, clock: FakeClock) -> None:
    """Within 30 minutes a key replays; after the window the same request is processed again."""
    await pay(client, "INV-1005", v1_form(amount="1000"), key="evt-3")
    clock.now += 29 * 60
    assert (await pay(client, "INV-1005", v1_form(amount="1000"), key="evt-3")).headers.get(
        "chargebee-idempotency-replayed"
    )

    clock.now += 60 + 1
    again = await pay(client, "INV-1005", v1_form(amount="1000"), key="evt-3")

    assert again.status_code == 200 and "chargebee-idempotency-replayed" not in again.headers
    assert (await invoice(client, "INV-1005"))["amount_paid"] == 2000


async def test_idempotency_key_over_100_characters_is_400(client: httpx.AsyncClient) -> None:
    """Chargebee documents keys of up to 100 characters; a longer one is refused."""
    response = await pay(client, "INV-1001", v1_form(), key="k" * 101)

    assert response.status_code == 400
    assert response.json()["param"] == "chargebee-idempotency-key"


# --- rate limit -------------------------------------------------------------------------------------


async def test_rate_limit_answers_429_with_retry_after(clock: FakeClock) -> None:
    """Over `rate_limit` API calls in a rolling minute answer 429 with Retry-After until it rolls."""
    async with make_client(clock, rate_limit=2) as client:
        assert (await pay(client, "INV-1001", v1_form(amount="100"))).status_code == 200
        clock.now += 10
        assert (await client.get("/api/v1/invoices/INV-1001")).status_code == 200

        limited = await pay(client, "INV-1001", v1_form(amount="100"))

        assert limited.status_code == 429
        assert limited.headers["retry-after"] == "50"
        assert limited.json()["api_error_code"] == "api_request_limit_exceeded"
        assert limited.json()["type"] == "operation_failed"
        clock.now += 50
        admitted = await pay(client, "INV-1001", v1_form(amount="100"))
        assert admitted.status_code == 200
        assert admitted.json()["invoice"]["amount_paid"] == 200  # the refused call recorded nothing


# --- faults -----------------------------------------------------------------------------------------


async def test_fault_hits_the_next_count_calls_then_stops(client: httpx.AsyncClient) -> None:
    """A 503 fault answers the next `count` calls with Chargebee's body and Retry-After, recording nothing."""
    created = await client.post("/sandbox/faults", json={"status": 503, "count": 2, "retry_after": 7})
    assert created.status_code == 201

    answers = [await pay(client, "INV-1001", v1_form()) for _ in range(3)]

    assert [a.status_code for a in answers] == [503, 503, 200]
    assert answers[0].headers["retry-after"] == "7"
    assert (answers[0].json()["api_error_code"], answers[0].json()["type"]) == (
        "site_not_ready",
        "operation_failed",
    )
    assert (await invoice(client, "INV-1001"))["amount_paid"] == 2500
    assert (await client.get("/sandbox/faults")).json() == {"faults": []}


async def test_fault_can_target_one_invoice(client: httpx.AsyncClient) -> None:
    """A fault with invoice_id leaves calls for other invoices alone."""
    await client.post("/sandbox/faults", json={"status": 500, "invoice_id": "INV-1002"})

    other = await pay(client, "INV-1001", v1_form())
    targeted = await pay(client, "INV-1002", v1_form())

    assert other.status_code == 200
    assert (targeted.status_code, targeted.json()["api_error_code"]) == (500, "internal_error")
    assert targeted.json()["type"] == "operation_failed"


async def test_fault_uses_a_given_api_error_code(client: httpx.AsyncClient) -> None:
    """A 429 fault with api_error_code lock_timeout answers exactly that."""
    fault = {"status": 429, "api_error_code": "lock_timeout", "retry_after": 2}
    await client.post("/sandbox/faults", json=fault)

    response = await pay(client, "INV-1001", v1_form())

    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.json()["api_error_code"] == "lock_timeout"


async def test_latency_only_fault_delays_then_records(client: httpx.AsyncClient) -> None:
    """A fault with only latency_ms slows the call down and then records the payment normally."""
    await client.post("/sandbox/faults", json={"latency_ms": 200})
    started = time.perf_counter()

    response = await pay(client, "INV-1001", v1_form())

    assert time.perf_counter() - started >= 0.2
    assert response.status_code == 200
    assert (await invoice(client, "INV-1001"))["amount_paid"] == 2500


async def test_fault_is_not_stored_under_the_idempotency_key(client: httpx.AsyncClient) -> None:
    """Chargebee never processed a faulted call, so a retry with the same key is processed, not replayed."""
    await client.post("/sandbox/faults", json={"status": 503})
    assert (await pay(client, "INV-1001", v1_form(), key="evt-5")).status_code == 503

    retry = await pay(client, "INV-1001", v1_form(), key="evt-5")

    assert retry.status_code == 200 and "chargebee-idempotency-replayed" not in retry.headers


async def test_after_commit_fault_records_but_loses_the_answer(client: httpx.AsyncClient) -> None:
    """With after_commit the payment is recorded and stored; the caller sees the fault, its retry a replay."""
    await client.post("/sandbox/faults", json={"status": 504, "after_commit": True})
    assert (await pay(client, "INV-1001", v1_form(), key="evt-6")).status_code == 504
    assert (await invoice(client, "INV-1001"))["amount_paid"] == 2500

    retry = await pay(client, "INV-1001", v1_form(), key="evt-6")

    assert retry.status_code == 200 and retry.headers["chargebee-idempotency-replayed"] == "true"
    assert (await invoice(client, "INV-1001"))["amount_paid"] == 2500


async def test_disconnect_fault_raises_in_process(client: httpx.AsyncClient) -> None:
    """In-process there is no socket to drop, so the dropped call surfaces as ConnectionDropped."""
    await client.post("/sandbox/faults", json={"disconnect": True})

    with pytest.raises(ConnectionDropped):
        await pay(client, "INV-1001", v1_form())

    assert (await client.get("/sandbox/requests")).json()["requests"][0]["status"] == 0


async def test_fault_without_an_effect_is_400(client: httpx.AsyncClient) -> None:
    """A fault needs a status, latency or disconnect; an empty one is refused."""
    response = await client.post("/sandbox/faults", json={"count": 3})

    assert response.status_code == 400
    assert (await client.delete("/sandbox/faults")).json() == {"cleared": 0}


async def test_configured_latency_delays_every_api_call(clock: FakeClock) -> None:
    """SandboxConfig.latency_ms is added to every API call."""
    async with make_client(clock, latency_ms=150) as client:
        started = time.perf_counter()
        await client.get("/api/v2/invoices/INV-1001")
        assert time.perf_counter() - started >= 0.15


# --- the request log --------------------------------------------------------------------------------


async def test_request_log_records_form_skip_headers_and_outcome(client: httpx.AsyncClient) -> None:
    """Every record_payment call is logged with its form, chargebee-* headers, status and time; never auth."""
    skip = {
        "chargebee-event-email": "all-disabled",
        "chargebee-event-webhook": "all-disabled",
        "chargebee-event-actions": "all-disabled",
        "chargebee-request-origin-ip": "10.0.0.7",
    }
    await pay(client, "INV-1006", v1_form(), key="evt-7", headers=skip)
    await pay(client, "INV-0000", v2_form(), version="v2")

    log = (await client.get("/sandbox/requests")).json()

    first, second = log["requests"]
    assert (first["operation"], first["invoice_id"], first["api_version"], first["status"]) == (
        "record_payment",
        "INV-1006",
        "v1",
        200,
    )
    assert first["replayed"] is False
    assert first["form"] == v1_form() and first["at"] == NOW
    assert first["headers"] == {
        **skip,
        "chargebee-idempotency-key": "evt-7",
        "content-type": "application/x-www-form-urlencoded",
    }
    assert (second["api_version"], second["status"], second["form"]) == ("v2", 404, v2_form())
    only_unknown = await client.get("/sandbox/requests", params={"invoice_id": "INV-0000"})
    assert only_unknown.json()["requests"] == [second]
    assert (await client.delete("/sandbox/requests")).json() == {"cleared": 2}
    assert (await client.get("/sandbox/requests")).json() == {"requests": [], "dropped": 0}


async def test_request_log_keeps_the_newest_entries(clock: FakeClock) -> None:
    """Past request_log_limit the oldest entries go, and `dropped` counts them."""
    async with make_client(clock, request_log_limit=2) as client:
        for amount in ("1", "2", "3"):
            await pay(client, "INV-1001", v1_form(amount=amount))

        log = (await client.get("/sandbox/requests")).json()

    assert [entry["form"]["amount"] for entry in log["requests"]] == ["2", "3"]
    assert log["dropped"] == 1


# --- reads and admin --------------------------------------------------------------------------------


async def test_retrieve_and_list_invoices(client: httpx.AsyncClient) -> None:
    """GET one invoice (404 if unknown) and list them ten at a time with next_offset."""
    assert (await invoice(client, "INV-3001", "v2"))["currency_code"] == "BHD"
    assert (await client.get("/api/v1/invoices/INV-0000")).json()["api_error_code"] == "resource_not_found"

    first = (await client.get("/api/v2/invoices")).json()
    rest = (await client.get("/api/v2/invoices", params={"offset": first["next_offset"]})).json()

    ids = [item["invoice"]["id"] for item in first["list"] + rest["list"]]
    assert len(first["list"]) == 10 and "next_offset" not in rest
    assert ids[:3] == ["INV-1001", "INV-1002", "INV-1003"] and "INV-9004" in ids and len(ids) == 17
    assert (await client.get("/api/v2/invoices", params={"limit": "0"})).status_code == 400


async def test_unknown_version_and_method_answer_in_chargebee_shape(client: httpx.AsyncClient) -> None:
    """/api/v3 is 404 and a GET on record_payment is 405, both with Chargebee error bodies."""
    assert (await pay(client, "INV-1001", v1_form(), version="v3")).json()[
        "api_error_code"
    ] == "resource_not_found"

    response = await client.get("/api/v1/invoices/INV-1001/record_payment")

    assert (response.status_code, response.json()["api_error_code"]) == (405, "http_method_not_supported")
    assert response.json()["type"] == "invalid_request"


async def test_create_invoice_then_409_when_it_exists(client: httpx.AsyncClient) -> None:
    """POST /sandbox/invoices creates a payable invoice; the same id again is 409; bad bodies are 400."""
    spec = {"id": "ACME-1", "total": 9000, "amount_due": 4000, "currency_code": "EUR", "customer_id": "c1"}

    created = await client.post("/sandbox/invoices", json=spec)

    assert created.status_code == 201
    inv = created.json()["invoice"]
    assert (inv["amount_paid"], inv["amount_due"], inv["customer_id"], inv["status"]) == (
        5000,
        4000,
        "c1",
        "payment_due",
    )
    assert (await client.post("/sandbox/invoices", json=spec)).status_code == 409
    assert (
        await client.post("/sandbox/invoices", json={"id": "X", "total": 1, "amount_due": 2})
    ).status_code == 400
    assert (
        await client.post("/sandbox/invoices", json={"id": "X", "total": 1, "status": "draft"})
    ).status_code == 400


async def test_bulk_creates_numbered_invoices(client: httpx.AsyncClient) -> None:
    """POST /sandbox/invoices/bulk creates prefix1..prefixN in one call; a clash creates nothing."""
    body = {"prefix": "BENCH-", "count": 10000, "total": 1000, "currency_code": "USD"}

    created = await client.post("/sandbox/invoices/bulk", json=body)

    assert created.status_code == 201
    assert created.json() == {"created": 10000, "first": "BENCH-1", "last": "BENCH-10000"}
    assert (await invoice(client, "BENCH-10000"))["amount_due"] == 1000
    assert (await pay(client, "BENCH-5000", v1_form(amount=None))).json()["invoice"]["status"] == "paid"
    assert (await client.post("/sandbox/invoices/bulk", json={**body, "count": 20000})).status_code == 409
    assert (await client.get("/api/v1/invoices/BENCH-10001")).status_code == 404


async def test_reset_restores_the_starting_state(client: httpx.AsyncClient) -> None:
    """POST /sandbox/reset: seeds again, the configured key, and no payments, faults, keys or log."""
    await pay(client, "INV-1001", v1_form(), key="evt-8")
    await client.post("/sandbox/invoices", json={"id": "EXTRA-1", "total": 100})
    await client.post("/sandbox/faults", json={"status": 500, "count": 5})
    await client.put("/sandbox/api-key", json={"api_key": "other"})

    reset = await client.post("/sandbox/reset")

    assert reset.json() == {"invoices": 17}
    assert (await invoice(client, "INV-1001"))["amount_paid"] == 0
    assert (await client.get("/api/v1/invoices/EXTRA-1")).status_code == 404
    assert (await client.get("/sandbox/faults")).json() == {"faults": []}
    assert (await client.get("/sandbox/requests")).json()["requests"] == []
    retry = await pay(client, "INV-1001", v1_form(), key="evt-8")
    assert retry.status_code == 200 and "chargebee-idempotency-replayed" not in retry.headers


async def test_without_seed_there_are_no_invoices(clock: FakeClock) -> None:
    """SandboxConfig(seed=False) starts empty, and reset keeps it empty."""
    async with make_client(clock, seed=False) as client:
        assert (await client.get("/api/v1/invoices")).json() == {"list": []}
        assert (await client.post("/sandbox/reset")).json() == {"invoices": 0}
        assert (await client.get("/sandbox/health")).json() == {"status": "ok"}


# --- over real HTTP ---------------------------------------------------------------------------------


async def test_records_a_payment_over_real_http() -> None:
    """Under uvicorn on 127.0.0.1, aiohttp records a payment with Basic auth and gets a replay on retry."""
    app = create_app(SandboxConfig())
    async with serve(app) as base, aiohttp.ClientSession(headers={"Authorization": basic(KEY)}) as session:
        url = f"{base}/api/v1/invoices/INV-1007/record_payment"
        headers = {"chargebee-idempotency-key": "evt-http", "chargebee-event-webhook": "all-disabled"}
        async with session.post(url, data=v1_form(), headers=headers) as response:
            assert response.status == 200
            body = await response.json()
        async with session.post(url, data=v1_form(), headers=headers) as response:
            assert response.headers["chargebee-idempotency-replayed"] == "true"
            assert await response.json() == body

    assert body["invoice"]["amount_due"] == 50000 - 2500
    assert body["transaction"]["id"].startswith("txn_")


async def test_disconnect_fault_drops_the_connection_over_real_http() -> None:
    """A disconnect fault closes the socket without a response; after_commit has recorded the payment."""
    app = create_app(SandboxConfig())
    async with serve(app) as base, aiohttp.ClientSession(headers={"Authorization": basic(KEY)}) as session:
        fault = {"disconnect": True, "after_commit": True}
        async with session.post(f"{base}/sandbox/faults", json=fault) as created:
            assert created.status == 201
        url = f"{base}/api/v1/invoices/INV-1008/record_payment"
        headers = {"chargebee-idempotency-key": "evt-drop"}
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await session.post(url, data=v1_form(), headers=headers)
        async with session.post(url, data=v1_form(), headers=headers) as response:
            assert response.status == 200
            assert response.headers["chargebee-idempotency-replayed"] == "true"
            assert (await response.json())["invoice"]["amount_paid"] == 2500


async def test_an_unreadable_fault_answers_200_with_html_and_may_commit(client: httpx.AsyncClient) -> None:
    """`unreadable` (with after_commit) records the payment, then answers a 200 that is not JSON."""
    await client.post(
        "/sandbox/faults", json={"unreadable": True, "after_commit": True, "invoice_id": "INV-1001"}
    )
    answer = await client.post("/api/v1/invoices/INV-1001/record_payment", data=v1_form())
    assert answer.status_code == 200 and answer.text.startswith("<html>")
    assert (await client.get("/api/v1/invoices/INV-1001")).json()["invoice"]["amount_due"] == 10000 - 2500


async def test_a_redirect_fault_answers_3xx_with_a_location(client: httpx.AsyncClient) -> None:
    """A 3xx fault redirects elsewhere, recording nothing."""
    await client.post("/sandbox/faults", json={"status": 302})
    answer = await client.post("/api/v1/invoices/INV-1001/record_payment", data=v1_form())
    assert (answer.status_code, answer.headers["location"]) == (302, "/moved")
    assert (await client.get("/api/v1/invoices/INV-1001")).json()["invoice"]["amount_due"] == 10000
