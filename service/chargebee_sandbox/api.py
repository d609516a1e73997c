"""The Chargebee API routes: record_payment, retrieve and list invoices, v1 and v2."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from service.chargebee_sandbox.invoices import invoice_json
from service.chargebee_sandbox.payments import parse_integer
from service.chargebee_sandbox.replies import Json, Reply, error_reply, invoice_not_found, json_reply
from service.chargebee_sandbox.state import IDEMPOTENCY_HEADER, Sandbox, sandbox_of


def _form(content_type: str | None, body: bytes) -> dict[str, str]:
    """Form fields, last value winning; like Chargebee, any other content type carries no params."""
    if not (content_type or "").lower().startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True))


def _recorded_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
    # Never the authorization header: the log is for tests and the dev walkthrough to read.
    return {
        name.decode("latin-1"): value.decode("latin-1")
        for name, value in raw
        if name.startswith(b"chargebee-") or name in (b"content-type", b"traceparent")
    }


async def record_payment(request: Request) -> Response:
    sandbox = sandbox_of(request)
    received = sandbox.clock()
    form = _form(request.headers.get("content-type"), await request.body())
    reply = await _record_payment(sandbox, request, form)
    sandbox.log_request(
        {
            "invoice_id": request.path_params["invoice_id"],
            "api_version": request.path_params["version"],
            "form": form,
            "headers": _recorded_headers(request.headers.raw),
            "status": reply.status,
            "replayed": reply.replayed,
            "at": received,
        }
    )
    return reply.response()


async def _record_payment(sandbox: Sandbox, request: Request, form: dict[str, str]) -> Reply:
    version, invoice_id = request.path_params["version"], request.path_params["invoice_id"]
    refused = sandbox.gate(version, request.headers.get("authorization"))
    if refused is not None:
        return refused
    if sandbox.config.latency_ms:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    fault = sandbox.take_fault(invoice_id)
    if fault is None:
        return sandbox.record(invoice_id, version, form, key)
    committed = sandbox.record(invoice_id, version, form, key) if fault.after_commit else None
    if fault.latency_ms:
        await asyncio.sleep(fault.latency_ms / 1000)
    if fault.breaks:
        return fault.reply()
    # Latency only: the state is checked and changed after the sleep, with no await in between.
    return committed if committed is not None else sandbox.record(invoice_id, version, form, key)


async def _api_call(request: Request) -> tuple[Sandbox, Reply | None]:
    sandbox = sandbox_of(request)
    refused = sandbox.gate(request.path_params["version"], request.headers.get("authorization"))
    if refused is None and sandbox.config.latency_ms:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    return sandbox, refused


async def retrieve_invoice(request: Request) -> Response:
    sandbox, refused = await _api_call(request)
    if refused is not None:
        return refused.response()
    invoice_id = request.path_params["invoice_id"]
    invoice = sandbox.invoices.get(invoice_id)
    if invoice is None:
        return invoice_not_found(invoice_id).response()
    return json_reply(200, {"invoice": invoice_json(invoice, request.path_params["version"])}).response()


async def list_invoices(request: Request) -> Response:
    sandbox, refused = await _api_call(request)
    if refused is not None:
        return refused.response()
    limit = parse_integer(request.query_params.get("limit", "10"))
    if limit is None or not 1 <= limit <= 100:
        return error_reply(400, "param_wrong_value", "should be between 1 and 100", param="limit").response()
    offset = parse_integer(request.query_params.get("offset") or "0")
    if offset is None or offset < 0:
        return error_reply(400, "param_wrong_value", "invalid value", param="offset").response()
    invoices = list(sandbox.invoices.values())
    page = invoices[offset : offset + limit]
    body: Json = {"list": [{"invoice": invoice_json(i, request.path_params["version"])} for i in page]}
    if offset + limit < len(invoices):
        body["next_offset"] = str(offset + limit)  # opaque to clients, as Chargebee's is
    return json_reply(200, body).response()
