"""The Chargebee sandbox's reads: invoices, transactions and customers, filters, faults by operation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from service.chargebee_sandbox import SandboxConfig, create_app
from tests.conftest import serve
from tests.test_chargebee_sandbox import KEY, NOW, FakeClock, basic, make_client, pay, v1_form, v2_form


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def client(clock: FakeClock) -> AsyncIterator[httpx.AsyncClient]:
    async with make_client(clock) as test_client:
        yield test_client


async def get(client: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def ids(page: dict[str, Any], resource: str) -> list[str]:
    return [item[resource]["id"] for item in page["list"]]


async def create_invoice(client: httpx.AsyncClient, **spec: Any) -> None:
    response = await client.post("/sandbox/invoices", json={"total": 1000, **spec})
    assert response.status_code == 201, response.text


# --- invoices ---------------------------------------------------------------------------------------


async def test_retrieve_and_page_invoices(client: httpx.AsyncClient) -> None:
    """GET one invoice (404 if unknown) and list them ten at a time; next_offset only while more remain."""
    assert (await get(client, "/api/v2/invoices/INV-3001"))["invoice"]["currency_code"] == "BHD"
    missing = await client.get("/api/v1/invoices/INV-0000")
    assert (missing.status_code, missing.json()["api_error_code"]) == (404, "resource_not_found")

    first = await get(client, "/api/v2/invoices")
    rest = await get(client, "/api/v2/invoices", offset=first["next_offset"], limit="100")

    assert len(first["list"]) == 10 and "next_offset" not in rest
    assert ids(first, "invoice")[:3] == ["INV-1001", "INV-1002", "INV-1003"]
    assert len(ids(first, "invoice") + ids(rest, "invoice")) == 17


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
        ({"offset": "abc"}, "offset"),
        ({"customer_id[starts_with]": "cust"}, "customer_id[starts_with]"),
        ({"customer_id[like]": "cust"}, "customer_id[like]"),
        ({"customer[is]": "cust_INV-1001"}, "customer[is]"),
        ({"status[is]": "draft"}, "status[is]"),
        ({"status[in]": "payment_due"}, "status[in]"),
        ({"sort_by[asc]": "total"}, "sort_by[asc]"),
        ({"sort_by[up]": "date"}, "sort_by[up]"),
        ({"customerid": "x"}, "customerid"),
    ],
)
async def test_list_invoices_refuses_what_it_cannot_honour(
    client: httpx.AsyncClient, params: dict[str, str], param: str
) -> None:
    """Bad paging, unknown filters, operators or sort attributes answer 400 param_wrong_value naming them."""
    response = await client.get("/api/v2/invoices", params=params)

    assert response.status_code == 400
    body = response.json()
    assert (body["api_error_code"], body["type"], body["param"]) == (
        "param_wrong_value",
        "invalid_request",
        param,
    )


async def test_list_invoices_filters_by_customer_and_status(client: httpx.AsyncClient) -> None:
    """customer_id[is|in] and status[is|in] (a JSON-ish array, as Chargebee takes it) combine."""
    await create_invoice(client, id="A-1", customer_id="acme")
    await create_invoice(client, id="A-2", customer_id="acme", status="not_paid")
    await create_invoice(client, id="A-3", customer_id="acme", status="paid")
    await create_invoice(client, id="B-1", customer_id="globex", status="posted")

    acme = await get(client, "/api/v2/invoices", **{"customer_id[is]": "acme"})
    open_ = await get(
        client,
        "/api/v2/invoices",
        **{"customer_id[in]": '["acme","globex"]', "status[in]": '["payment_due","not_paid","posted"]'},
    )
    unquoted = await get(
        client, "/api/v2/invoices", **{"customer_id[in]": "[acme, globex]", "status[is]": "paid"}
    )

    assert ids(acme, "invoice") == ["A-1", "A-2", "A-3"]
    assert ids(open_, "invoice") == ["A-1", "A-2", "B-1"]
    assert ids(unquoted, "invoice") == ["A-3"]


async def test_list_invoices_sorts_by_date_either_way(client: httpx.AsyncClient) -> None:
    """sort_by[asc]=date gives the oldest first, sort_by[desc]=date the newest; paging follows the order."""
    for invoice_id, date in (("OLD", 1_700_000_000), ("NEW", 1_740_000_000), ("MID", 1_720_000_000)):
        await create_invoice(client, id=invoice_id, customer_id="dated", date=date)
    where = {"customer_id[is]": "dated"}

    oldest = await get(client, "/api/v2/invoices", **where, **{"sort_by[asc]": "date", "limit": "2"})
    newest = await get(client, "/api/v2/invoices", **where, **{"sort_by[desc]": "date"})
    last = await get(
        client, "/api/v2/invoices", **where, **{"sort_by[asc]": "date", "offset": oldest["next_offset"]}
    )

    assert ids(oldest, "invoice") == ["OLD", "MID"] and ids(last, "invoice") == ["NEW"]
    assert ids(newest, "invoice") == ["NEW", "MID", "OLD"]
    assert oldest["list"][0]["invoice"]["date"] == 1_700_000_000


async def test_v1_lists_take_only_what_oas_v1_documents(client: httpx.AsyncClient) -> None:
    """v1 list_invoices takes limit, offset and paid_on_after (paid since, by paid_on); v2 filters are 400."""
    await pay(client, "INV-1002", v1_form(amount=None, paid_at="1749990500"))
    await pay(client, "INV-1001", v1_form(amount=None, paid_at="1749990100"))

    paid = await get(client, "/api/v1/invoices", paid_on_after="1749990000")
    refused = await client.get("/api/v1/invoices", params={"customer_id[is]": "cust_INV-1001"})
    sorted_ = await client.get("/api/v1/transactions", params={"sort_by[asc]": "date"})

    assert ids(paid, "invoice") == ["INV-1001", "INV-1002"]  # by paid_on; INV-9001 was paid earlier
    assert [item["invoice"]["paid_on"] for item in paid["list"]] == [1749990100, 1749990500]
    for response, param in ((refused, "customer_id[is]"), (sorted_, "sort_by[asc]")):
        assert response.status_code == 400
        assert (response.json()["param"], response.json()["api_error_code"]) == (param, "param_wrong_value")
        assert "API v1" in response.json()["message"]


# --- transactions -----------------------------------------------------------------------------------


async def test_list_transactions_finds_a_payment_by_reference_amount_and_method(
    client: httpx.AsyncClient,
) -> None:
    """The payments record_payment created, filtered as a reconciler would look for one of them."""
    await pay(client, "INV-1001", v1_form(reference_number="DEP-7", amount="2500"))
    await pay(client, "INV-1002", v1_form(reference_number="DEP-7", amount="3000"))
    await pay(client, "INV-1003", v2_form(**{"transaction[reference_number]": "DEP-7"}), version="v2")
    wanted = {"reference_number[is]": "DEP-7", "amount[is]": "2500", "payment_method[is]": "bank_transfer"}

    found = await get(
        client, "/api/v2/transactions", **wanted, **{"type[is]": "payment", "status[is]": "success"}
    )
    by_customer = await get(client, "/api/v2/transactions", **{"customer_id[is]": "cust_INV-1003"})
    every = await get(client, "/api/v2/transactions", **{"sort_by[desc]": "date"})

    [txn] = [item["transaction"] for item in found["list"]]
    assert (txn["customer_id"], txn["amount"], txn["reference_number"]) == ("cust_INV-1001", 2500, "DEP-7")
    assert (txn["status"], txn["type"], txn["gateway"], txn["object"]) == (
        "success",
        "payment",
        "not_applicable",
        "transaction",
    )
    assert txn["linked_invoices"][0]["invoice_id"] == "INV-1001"
    assert [item["transaction"]["payment_method"] for item in by_customer["list"]] == ["check"]
    assert len(every["list"]) == 3 and "next_offset" not in every


@pytest.mark.parametrize(
    "params",
    [
        {"reference_number[in]": '["DEP-7"]'},
        {"reference_number[starts_with]": "DEP"},
        {"amount[between]": "[100]"},
        {"amount[is]": "12.50"},
        {"payment_method[is]": "bitcoin"},
        {"invoice_id[is]": "INV-1001"},
        {"sort_by[asc]": "amount"},
    ],
)
async def test_list_transactions_refuses_unsupported_filters(
    client: httpx.AsyncClient, params: dict[str, str]
) -> None:
    """Operators Chargebee lacks, ones the sandbox lacks, bad values and unknown attributes: 400."""
    response = await client.get("/api/v2/transactions", params=params)

    assert response.status_code == 400
    assert response.json()["param"] == next(iter(params))


async def test_v1_transactions_use_v1_names(client: httpx.AsyncClient) -> None:
    """GET /api/v1/transactions lists the same payments in v1's shape (invoice_amount, no object)."""
    await pay(client, "INV-1004", v2_form(**{"transaction[amount]": "30000"}), version="v2")

    page = await get(client, "/api/v1/transactions")

    [txn] = [item["transaction"] for item in page["list"]]
    assert (txn["amount"], txn["amount_unused"]) == (30000, 5000)
    assert txn["linked_invoices"][0] == {
        "invoice_id": "INV-1004",
        "applied_amount": 25000,
        "applied_at": int(NOW),
        "invoice_date": txn["linked_invoices"][0]["invoice_date"],
        "invoice_amount": 25000,
    }
    assert "object" not in txn


