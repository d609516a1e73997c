"""The sandbox admin routes (`/sandbox/...`): invoices, customers, the request log, faults, reset."""

from __future__ import annotations

from typing import Final, TypeVar

import orjson
from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from service.chargebee_sandbox.replies import JSON_MEDIA_TYPE, Json
from service.chargebee_sandbox.shapes import customer_json, invoice_json
from service.chargebee_sandbox.specs import OPERATIONS, ApiKey, BulkSpec, CustomerSpec, FaultSpec, InvoiceSpec
from service.chargebee_sandbox.state import Armed, sandbox_of
from service.problems import problem

_LOGGED: Final = frozenset(OPERATIONS) | {"all"}


def _ok(body: Json, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type=JSON_MEDIA_TYPE)


_Model = TypeVar("_Model", bound=BaseModel)


async def _parse(request: Request, model: type[_Model]) -> _Model | Response:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return problem(400, "invalid request body", errors=errors)


async def health(request: Request) -> Response:
    return _ok({"status": "ok"})


async def create_invoice(request: Request) -> Response:
    spec = await _parse(request, InvoiceSpec)
    if isinstance(spec, Response):
        return spec
    sandbox = sandbox_of(request)
    if spec.id in sandbox.invoices:
        return problem(409, f"invoice {spec.id} already exists")
    return _ok({"invoice": invoice_json(sandbox.add_invoice(spec), "v2")}, 201)


async def create_invoices_bulk(request: Request) -> Response:
    spec = await _parse(request, BulkSpec)
    if isinstance(spec, Response):
        return spec
    sandbox = sandbox_of(request)
    ids = [f"{spec.prefix}{n}" for n in range(1, spec.count + 1)]
    taken = next((i for i in ids if i in sandbox.invoices), None)
    if taken is not None:
        return problem(409, f"invoice {taken} already exists; nothing was created")
    for invoice_id in ids:
        sandbox.add_invoice(
            InvoiceSpec(
                id=invoice_id,
                total=spec.total,
                currency_code=spec.currency_code,
                status=spec.status,
                customer_id=spec.customer_id,
            )
        )
    return _ok({"created": len(ids), "first": ids[0], "last": ids[-1]}, 201)


async def create_customer(request: Request) -> Response:
    spec = await _parse(request, CustomerSpec)
    if isinstance(spec, Response):
        return spec
    sandbox = sandbox_of(request)
    if spec.id in sandbox.customers:
        return problem(409, f"customer {spec.id} already exists")
    return _ok({"customer": customer_json(sandbox.add_customer(spec), "v2")}, 201)


async def list_requests(request: Request) -> Response:
    """The request log: record_payment calls unless `operation` names another (or `all`)."""
    sandbox = sandbox_of(request)
    operation = request.query_params.get("operation", "record_payment")
    if operation not in _LOGGED:
        return problem(400, f"operation should be one of {', '.join(sorted(_LOGGED))}")
    invoice_id = request.query_params.get("invoice_id")
    entries = [
        entry
        for entry in sandbox.requests
        if operation in ("all", entry["operation"]) and invoice_id in (None, entry.get("invoice_id"))
    ]
    return _ok({"requests": entries, "dropped": sandbox.dropped})


async def clear_requests(request: Request) -> Response:
    sandbox = sandbox_of(request)
    cleared = len(sandbox.requests)
    sandbox.requests.clear()
    sandbox.dropped = 0
    return _ok({"cleared": cleared})


def _fault_json(armed: Armed) -> Json:
    return {**armed.spec.model_dump(), "remaining": armed.remaining}


async def add_fault(request: Request) -> Response:
    spec = await _parse(request, FaultSpec)
    if isinstance(spec, Response):
        return spec
    return _ok({"fault": _fault_json(sandbox_of(request).add_fault(spec))}, 201)


async def list_faults(request: Request) -> Response:
    return _ok({"faults": [_fault_json(armed) for armed in sandbox_of(request).faults]})


async def clear_faults(request: Request) -> Response:
    sandbox = sandbox_of(request)
    cleared = len(sandbox.faults)
    sandbox.faults.clear()
    return _ok({"cleared": cleared})


async def set_api_key(request: Request) -> Response:
    spec = await _parse(request, ApiKey)
    if isinstance(spec, Response):
        return spec
    sandbox_of(request).gate.set_api_key(spec.api_key)
    return Response(status_code=204)


async def reset(request: Request) -> Response:
    sandbox = sandbox_of(request)
    sandbox.reset()
    return _ok({"invoices": len(sandbox.invoices)})
