"""The read routes (v1 and v2): retrieve and list invoices, retrieve and list transactions, customers.

Each passes the same gate as record_payment (version, authentication, rate limit), the configured
latency and any fault armed for its operation, and is logged under that operation.

List invoices for a customer (`GET /customers/{id}/invoices`, PY/NODE `invoices_for_customer`,
in OAS-v1 and v2) answers that customer's invoices in creation order, REF list operations' default
("sorted in ascending order by the created_at attribute"), paged like every list. For a customer
that does not exist it answers 404 resource_not_found, as retrieving that customer would: [?] no
source says whether Chargebee answers that or an empty list, so a client should take both as
"no invoices". Its parameters are checked first, so a bad `limit` is a 400 either way ([?]).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from starlette.requests import Request
from starlette.responses import Response

from service.chargebee_sandbox.api import recorded_headers
from service.chargebee_sandbox.list_specs import (
    CUSTOMERS_V1,
    CUSTOMERS_V2,
    INVOICES_FOR_CUSTOMER,
    INVOICES_V1,
    INVOICES_V2,
    TRANSACTIONS_V1,
    TRANSACTIONS_V2,
)
from service.chargebee_sandbox.listing import parse_query, run
from service.chargebee_sandbox.replies import Json, ParamError, Reply, json_reply, not_found
from service.chargebee_sandbox.shapes import customer_json, invoice_json, transaction_json
from service.chargebee_sandbox.state import Sandbox, sandbox_of

Items = Iterable[tuple[str, str]]
Answer = Callable[[Sandbox, str, Items], Reply]


async def _read(request: Request, operation: str, answer: Answer, **named: str) -> Response:
    """Runs one read call and logs it; `named` is the invoice_id or customer_id in the path."""
    sandbox = sandbox_of(request)
    received = sandbox.clock()
    reply = await _answer(sandbox, request, operation, answer, named.get("invoice_id"))
    sandbox.log_request(
        {
            "operation": operation,
            **named,
            "api_version": request.path_params["version"],
            "query": dict(request.query_params),
            "headers": recorded_headers(request.headers.raw),
            "status": reply.status,
            "replayed": False,
            "at": received,
        }
    )
    return reply.response()


async def _answer(
    sandbox: Sandbox, request: Request, operation: str, answer: Answer, invoice_id: str | None
) -> Reply:
    version = request.path_params["version"]
    refused = sandbox.gate.check(version, request.headers.get("authorization"))
    if refused is not None:
        return refused
    if sandbox.config.latency_ms:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    fault = sandbox.take_fault(operation, invoice_id)
    if fault is not None:
        if fault.latency_ms:
            await asyncio.sleep(fault.latency_ms / 1000)
        if fault.breaks:
            return fault.reply()
    try:
        return answer(sandbox, version, request.query_params.multi_items())
    except ParamError as exc:
        return exc.reply()


def _page(resource: str, bodies: list[Json], next_offset: str | None) -> Reply:
    body: Json = {"list": [{resource: item} for item in bodies]}
    if next_offset is not None:
        body["next_offset"] = next_offset
    return json_reply(200, body)


async def retrieve_invoice(request: Request) -> Response:
    invoice_id = request.path_params["invoice_id"]

    def answer(sandbox: Sandbox, version: str, items: Items) -> Reply:
        invoice = sandbox.invoices.get(invoice_id)
        if invoice is None:
            return not_found("invoice", invoice_id)
        return json_reply(200, {"invoice": invoice_json(invoice, version)})

    return await _read(request, "retrieve_invoice", answer, invoice_id=invoice_id)


def _list_invoices(sandbox: Sandbox, version: str, items: Items) -> Reply:
    spec = INVOICES_V1 if version == "v1" else INVOICES_V2
    query = parse_query(items, spec)
    invoices = list(sandbox.invoices.values())
    after = query.timestamps.get("paid_on_after")
    if after is not None:  # OAS-v1: paid at/after this time, "sorted by 'paid_on' in ascending order"
        paid = [i for i in invoices if i.paid_at is not None and i.paid_at >= after]
        invoices = sorted(paid, key=lambda i: i.paid_at or 0)
    page, next_offset = run(query, spec, invoices)
    return _page("invoice", [invoice_json(i, version) for i in page], next_offset)


async def list_invoices(request: Request) -> Response:
    return await _read(request, "list_invoices", _list_invoices)


async def list_customer_invoices(request: Request) -> Response:
    customer_id = request.path_params["customer_id"]

    def answer(sandbox: Sandbox, version: str, items: Items) -> Reply:
        query = parse_query(items, INVOICES_FOR_CUSTOMER)
        if customer_id not in sandbox.customers:
            return not_found("customer", customer_id)
        invoices = [i for i in sandbox.invoices.values() if i.customer_id == customer_id]
        page, next_offset = run(query, INVOICES_FOR_CUSTOMER, invoices)
        return _page("invoice", [invoice_json(i, version) for i in page], next_offset)

    return await _read(request, "invoices_for_customer", answer, customer_id=customer_id)


def _list_transactions(sandbox: Sandbox, version: str, items: Items) -> Reply:
    spec = TRANSACTIONS_V1 if version == "v1" else TRANSACTIONS_V2
    page, next_offset = run(parse_query(items, spec), spec, sandbox.transactions)
    bodies = [transaction_json(t, sandbox.invoices[t.invoice_id], version) for t in page]
    return _page("transaction", bodies, next_offset)


async def list_transactions(request: Request) -> Response:
    return await _read(request, "list_transactions", _list_transactions)


async def retrieve_transaction(request: Request) -> Response:
    transaction_id = request.path_params["transaction_id"]

    def answer(sandbox: Sandbox, version: str, items: Items) -> Reply:
        txn = next((t for t in sandbox.transactions if t.id == transaction_id), None)
        if txn is None:
            return not_found("transaction", transaction_id)
        return json_reply(
            200, {"transaction": transaction_json(txn, sandbox.invoices[txn.invoice_id], version)}
        )

    return await _read(request, "retrieve_transaction", answer, transaction_id=transaction_id)


async def retrieve_customer(request: Request) -> Response:
    customer_id = request.path_params["customer_id"]

    def answer(sandbox: Sandbox, version: str, items: Items) -> Reply:
        customer = sandbox.customers.get(customer_id)
        if customer is None:
            return not_found("customer", customer_id)
        return json_reply(200, {"customer": customer_json(customer, version)})

    return await _read(request, "retrieve_customer", answer, customer_id=customer_id)


def _list_customers(sandbox: Sandbox, version: str, items: Items) -> Reply:
    spec = CUSTOMERS_V1 if version == "v1" else CUSTOMERS_V2
    page, next_offset = run(parse_query(items, spec), spec, list(sandbox.customers.values()))
    return _page("customer", [customer_json(c, version) for c in page], next_offset)


async def list_customers(request: Request) -> Response:
    return await _read(request, "list_customers", _list_customers)