# --- customers --------------------------------------------------------------------------------------


async def test_seeded_invoices_have_customers(client: httpx.AsyncClient) -> None:
    """Each seeded invoice's customer cust_<invoice id> exists, with no excess payments yet."""
    customer = (await get(client, "/api/v2/customers/cust_INV-1001"))["customer"]
    v1 = (await get(client, "/api/v1/customers/cust_INV-1001"))["customer"]
    missing = await client.get("/api/v2/customers/nobody")

    assert (customer["id"], customer["excess_payments"], customer["object"]) == (
        "cust_INV-1001",
        0,
        "customer",
    )
    assert {"created_at", "resource_version", "updated_at", "promotional_credits"} <= customer.keys()
    assert (v1["excess_payments"], v1["account_credits"]) == (0, 0) and "object" not in v1
    assert (missing.status_code, missing.json()["api_error_code"]) == (404, "resource_not_found")
    assert "nobody" in missing.json()["message"]


async def test_create_customers_and_find_them_by_name_company_or_email(client: httpx.AsyncClient) -> None:
    """POST /sandbox/customers creates one (409 twice); list customers filters on [is] of each name field."""
    acme = {
        "id": "acme",
        "company": "Acme Corp",
        "first_name": "Wile",
        "last_name": "Coyote",
        "email": "w@acme.test",
    }
    created = await client.post("/sandbox/customers", json=acme)
    await client.post("/sandbox/customers", json={"id": "globex", "company": "Globex", "first_name": "Hank"})

    assert created.status_code == 201
    assert created.json()["customer"]["company"] == "Acme Corp"
    assert (await client.post("/sandbox/customers", json={"id": "acme"})).status_code == 409
    assert (await client.post("/sandbox/customers", json={"id": "a/b"})).status_code == 400
    for name, value in (("company", "Acme Corp"), ("first_name", "Wile"), ("last_name", "Coyote")):
        assert ids(await get(client, "/api/v2/customers", **{f"{name}[is]": value}), "customer") == ["acme"]
    assert ids(await get(client, "/api/v2/customers", **{"email[is]": "w@acme.test"}), "customer") == ["acme"]
    assert ids(await get(client, "/api/v2/customers", **{"id[is]": "globex"}), "customer") == ["globex"]
    everyone = await get(client, "/api/v2/customers", limit="100")
    assert len(everyone["list"]) == 17 + 2
    refused = await client.get("/api/v2/customers", params={"company[in]": '["Acme Corp"]'})
    assert (refused.status_code, refused.json()["param"]) == (400, "company[in]")


