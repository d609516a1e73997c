"""The ops web app: `create_app(settings)` for the dashboard, the dead-letter browser, the review
queue and the JSON API.

Routes are documented in `service/ops/api.py` (the review queue's in `review_api.py`). One lifespan
opens what the app does not get passed: a broker connection (publishing, for replays and review
decisions), the ledger, and an aiohttp session for RabbitMQ's management API; it closes exactly
those on shutdown. Chargebee's invoices, which review decisions are checked against, are passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.broker import Broker, BrokerUnavailable
from service.hosts import TrustedHosts
from service.ledger import Ledger
from service.metrics import Metrics, create_metrics
from service.ops.api import Api
from service.ops.auth import UNCHECKED_HOST_PATHS, Auth, AuthMiddleware
from service.ops.layout import Layout, templates
from service.ops.operations import Ops
from service.ops.pages import Pages
from service.ops.review_api import ReviewApi
from service.ops.sessions import LedgerSessions
from service.problems import problem
from service.review.service import InvoiceReader
from service.settings import ConfigError, Settings

log = logging.getLogger("payrelay.ops")

STATIC = Path(__file__).parent / "static"
METRICS_REFRESH_SECONDS = 2.0
# No inline script or style anywhere: the policy can forbid both.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds the security headers to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


class OpsApp(Starlette):
    """Starlette with the security headers outermost: on a 500 from its error middleware too."""

    def build_middleware_stack(self) -> ASGIApp:
        return SecurityHeaders(super().build_middleware_stack())


def _token(settings: Settings, allow_no_token_on_loopback: bool) -> str | None:
    token = settings.ops.admin_token.get_secret_value() if settings.ops.admin_token is not None else ""
    if token or settings.ops.operators:
        return token or None
    if not allow_no_token_on_loopback:
        raise ConfigError(
            "no operators and no PAYRELAY_ADMIN_TOKEN: the ops app needs credentials "
            "(`payrelay ops-token NAME` makes an operator's; only `payrelay ops --host 127.0.0.1` "
            "may run without any, for local development)"
        )
    log.warning("no admin token: the ops app is open to anyone who can reach this loopback address")
    return None


def create_app(
    settings: Settings,
    *,
    broker: Broker | None = None,
    ledger: Ledger | None = None,
    metrics: Metrics | None = None,
    http: aiohttp.ClientSession | None = None,
    invoices: InvoiceReader | None = None,
    allow_no_token_on_loopback: bool = False,
) -> Starlette:
    """The ops ASGI app. Raises ConfigError without an admin token unless explicitly allowed.

    `invoices` reads Chargebee's invoices for review decisions (the CLI passes a
    `consumers.directory.Directory`); without it the review queue can be read, and every decision
    answers 503.

    `allow_no_token_on_loopback` is for the CLI to pass only when it binds 127.0.0.1, ::1 or
    localhost; the app then requires no sign-in (it cannot see the address it is bound to).
    """
    auth = Auth(
        _token(settings, allow_no_token_on_loopback),
        settings.ops.operators,
        cookie_secure=settings.ops.cookie_secure,
    )
    topology = settings.broker.topology()
    the_broker = broker or settings.broker.broker("payrelay-ops")
    the_metrics = metrics or create_metrics()
    ops = Ops(settings, topology, the_broker, the_metrics, ledger_=ledger, http=http, invoices=invoices)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as stack:
            if broker is None:
                await the_broker.start(wait=5.0)
                stack.push_async_callback(the_broker.stop)
            if ledger is None:
                ops.ledger_ = await settings.ledger.open()
                stack.push_async_callback(ops.ledger.close)
            auth.sessions = LedgerSessions(ops.ledger)  # any replica serves any signed-in operator
            if http is None:
                ops.http = await stack.enter_async_context(aiohttp.ClientSession())
            yield

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ready = the_broker.ready and ops.ledger_ is not None
        body = {
            "status": "ready" if ready else "not ready",
            "broker": "open" if the_broker.ready else "closed",
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    async def metrics_endpoint(request: Request) -> Response:
        # Queue gauges are refreshed per scrape, so they are current without a dashboard open.
        with contextlib.suppress(BrokerUnavailable, TimeoutError):
            await asyncio.wait_for(ops.queues(), METRICS_REFRESH_SECONDS)
        return Response(ops.metrics.render(), media_type="text/plain; version=0.0.4")

    layout = Layout(templates(), topology.prefix)
    pages = Pages(ops, auth, layout)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if request.url.path.startswith("/api/"):
            return problem(exc.status_code, str(exc.detail), headers=exc.headers)
        if exc.status_code == 404:
            return layout.message(request, 404, "Not found", "There is nothing here.", "/")
        return layout.message(request, exc.status_code, str(exc.detail), str(exc.detail), "/")

    app = OpsApp(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics_endpoint),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
            *Api(ops).routes(),
            *ReviewApi(ops).routes(),
            *pages.routes(),
        ],
        middleware=[
            Middleware(
                TrustedHosts,
                trusted=settings.ops.trusted_hosts,
                setting="ops_trusted_hosts",
                unchecked=UNCHECKED_HOST_PATHS,
            ),
            Middleware(AuthMiddleware, auth=auth),
        ],
        exception_handlers={HTTPException: http_error},
        lifespan=lifespan,
    )
    app.state.ops = ops
    return app
