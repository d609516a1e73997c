"""The record_payment route (v1 and v2): gate, latency, faults, then the rules in `recording`."""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from service.chargebee_sandbox.idempotency import IDEMPOTENCY_HEADER
from service.chargebee_sandbox.recording import record
from service.chargebee_sandbox.replies import Reply
from service.chargebee_sandbox.state import Sandbox, sandbox_of


def _form(content_type: str | None, body: bytes) -> dict[str, str]:
    """Form fields, last value winning; like Chargebee, any other content type carries no params."""
    if not (content_type or "").lower().startswith("application/x-www-form-urlencoded"):
        return {}
    return dict(parse_qsl(body.decode("ascii", "replace"), keep_blank_values=True))


def recorded_headers(raw: list[tuple[bytes, bytes]]) -> dict[str, str]:
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
            "operation": "record_payment",
            "invoice_id": request.path_params["invoice_id"],
            "api_version": request.path_params["version"],
            "form": form,
            "headers": recorded_headers(request.headers.raw),
            "status": reply.status,
            "replayed": reply.replayed,
            "at": received,
        }
    )
    return reply.response()


async def _record_payment(sandbox: Sandbox, request: Request, form: dict[str, str]) -> Reply:
    version, invoice_id = request.path_params["version"], request.path_params["invoice_id"]
    refused = sandbox.gate.check(version, request.headers.get("authorization"))
    if refused is not None:
        return refused
    if sandbox.config.latency_ms:
        await asyncio.sleep(sandbox.config.latency_ms / 1000)
    key = request.headers.get(IDEMPOTENCY_HEADER)
    fault = sandbox.take_fault("record_payment", invoice_id)
    if fault is None:
        return record(sandbox, invoice_id, version, form, key)
    committed = record(sandbox, invoice_id, version, form, key) if fault.after_commit else None
    if fault.latency_ms:
        await asyncio.sleep(fault.latency_ms / 1000)
    if fault.breaks:
        return fault.reply()
    # Latency only: the state is checked and changed after the sleep, with no await in between.
    return committed if committed is not None else record(sandbox, invoice_id, version, form, key)