async def test_an_invoice_creates_its_customer_when_missing(client: httpx.AsyncClient) -> None:
    """POST /sandbox/invoices with a new customer_id creates that customer; an existing one is reused."""
    await client.post("/sandbox/customers", json={"id": "known", "company": "Known Ltd"})
    await create_invoice(client, id="K-1", customer_id="known")
    await create_invoice(client, id="N-1", customer_id="newcomer")

    known = (await get(client, "/api/v2/customers/known"))["customer"]
    newcomer = (await get(client, "/api/v2/customers/newcomer"))["customer"]

    assert known["company"] == "Known Ltd"
    assert newcomer["id"] == "newcomer" and "company" not in newcomer


async def test_excess_payments_add_up_per_customer(client: httpx.AsyncClient) -> None:
    """Two overpayments on one customer's invoices add both excesses to its excess_payments."""
    await create_invoice(client, id="X-1", customer_id="over", total=1000)
    await create_invoice(client, id="X-2", customer_id="over", total=2000)

    await pay(client, "X-1", v2_form(**{"transaction[amount]": "1500"}), version="v2")
    await pay(client, "X-2", v1_form(amount="2250"))

    assert (await get(client, "/api/v2/customers/over"))["customer"]["excess_payments"] == 750


# --- the gate, faults and the request log on reads --------------------------------------------------


