"""The review queue's JSON API (SPEC §10): list, detail, and accept / assign / reject.

Authentication, CSRF and the problem+json errors are those of every `/api` route (`api.py`); the
audit's "who" is the authenticated operator. A decision answers 200 with the item as it now is
(`ReviewItem.as_json()`); a refused one with its `ReviewError.status`: 404 no such item, 409
decided already (the body's `item` is the item as the winner left it), 422 refused (amounts that
do not add up, an invoice in another currency or paid meanwhile; the item stays open and its
`problem` says why), 503 Chargebee or the broker cannot be reached now (nothing was decided).

`GET /api/review?state=open|accepted|assigned|rejected|all&limit=`
    `{"items": [item...], "count": n, "state"}`, oldest first; default state open, limit 1..1000
    (default 100). An item: `id` (`rv-17`), `state`, `origin`, `source`, `event_id`, `type`,
    `amount` and `currency` (decimal string, major units), `created_at`, `why` and `why_text`,
    `customer_id`, `payer` (the payer's name, never an account number), `suggestions`
    [{`allocations` [{`invoice_id`, `amount`}], `score`, `reasons`, `method`}], `event` (the
    inbound CloudEvent), `decided_at`, `decided_by`, `decision`, `problem`.

`GET /api/review/{id}`
    One item, plus `open_invoices`: the customer's payable invoices in the payment's currency as
    Chargebee has them now ([{`id`, `customer_id`, `status`, `currency`, `amount_due`, `total`,
    `date`, `due_date`}]; [] when the customer is unknown or Chargebee cannot be read).

`POST /api/review/{id}/accept` `{"suggestion": 0}`
`POST /api/review/{id}/assign` `{"allocations": [{"invoice_id": "INV-1", "amount": "12.50"}, ...]}`
    Amounts are decimal strings in major units; one allocation may leave `amount` out and take
    the rest of the payment; the amounts must add up to the payment.
`POST /api/review/{id}/reject` `{"note": "..."}` (the body, or the note, may be left out)
    The event goes to the dead letters as `unmatched_invoice`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.ops.api import RETRY_AFTER, guarded, json, operator
from service.ops.operations import DEFAULT_LIST_LIMIT, BadRequest, Ops
from service.problems import problem
from service.review.model import STATES, Conflict, ReviewError, Unavailable
from service.review.service import MAX_ASSIGNED

Handler = Callable[[Request], Awaitable[Response]]
STATE_FILTERS: Final = (*STATES, "all")
NOT_JSON: Final = "send a JSON object with Content-Type: application/json"


class AcceptRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    suggestion: StrictInt


class AllocationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    invoice_id: StrictStr = Field(min_length=1, max_length=100)
    amount: StrictStr | None = Field(default=None, min_length=1, max_length=40)


class AssignRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allocations: list[AllocationRequest] = Field(min_length=1, max_length=MAX_ASSIGNED)

    def pairs(self) -> list[tuple[str, str | None]]:
        return [(a.invoice_id, a.amount) for a in self.allocations]


class RejectRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    note: StrictStr | None = Field(default=None, max_length=1000)


def state_filter(raw: str | None) -> str | None:
    """`?state=`: one state, or None for `all`; open when not given."""
    wanted = raw or "open"
    if wanted not in STATE_FILTERS:
        raise BadRequest(f"state must be one of {', '.join(STATE_FILTERS)}")
    return None if wanted == "all" else wanted


def list_limit(raw: str | None) -> int:
    if not raw:
        return DEFAULT_LIST_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise BadRequest("limit must be a whole number from 1 to 1000")
    return int(raw)


def review_problem(exc: ReviewError) -> Response:
    """A refused decision as problem+json; a 409 carries the item as the winner left it."""
    extra: dict[str, Any] = {"item": exc.item.as_json()} if isinstance(exc, Conflict) else {}
    headers = RETRY_AFTER if isinstance(exc, Unavailable) else None
    return problem(exc.status, str(exc), headers=headers, **extra)


def review_guarded(handler: Handler) -> Handler:
    """`guarded`, and a ReviewError answered with its own status."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except ReviewError as exc:
            return review_problem(exc)

    return guarded(route)


class NotJson(Exception):
    pass


async def json_body(request: Request, *, empty: Any = None) -> Any:
    """The request's JSON; `empty` (when not None) stands for a body left out altogether."""
    raw = await request.body()
    if not raw.strip() and empty is not None:
        return empty
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise NotJson
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise NotJson from None


class ReviewApi:
    def __init__(self, ops: Ops) -> None:
        self.ops = ops

    async def browse(self, request: Request) -> Response:
        params = request.query_params
        state = state_filter(params.get("state"))
        items = await self.ops.reviews.browse(state, list_limit(params.get("limit")))
        return json({"items": [i.as_json() for i in items], "count": len(items), "state": state or "all"})

    async def detail(self, request: Request) -> Response:
        reviews = self.ops.reviews
        item = await reviews.get(request.path_params["id"])
        invoices = await reviews.open_invoices(item)
        return json({**item.as_json(), "open_invoices": [i.as_json() for i in invoices]})

    async def accept(self, request: Request) -> Response:
        try:
            body = AcceptRequest.model_validate(await json_body(request))
        except NotJson:
            return problem(415, NOT_JSON)
        item = await self.ops.reviews.accept(
            request.path_params["id"], suggestion=body.suggestion, actor=operator(request).actor
        )
        return json(item.as_json())

    async def assign(self, request: Request) -> Response:
        try:
            body = AssignRequest.model_validate(await json_body(request))
        except NotJson:
            return problem(415, NOT_JSON)
        item = await self.ops.reviews.assign(
            request.path_params["id"], allocations=body.pairs(), actor=operator(request).actor
        )
        return json(item.as_json())

    async def reject(self, request: Request) -> Response:
        try:
            body = RejectRequest.model_validate(await json_body(request, empty={}))
        except NotJson:
            return problem(415, NOT_JSON)
        item = await self.ops.reviews.reject(
            request.path_params["id"], actor=operator(request).actor, note=body.note or None
        )
        return json(item.as_json())

    def routes(self) -> list[Route]:
        return [
            Route("/api/review", review_guarded(self.browse)),
            Route("/api/review/{id}", review_guarded(self.detail)),
            Route("/api/review/{id}/accept", review_guarded(self.accept), methods=["POST"]),
            Route("/api/review/{id}/assign", review_guarded(self.assign), methods=["POST"]),
            Route("/api/review/{id}/reject", review_guarded(self.reject), methods=["POST"]),
        ]
