"""The ops JSON API, behind the dashboard and for scripts.

Authentication: `Authorization: Bearer <an operator's token>` (or the admin token), or the
dashboard's session cookie (then a state-changing request also needs `X-CSRF-Token` and a
same-origin `Origin`). The audit actor is `ops:<operator>`, whoever's token it is (`ops:admin`
for the admin token), never a name the caller supplies. Errors are RFC 9457
`application/problem+json`: 401 missing or wrong credentials, 403 CSRF, 404 no such dead letter,
415 body not JSON, 422 invalid request, 503 broker unreachable (with `Retry-After`). Times are
RFC 3339 UTC; rates are messages per second.

`GET /api/queues`
    `{"queues": [{"name", "role": "work"|"retry"|"dead_letter", "label", "ready", "unacked",
    "consumers", "publish_rate", "deliver_rate"}], "consumers": <work-queue consumers>}` for the
    work queue, each retry tier and the dead-letter queue. `unacked` and the rates come from
    RabbitMQ's management API (`PAYRELAY_AMQP_MANAGEMENT_URL`) and are null without it.

`GET /api/overview`
    The dashboard in one call: `queues` (as above), `consumers`, `consumers_healthy` (the work
    queue has a consumer), `dead_letters` (letters kept in the ledger, waiting for an operator),
    `broker` ("open"/"closed"), `ledger` `{"since", "counts": {state: n}, "reached_chargebee"}`
    for the last hour, `chargebee_error_rate` (of the payments whose outcome was Chargebee's, the
    share it failed or refused; 0..1, null when none), `dead_letter_rate` (of the settled
    payments, the share dead-lettered for any reason), `recent` (the 20 latest ledger entries:
    `origin`, `source`, `event_id`, `state`, `invoice_id`, `attempts`, `transaction_id`,
    `invoice_status`, `last_error`, `reason`, `generation`, `amount` (minor units) and
    `currency` once recorded, `created_at`, `updated_at`) and `generated_at`.

`GET /api/dead-letters?reason=&source=&type=&invoice=&older_than=&newer_than=&limit=`
    `{"dead_letters": [...], "count": n}`, the letters waiting, oldest first: the fields of
    `payrelay dlq list --json` (`id` (the letter's own, `dl-17`), `event_id`, `state`, `reason`,
    `error`, `attempts`, `failed_at`, `origin`, `source`, `type`, `invoice_id`, `amount`,
    `currency`, `replays`). `source` matches the configured source or the CloudEvent source;
    ages are `90s`, `30m`, `2h`, `7d` since `failed_at`; an unknown `reason` is a 422 naming the
    known ones; `limit` 1..1000, default 100.

`GET /api/dead-letters/{id}`
    One dead letter in full, by its letter id (or the newest letter of an event id), in any
    state: the summary fields plus `stored_at`, `chargebee_error`, `headers`, `event` (the
    CloudEvent) and `body` (the raw body, only when it is not JSON). 404 if none.

`POST /api/dead-letters/replay`
    Body `{"ids": [...], "reason", "source", "type", "invoice", "older_than", "newer_than",
    "all": false, "set": {"invoice_id": "INV-1"}, "dry_run": false}`: every selector given must
    match; with none, `"all": true` is required (else 422); `ids` take letter ids or event ids.
    `set` edits `data` fields (`service.dead_letters.EDITABLE`: where the money goes, never
    `amount` or `currency`); an edit that is not allowed, does not apply to the event's type,
    leaves an invalid event or targets an event already recorded is a 422 and nothing moves.
    Answers `{"matched", "moved", "dry_run", "ids" (letter ids), "event_ids", "skipped"}`: send a
    dry run's `ids` back to act on exactly those letters. Each batch is republished to the work
    queue with confirms, then marked replayed with its audit row; the copies carry
    `x-payrelay-generation` + 1, `x-payrelay-replayed-by/-at` and, for an edit, the original body
    in `x-payrelay-original`.

`POST /api/dead-letters/purge`
    The same selectors, `"dry_run"`, and `"confirm": true` (required unless dry_run, else 422):
    marks the matching letters purged (never replayed; the body is removed after the retention
    period); audited. Same answer as replay.

`GET /api/events/lookup?q=<event id, invoice id, reference number or bank file id>`
    An event's story: `{"q", "ledger": [entries whose event_id, invoice_id, reference_number or
    file id is q], "dead_letters": [letters of event q or invoice q, or of those entries' events,
    in every state], "audit": [records naming q]}`. Entries have the fields of `recent` above
    and `reference_number` and `file` (`{"id", "format", "entry"}` for a payment from a bank
    file, else null).

`GET /api/audit?limit=`
    `{"audit": [{"id", "at", "actor", "action", "selector", "count", "details"}]}`, newest first
    (limit 1..1000, default 100).

`GET /api/review`, `GET /api/review/{id}`, `POST /api/review/{id}/accept|assign|reject`
    The review queue (SPEC §10), documented in `service/ops/review_api.py`.

Outside `/api`: `GET /healthz` and `GET /readyz` (no auth, for probes) and `GET /metrics`
(Prometheus text, no auth so that Prometheus can scrape it; queue gauges are refreshed per scrape).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service.broker import BrokerUnavailable
from service.dead_letters import EditError, Filter
from service.ops.auth import Operator
from service.ops.operations import (
    DEFAULT_LIST_LIMIT,
    BadRequest,
    Ops,
    PurgeRequest,
    ReplayRequest,
    selection_filter,
)
from service.problems import problem

Handler = Callable[[Request], Awaitable[Response]]
RETRY_AFTER = {"Retry-After": "5"}


def json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def operator(request: Request) -> Operator:
    found: Operator = request.state.operator
    return found


def _bounded(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise BadRequest(f"{name} must be a whole number from 1 to {high}")
    return int(raw)


def query_filter(params: Any) -> Filter | None:
    """The list filter from query parameters; None when no filter is given (list everything)."""
    selector = selection_filter(params)
    return None if selector.empty else selector


def guarded(handler: Handler) -> Handler:
    """Map the errors every route can meet to problem responses."""

    async def route(request: Request) -> Response:
        try:
            return await handler(request)
        except BrokerUnavailable as exc:
            return problem(503, f"the broker is unavailable: {exc}", headers=RETRY_AFTER)
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]}
                for e in exc.errors(include_input=False, include_url=False)
            ]
            return problem(422, "invalid request", errors=errors)
        except (EditError, BadRequest) as exc:
            return problem(422, str(exc))

    return route


async def _body(request: Request) -> Any:
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json":
        raise _NotJson
    try:
        return orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise _NotJson from None


class _NotJson(Exception):
    pass


class Api:
    def __init__(self, ops: Ops) -> None:
        self.ops = ops

    async def queues(self, request: Request) -> Response:
        stats = await self.ops.queues()
        work = next(s for s in stats if s.name == self.ops.topology.work_queue)
        return json({"queues": [self.ops.queue_dict(s) for s in stats], "consumers": work.consumers})

    async def overview(self, request: Request) -> Response:
        return json(await self.ops.overview())

    async def dead_letters(self, request: Request) -> Response:
        limit = _bounded(request, "limit", DEFAULT_LIST_LIMIT, 1000)
        letters = await self.ops.list_dead_letters(query_filter(request.query_params), limit)
        return json({"dead_letters": [d.summary() for d in letters], "count": len(letters)})

    async def dead_letter(self, request: Request) -> Response:
        letter = await self.ops.dead_letter(request.path_params["id"])
        if letter is None:
            return problem(404, "no dead letter with this id")
        return json(letter.detail())

    async def replay(self, request: Request) -> Response:
        try:
            body = ReplayRequest.model_validate(await _body(request))
        except _NotJson:
            return problem(415, "send a JSON object with Content-Type: application/json")
        outcome = await self.ops.replay(body, operator(request).actor)
        return json(outcome.as_dict())

    async def purge(self, request: Request) -> Response:
        try:
            body = PurgeRequest.model_validate(await _body(request))
        except _NotJson:
            return problem(415, "send a JSON object with Content-Type: application/json")
        if not body.confirm and not body.dry_run:
            return problem(422, 'purging deletes dead letters for good: send "confirm": true')
        outcome = await self.ops.purge(body, operator(request).actor)
        return json(outcome.as_dict())

    async def lookup(self, request: Request) -> Response:
        query = request.query_params.get("q", "").strip()
        if not query:
            return problem(422, "q: give an event id or an invoice id")
        return json((await self.ops.lookup(query)).as_dict())

    async def audit(self, request: Request) -> Response:
        limit = _bounded(request, "limit", 100, 1000)
        return json({"audit": [r.as_dict() for r in await self.ops.ledger.audit(limit)]})

    def routes(self) -> list[Route]:
        return [
            Route("/api/queues", guarded(self.queues)),
            Route("/api/overview", guarded(self.overview)),
            Route("/api/dead-letters", guarded(self.dead_letters)),
            Route("/api/dead-letters/replay", guarded(self.replay), methods=["POST"]),
            Route("/api/dead-letters/purge", guarded(self.purge), methods=["POST"]),
            Route("/api/dead-letters/{id}", guarded(self.dead_letter)),
            Route("/api/events/lookup", guarded(self.lookup)),
            Route("/api/audit", guarded(self.audit)),
        ]
