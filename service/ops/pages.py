"""The ops pages: sign-in, dashboard, event lookup and audit; the route table of every page.

Server-rendered from the Jinja2 templates in `templates/` and usable without JavaScript;
`static/ops.js` adds the dashboard's live refresh (fetching `/fragments/dashboard`, the same
partial the page includes, and swapping it in) and confirmation prompts. The dead-letter browser
is in `dead_letter_pages.py`, the shared frame in `layout.py`, the view models in `views.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.broker import BrokerUnavailable
from service.ops import views
from service.ops.auth import COOKIE, SESSION_SECONDS, Auth, cookie_secure, safe_next
from service.ops.dead_letter_pages import DeadLetterPages
from service.ops.layout import Layout, first, read_form
from service.ops.operations import BadRequest, Ops
from service.queue_stats import queue_names

log = logging.getLogger("payrelay.ops")

Handler = Callable[[Request], Awaitable[Response]]


class Pages:
    def __init__(self, ops: Ops, auth: Auth, layout: Layout) -> None:
        self.ops = ops
        self.auth = auth
        self.layout = layout
        self.dead_letters = DeadLetterPages(ops, layout)

    # -- sign-in -----------------------------------------------------------------------------

    def _login_form(self, request: Request, target: str, error: str = "", status: int = 200) -> Response:
        plain_http = cookie_secure(request) and request.url.scheme == "http"
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
        name = self.auth.identify(first(form, "token"))  # who signs in is whose token it is
        if name is None:
            log.warning("failed sign-in from %s", client)
            return self._login_form(request, target, "That token is not valid.", status=401)
        session = self.auth.sign_in(name)
        log.info("%r signed in from %s", name, client)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            session,
            max_age=SESSION_SECONDS,
            path="/",
            secure=cookie_secure(request),
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        self.auth.sign_out(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(
            COOKIE, path="/", secure=cookie_secure(request), httponly=True, samesite="strict"
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
        story = views.lookup(await self.ops.lookup(query)) if query else None
        return self.layout.page(request, "lookup.html", q=query, story=story)

    async def audit(self, request: Request) -> Response:
        records = [r.as_dict() for r in await self.ops.ledger.audit(200)]
        return self.layout.page(request, "audit.html", rows=views.audit_rows(records))

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
            Route("/lookup", guarded(self.lookup)),
            Route("/audit", guarded(self.audit)),
        ]
