"""The ops pages: sign-in, dashboard, event lookup and audit; the route table of every page.

Server-rendered and usable without JavaScript; `static/ops.js` adds the dashboard's live refresh
(polling `/api/overview`) and confirmation prompts. The dead-letter browser is in
`dead_letter_pages.py`, the shared frame in `layout.py`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.broker import BrokerUnavailable
from service.ops import views
from service.ops.auth import COOKIE, SESSION_SECONDS, Auth, clean_name, cookie_secure, safe_next
from service.ops.dead_letter_pages import DeadLetterPages
from service.ops.layout import Layout, first, read_form
from service.ops.operations import BadRequest, Ops, audit_dict, entry_dict
from service.ops.templating import Html, join, tag
from service.queue_stats import QueueStat, queue_names

log = logging.getLogger("payrelay.ops")

Handler = Callable[[Request], Awaitable[Response]]


class Pages:
    def __init__(self, ops: Ops, auth: Auth, layout: Layout) -> None:
        self.ops = ops
        self.auth = auth
        self.layout = layout
        self.templates = layout.templates
        self.dead_letters = DeadLetterPages(ops, layout)

    # -- sign-in -----------------------------------------------------------------------------

    def _login_form(
        self, request: Request, target: str, error: str = "", name: str = "", status: int = 200
    ) -> Response:
        note = ""
        if cookie_secure(request) and request.url.scheme == "http":
            note = tag(
                "p",
                "This page was reached over plain http: the session cookie is Secure and your browser "
                "will only keep it over https.",
                class_="help",
            )
        main = self.templates.render(
            "login",
            error=tag("p", error, class_="alert", role="alert") if error else "",
            next=target,
            name=name,
            note=note,
        )
        return self.layout.page(request, "Sign in", main, status)

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
        name = first(form, "name")
        client = request.client.host if request.client else "unknown"
        if not self.auth.token_matches(first(form, "token")):
            log.warning("failed sign-in from %s", client)
            return self._login_form(request, target, "That token is not valid.", name[:40], status=401)
        session = self.auth.sign_in(name)
        log.info("%s signed in from %s", clean_name(name), client)
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

    async def dashboard(self, request: Request) -> Response:
        data = await self.ops.overview()
        prefix = self.ops.topology.prefix
        known = {q["name"]: q for q in data["queues"]}
        rows = [
            views.queue_row(name, _stat(known.get(name)), self.ops.role(name)[1], prefix)
            for name in queue_names(self.ops.topology)
        ]
        counts = data["ledger"]["counts"]
        work = known.get(self.ops.topology.work_queue, {})
        healthy = data["consumers_healthy"]
        settled = sum(counts.get(s, 0) for s in ("recorded", "failed", "dead_lettered"))
        main = self.templates.render(
            "dashboard",
            generated_at=data["generated_at"],
            generated_label=data["generated_at"][11:19] + " UTC",
            broker_hidden="hidden" if data["broker"] == "open" else "",
            health_state="good" if healthy else "bad",
            health_label="Healthy" if healthy else "No consumer",
            consumers=views.count(data["consumers"]),
            dead_state="unknown"
            if data["dead_letters"] is None
            else "bad"
            if data["dead_letters"]
            else "good",
            dead_letters=views.count(data["dead_letters"]),
            work_ready=views.count(work.get("ready")),
            work_unacked=views.count(work.get("unacked")),
            error_rate=views.percent(data["chargebee_error_rate"]),
            settled=settled,
            queue_rows=join(rows, "\n"),
            queues_note=""
            if self.ops.settings.broker.management_url
            else "Unacked counts and rates need RabbitMQ's management API (PAYRELAY_AMQP_MANAGEMENT_URL).",
            ledger_counts=views.ledger_counts(counts),
            recent_rows=join((views.recent_row(e) for e in data["recent"]), "\n")
            or Html('<tr><td colspan="7" class="empty">No outcomes yet.</td></tr>'),
        )
        return self.layout.page(request, "Dashboard", main)

    # -- lookup and audit --------------------------------------------------------------------

    async def lookup(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        results: Html | str = ""
        if query:
            story = await self.ops.lookup(query)
            results = join(
                [
                    tag("h2", "Ledger"),
                    views.ledger_table([entry_dict(e) for e in story.entries]),
                    tag("h2", "In the dead-letter queue"),
                    views.dead_letter_table(story.dead_letters, "Dead letters naming this id")
                    if story.dead_letters is not None
                    else tag(
                        "p",
                        "The broker is unavailable: the dead-letter queue cannot be searched now.",
                        class_="alert",
                    ),
                    tag("h2", "Audit"),
                    views.audit_table([audit_dict(r) for r in story.audit]),
                ]
            )
        main = self.templates.render("lookup", q=query, results=results)
        return self.layout.page(request, f"Lookup {query}" if query else "Lookup", main)

    async def audit(self, request: Request) -> Response:
        records = [audit_dict(r) for r in await self.ops.ledger.audit(200)]
        return self.layout.page(
            request, "Audit", self.templates.render("audit", table=views.audit_table(records))
        )

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
            Route("/dead-letters", guarded(self.dead_letters.index)),
            Route("/dead-letters/action", guarded(self.dead_letters.action), methods=["POST"]),
            Route("/dead-letters/{id:path}", guarded(self.dead_letters.detail)),
            Route("/lookup", guarded(self.lookup)),
            Route("/audit", guarded(self.audit)),
        ]


def _stat(q: dict[str, Any] | None) -> QueueStat | None:
    if q is None:
        return None
    return QueueStat(
        q["name"], q["ready"], q["unacked"], q["consumers"], q["publish_rate"], q["deliver_rate"]
    )
