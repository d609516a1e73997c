"""The sandbox ASGI app: its routes, Chargebee-shaped errors for unknown ones, fresh state per app."""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.chargebee_sandbox.admin import (
    add_fault,
    clear_faults,
    clear_requests,
    create_customer,
    create_invoice,
    create_invoices_bulk,
    health,
    list_faults,
    list_requests,
    reset,
    set_api_key,
)
from service.chargebee_sandbox.api import record_payment
from service.chargebee_sandbox.reads import (
    list_customer_invoices,
    list_customers,
    list_invoices,
    list_transactions,
    retrieve_customer,
    retrieve_invoice,
    retrieve_transaction,
)
from service.chargebee_sandbox.replies import error_reply
from service.chargebee_sandbox.state import Sandbox, SandboxConfig
from service.problems import problem


async def _http_error(request: Request, exc: Exception) -> Response:
    """Unknown routes and methods: Chargebee's error shape under /api, problem+json elsewhere."""
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/api/"):
        code = "http_method_not_supported" if exc.status_code == 405 else "resource_not_found"
        return error_reply(exc.status_code, code, headers=exc.headers).response()
    return problem(exc.status_code, str(exc.detail), headers=exc.headers)


def create_app(config: SandboxConfig) -> Starlette:
    """The sandbox ASGI app; its state is `app.state.sandbox`, fresh (and seeded) per app."""
    api = "/api/{version}"
    routes = [
        Route(api + "/invoices/{invoice_id}/record_payment", record_payment, methods=["POST"]),
        Route(api + "/invoices/{invoice_id}", retrieve_invoice, methods=["GET"]),
        Route(api + "/invoices", list_invoices, methods=["GET"]),
        Route(api + "/transactions/{transaction_id}", retrieve_transaction, methods=["GET"]),
        Route(api + "/transactions", list_transactions, methods=["GET"]),
        Route(api + "/customers/{customer_id}/invoices", list_customer_invoices, methods=["GET"]),
        Route(api + "/customers/{customer_id}", retrieve_customer, methods=["GET"]),
        Route(api + "/customers", list_customers, methods=["GET"]),
        Route("/sandbox/health", health, methods=["GET"]),
        Route("/sandbox/invoices", create_invoice, methods=["POST"]),
        Route("/sandbox/invoices/bulk", create_invoices_bulk, methods=["POST"]),
        Route("/sandbox/customers", create_customer, methods=["POST"]),
        Route("/sandbox/requests", list_requests, methods=["GET"]),
        Route("/sandbox/requests", clear_requests, methods=["DELETE"]),
        Route("/sandbox/faults", add_fault, methods=["POST"]),
        Route("/sandbox/faults", list_faults, methods=["GET"]),
        Route("/sandbox/faults", clear_faults, methods=["DELETE"]),
        Route("/sandbox/api-key", set_api_key, methods=["PUT"]),
        Route("/sandbox/reset", reset, methods=["POST"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.sandbox = Sandbox(config)
    return app