async def test_reads_are_authenticated_and_rate_limited(clock: FakeClock) -> None:
    """Every read passes the same gate as record_payment: 401 without the key, 429 past the limit."""
    async with make_client(clock, rate_limit=1) as client:
        denied = await client.get("/api/v2/transactions", headers={"Authorization": basic("wrong")})
        assert (denied.status_code, denied.json()["type"]) == (401, "untyped")
        assert (await client.get("/api/v2/customers")).status_code == 200

        limited = await client.get("/api/v2/invoices/INV-1001")

        assert limited.status_code == 429 and limited.headers["retry-after"] == "60"


@pytest.mark.parametrize(
    ("operation", "failing", "working"),
    [
        (
            "reads",
            ["/api/v2/invoices/INV-1001", "/api/v2/invoices", "/api/v1/transactions", "/api/v2/customers/x"],
            [],
        ),
        ("list_transactions", ["/api/v2/transactions"], ["/api/v2/invoices", "/api/v2/customers"]),
        (
            "customers",
            ["/api/v2/customers", "/api/v1/customers/cust_INV-1001"],
            ["/api/v2/invoices/INV-1001"],
        ),
        ("retrieve_invoice", ["/api/v1/invoices/INV-1001"], ["/api/v1/invoices"]),
        ("list_invoices", ["/api/v2/invoices"], ["/api/v2/invoices/INV-1001"]),
    ],
)
async def test_a_fault_hits_the_reads_of_its_operation(
    client: httpx.AsyncClient, operation: str, failing: list[str], working: list[str]
) -> None:
    """`operation` chooses which calls a fault hits; record_payment is left alone by read faults."""
    fault = {"status": 503, "count": 100, "operation": operation, "retry_after": 3}
    assert (await client.post("/sandbox/faults", json=fault)).status_code == 201

    for path in failing:
        response = await client.get(path)
        assert (response.status_code, response.json()["type"]) == (503, "operation_failed"), path
        assert response.headers["retry-after"] == "3"
    for path in working:
        assert (await client.get(path)).status_code == 200, path
    assert (await pay(client, "INV-1002", v1_form())).status_code == 200


async def test_a_full_outage_fails_reads_and_record_payment(client: httpx.AsyncClient) -> None:
    """operation "any": every API call fails until the fault's count runs out."""
    await client.post("/sandbox/faults", json={"status": 500, "count": 3, "operation": "any"})

    statuses = [
        (await pay(client, "INV-1001", v1_form())).status_code,
        (await client.get("/api/v2/transactions")).status_code,
        (await client.get("/api/v2/invoices/INV-1001")).status_code,
        (await client.get("/api/v2/invoices/INV-1001")).status_code,
    ]

    assert statuses == [500, 500, 500, 200]


async def test_a_record_payment_fault_leaves_reads_alone(client: httpx.AsyncClient) -> None:
    """The default operation is record_payment: reads keep working while payments fail."""
    await client.post("/sandbox/faults", json={"status": 503, "count": 5})

    assert (await pay(client, "INV-1001", v1_form())).status_code == 503
    assert (await client.get("/api/v2/invoices/INV-1001")).status_code == 200
    assert (await client.get("/api/v2/transactions")).status_code == 200
    assert (await client.get("/sandbox/faults")).json()["faults"][0]["remaining"] == 4


async def test_invoice_id_narrows_a_read_fault_to_calls_naming_that_invoice(
    client: httpx.AsyncClient,
) -> None:
    """With invoice_id, a reads fault hits retrieving that invoice only, not lists or other invoices."""
    await client.post(
        "/sandbox/faults", json={"status": 500, "count": 9, "operation": "reads", "invoice_id": "INV-1002"}
    )

    assert (await client.get("/api/v2/invoices/INV-1002")).status_code == 500
    assert (await client.get("/api/v2/invoices/INV-1001")).status_code == 200
    assert (await client.get("/api/v2/invoices")).status_code == 200


@pytest.mark.parametrize(
    "fault",
    [
        {"status": 504, "operation": "reads", "after_commit": True},
        {"status": 504, "operation": "list_invoices", "after_commit": True},
        {"status": 500, "operation": "list_transactions", "invoice_id": "INV-1001"},
        {"status": 500, "operation": "customers", "invoice_id": "INV-1001"},
        {"status": 500, "operation": "writes"},
    ],
)
async def test_faults_that_cannot_apply_are_refused(client: httpx.AsyncClient, fault: dict[str, Any]) -> None:
    """after_commit only means something for record_payment; invoice_id needs calls that name one."""
    response = await client.post("/sandbox/faults", json=fault)

    assert response.status_code == 400
    assert (await client.get("/sandbox/faults")).json() == {"faults": []}


