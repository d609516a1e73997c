"""The review pages (SPEC §10): the list of payments waiting for a person, one item, its decisions.

A decision posts a form (with the CSRF token, like the dead-letter actions) to
`/review/{id}/accept`, `/assign` or `/reject`. Carried out, it redirects (303) back to the item,
which says what was done; refused, the item's page answers at once with the refusal's status and
its one-line reason (a 409 shows the item as whoever decided first left it), keeping what was
typed. The view models are in `review_views.py`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from service.ops import review_views
from service.ops.api import operator
from service.ops.dead_letter_pages import options
from service.ops.layout import Form, Layout, first, read_form
from service.ops.operations import BadRequest, Ops
from service.ops.review_api import list_limit, state_filter
from service.review.model import Conflict, NotFound, Refused, ReviewError, ReviewItem

Handler = Callable[[Request], Awaitable[Response]]
Decide = Callable[[str, str, Form], Awaitable[ReviewItem]]  # (item id, actor, form) -> decided item
MAX_NOTE = 1000


class ReviewPages:
    def __init__(self, ops: Ops, layout: Layout) -> None:
        self.ops = ops
        self.layout = layout

    async def index(self, request: Request) -> Response:
        params = request.query_params
        try:
            state = state_filter(params.get("state"))
            limit = list_limit(params.get("limit"))
        except BadRequest as exc:
            return self.layout.message(request, 422, "Invalid filter", str(exc), "/review")
        items = await self.ops.reviews.browse(state, limit)
        waiting, _ = await self.ops.reviews.summary()
        now = datetime.now(UTC)
        return self.layout.page(
            request,
            "review_list.html",
            rows=[review_views.review_row(item, now) for item in items],
            states=options(review_views.STATE_CHOICES, state or "all"),
            waiting=waiting,
            state=state or "all",
        )

    async def detail(self, request: Request) -> Response:
        try:
            item = await self.ops.reviews.get(request.path_params["id"])
        except NotFound:
            return self._not_found(request)
        notice = review_views.decided_notice(item, request.query_params.get("done"))
        return await self._show(request, item, notice=notice)

    async def _show(
        self,
        request: Request,
        item: ReviewItem,
        *,
        status: int = 200,
        notice: str = "",
        refusal: str = "",
        entered: Form | None = None,
    ) -> Response:
        invoices = await self.ops.reviews.open_invoices(item) if item.is_open else []
        review = review_views.review_detail(item, invoices, datetime.now(UTC), entered)
        return self.layout.page(request, "review.html", status, review=review, notice=notice, refusal=refusal)

    def _not_found(self, request: Request) -> Response:
        return self.layout.message(request, 404, "Not found", "No review item has this id.", "/review")

    # -- decisions ---------------------------------------------------------------------------

    async def accept(self, request: Request) -> Response:
        async def decide(wanted: str, actor: str, form: Form) -> ReviewItem:
            raw = first(form, "suggestion")
            if not raw.isdigit():
                raise Refused("choose the suggestion to accept")
            return await self.ops.reviews.accept(wanted, suggestion=int(raw), actor=actor)

        return await self._decide(request, decide)

    async def assign(self, request: Request) -> Response:
        async def decide(wanted: str, actor: str, form: Form) -> ReviewItem:
            allocations = review_views.assigned(form)
            return await self.ops.reviews.assign(wanted, allocations=allocations, actor=actor)

        return await self._decide(request, decide)

    async def reject(self, request: Request) -> Response:
        async def decide(wanted: str, actor: str, form: Form) -> ReviewItem:
            note = first(form, "note")[:MAX_NOTE] or None
            return await self.ops.reviews.reject(wanted, actor=actor, note=note)

        return await self._decide(request, decide)

    async def _decide(self, request: Request, decide: Decide) -> Response:
        """Carry a decision out and redirect to the item; or show the item with why it was refused."""
        wanted = request.path_params["id"]
        try:
            form = await read_form(request)
        except BadRequest as exc:
            return self.layout.message(request, 413, "Nothing was decided", str(exc), "/review")
        try:
            item = await decide(wanted, operator(request).actor, form)
        except NotFound:
            return self._not_found(request)
        except Conflict as exc:  # someone decided first: show what they decided
            return await self._show(request, exc.item, status=exc.status, refusal=str(exc))
        except ReviewError as exc:  # refused or unavailable: the item stays open, says why
            try:
                current = await self.ops.reviews.get(wanted)
            except NotFound:
                return self._not_found(request)
            return await self._show(request, current, status=exc.status, refusal=str(exc), entered=form)
        target = f"{review_views.detail_href(item.id)}?{urlencode({'done': item.state})}"
        return RedirectResponse(target, status_code=303)

    def routes(self, guarded: Callable[[Handler], Handler]) -> list[Route]:
        return [
            Route("/review", guarded(self.index)),
            Route("/review/{id}", guarded(self.detail)),
            Route("/review/{id}/accept", guarded(self.accept), methods=["POST"]),
            Route("/review/{id}/assign", guarded(self.assign), methods=["POST"]),
            Route("/review/{id}/reject", guarded(self.reject), methods=["POST"]),
        ]
