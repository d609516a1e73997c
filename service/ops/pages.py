"""The ops pages: sign-in, dashboard, event lookup and audit; the route table of every page.

Server-rendered from the Jinja2 templates in `templates/` and usable without JavaScript;
`static/ops.js` adds the dashboard's live refresh (fetching `/fragments/dashboard`, the same
partial the page includes, and swapping it in) and confirmation prompts. The dead-letter browser
is in `dead_letter_pages.py`, the review queue in `review_pages.py`, the shared frame in
`layout.py`, the view models in `views.py` and `lookup_views.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.broker import BrokerUnavailable
from service.ops import lookup_views, views
from service.ops.auth import Auth, safe_next
from service.ops.dead_letter_pages import DeadLetterPages
from service.ops.layout import Layout, first, read_form
from service.ops.operations import BadRequest, Ops
from service.ops.review_pages import ReviewPages
from service.ops.sessions import SESSION_LIFETIME
from service.queue_stats import queue_names

log = logging.getLogger("payrelay.ops")

Handler = Callable[[Request], Awaitable[Response]]


class Pages:
    def __init__(self, ops: Ops, auth: Auth, layout: Layout) -> None:
        self.ops = ops
        self.auth = auth
        self.layout = layout
        self.dead_letters = DeadLetterPages(ops, layout)
        self.review = ReviewPages(ops, layout)

    # -- sign-in -----------------------------------------------------------------------------

    def _login_form(self, request: Request, target: str, error: str = "", status: int = 200) -> Response:
        # A Secure cookie reached over plain http is dropped by the browser: say why sign-in fails.
        plain_http = self.auth.cookie_secure and request.url.scheme == "http"
        return self.layout.page(
            request, "login.html", status, error=error, next=target, plain_http=plain_http
        )

    async def login(self, request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if not self.auth.required:
            return RedirectResponse(target, status_code=303)
        return self._login_form(request, target)

    async def login_submit(self, request: Request) -> Response:
        try:
            form = await read_form(request)
        except BadRequest as exc:
            return self._login_form(request, "/", str(exc), status=413)
        target = safe_next(first(form, "next"))
        if not self.auth.required:
            return RedirectResponse(target, status_code=303)
        client = request.client.host if request.client else "unknown"
        if wait := self.auth.throttle.wait(client):
            message = f"Too many wrong tokens from this address: try again in {max(1, round(wait))} s."
            return self._login_form(request, target, message, status=429)
        name = self.auth.identify(first(form, "token"))  # who signs in is whose token it is
        if name is None:
            failures = self.auth.throttle.failed(client)
            log.warning("failed sign-in from %s (%d in a row)", client, failures)
            return self._login_form(request, target, "That token is not valid.", status=401)
        self.auth.throttle.succeeded(client)
        session = await self.auth.sign_in(name)
        log.info("%r signed in from %s", name, client)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            self.auth.cookie,
            session,
            max_age=int(SESSION_LIFETIME.total_seconds()),
            path="/",
            secure=self.auth.cookie_secure,
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        await self.auth.sign_out(request.cookies.get(self.auth.cookie))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            self.auth.cookie, path="/", secure=self.auth.cookie_secure, httponly=True, samesite="strict"
        )
        return response

    # -- dashboard ---------------------------------------------------------------------------

    async def _dashboard(self) -> views.Dashboard:
        topology = self.ops.topology
        watched = [(name, self.ops.role(name)[1]) for name in queue_names(topology)]
        management = bool(self.ops.settings.broker.management_url)
        return views.dashboard(await self.ops.overview(), watched, topology.prefix, management=management)

    async def dashboard(self, request: Request) -> Response:
        return self.layout.page(request, "dashboard.html", dashboard=await self._dashboard())

    async def dashboard_fragment(self, request: Request) -> Response:
        """The dashboard's live part alone, for `static/ops.js` to swap in (a page: same sign-in)."""
        return self.layout.fragment(request, "_overview.html", dashboard=await self._dashboard())

    # -- lookup and audit --------------------------------------------------------------------

    async def lookup(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        story = lookup_views.lookup(await self.ops.lookup(query)) if query else None
        return self.layout.page(request, "lookup.html", q=query, story=story)

    async def audit(self, request: Request) -> Response:
        records = [r.as_dict() for r in await self.ops.ledger.audit(200)]
        return self.layout.page(request, "audit.html", rows=lookup_views.audit_rows(records))

    def routes(self) -> list[Route]:
        def guarded(handler: Handler) -> Handler:
            async def route(request: Request) -> Response:
                try:
                    return await handler(request)
                except BrokerUnavailable as exc:
                    return self.layout.message(
                        request, 503, "The broker is unavailable", f"{exc}. Try again shortly.", "/"
                    )

            return route

        return [
            Route("/login", self.login, methods=["GET"]),
            Route("/login", self.login_submit, methods=["POST"]),
            Route("/logout", self.logout, methods=["POST"]),
            Route("/", guarded(self.dashboard)),
            Route("/fragments/dashboard", guarded(self.dashboard_fragment)),
            Route("/dead-letters", guarded(self.dead_letters.index)),
            Route("/dead-letters/action", guarded(self.dead_letters.action), methods=["POST"]),
            Route("/dead-letters/{id:path}", guarded(self.dead_letters.detail)),
            *self.review.routes(guarded),
            Route("/lookup", guarded(self.lookup)),
            Route("/audit", guarded(self.audit)),
        ]