async def test_latency_fault_on_a_read_delays_then_answers(client: httpx.AsyncClient) -> None:
    """A latency-only read fault answers normally after the delay."""
    await client.post("/sandbox/faults", json={"latency_ms": 100, "operation": "list_invoices"})

    response = await client.get("/api/v2/invoices", params={"limit": "1"})

    assert response.status_code == 200 and len(response.json()["list"]) == 1


async def test_request_log_keeps_reads_apart_from_record_payment(client: httpx.AsyncClient) -> None:
    """GET /sandbox/requests lists record_payment calls as before; ?operation= picks reads, or all."""
    await client.get("/api/v2/transactions", params={"reference_number[is]": "DEP-1"})
    await pay(client, "INV-1001", v1_form())
    await client.get("/api/v1/invoices/INV-1001")
    await client.get("/api/v2/customers/cust_INV-1001")

    default = (await client.get("/sandbox/requests")).json()["requests"]
    reads = (await client.get("/sandbox/requests", params={"operation": "list_transactions"})).json()[
        "requests"
    ]
    every = (await client.get("/sandbox/requests", params={"operation": "all"})).json()["requests"]
    one_invoice = await client.get("/sandbox/requests", params={"operation": "all", "invoice_id": "INV-1001"})

    assert [entry["operation"] for entry in default] == ["record_payment"]
    [listed] = reads
    assert (listed["api_version"], listed["query"], listed["status"], listed["at"]) == (
        "v2",
        {"reference_number[is]": "DEP-1"},
        200,
        NOW,
    )
    assert "authorization" not in listed["headers"]
    assert [entry["operation"] for entry in every] == [
        "list_transactions",
        "record_payment",
        "retrieve_invoice",
        "retrieve_customer",
    ]
    assert every[3]["customer_id"] == "cust_INV-1001"
    assert [entry["operation"] for entry in one_invoice.json()["requests"]] == [
        "record_payment",
        "retrieve_invoice",
    ]
    assert (await client.get("/sandbox/requests", params={"operation": "nope"})).status_code == 400


async def test_reset_forgets_customers_and_transactions(client: httpx.AsyncClient) -> None:
    """POST /sandbox/reset drops created customers and every transaction, and re-seeds the customers."""
    await client.post("/sandbox/customers", json={"id": "temp"})
    await pay(client, "INV-1001", v1_form(amount="20000"))

    await client.post("/sandbox/reset")

    assert (await client.get("/api/v2/customers/temp")).status_code == 404
    assert (await get(client, "/api/v2/transactions"))["list"] == []
    assert (await get(client, "/api/v2/customers/cust_INV-1001"))["customer"]["excess_payments"] == 0


async def test_read_fault_disconnects_over_real_http() -> None:
    """Under uvicorn, a disconnect fault on reads drops a GET without a response; the next one answers.

    httpx, because aiohttp silently resends an idempotent GET whose connection was dropped.
    """
    app = create_app(SandboxConfig())
    headers = {"Authorization": basic(KEY)}
    async with serve(app) as base, httpx.AsyncClient(base_url=base, headers=headers) as http:
        fault = {"disconnect": True, "operation": "list_transactions"}
        assert (await http.post("/sandbox/faults", json=fault)).status_code == 201
        with pytest.raises(httpx.RemoteProtocolError):
            await http.get("/api/v2/transactions")
        response = await http.get("/api/v2/transactions", params={"type[is]": "payment"})
        assert (response.status_code, response.json()) == (200, {"list": []})
        log = (await http.get("/sandbox/requests", params={"operation": "list_transactions"})).json()
        assert [entry["status"] for entry in log["requests"]] == [0, 200]


async def test_a_transaction_is_retrieved_by_id_in_each_versions_shape(client: httpx.AsyncClient) -> None:
    """GET /transactions/{id} answers the payment record_payment created; an unknown id is a 404."""
    paid = await client.post("/api/v2/invoices/INV-1001/record_payment", data=v2_form())
    txn_id = paid.json()["transaction"]["id"]
    for version in ("v1", "v2"):
        found = await client.get(f"/api/{version}/transactions/{txn_id}")
        assert found.status_code == 200
        assert found.json()["transaction"]["id"] == txn_id
        assert found.json()["transaction"]["linked_invoices"][0]["invoice_id"] == "INV-1001"
    missing = await client.get("/api/v1/transactions/txn_nobody")
    assert (missing.status_code, missing.json()["api_error_code"]) == (404, "resource_not_found")
