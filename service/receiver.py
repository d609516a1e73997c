"""The receiver: `POST /v1/ingest/{source}`, answered 202 only once RabbitMQ holds every event.

Bank files, `POST /v1/files/{source}`, are service/files_endpoint.py's; both share the sources,
the publisher and the recent identities built here.

Order of checks, cheapest and least revealing first: unknown source (404), content type (415),
body size while streaming (413) and time (408), signature (401), JSON shape (400), the events
(422), and only then the publish (503 if the broker does not confirm every event in time).
Anything unexpected is a 500, logged once and counted in the metrics like every other answer.

Metrics are not on this app: `create_metrics_app` serves them on a port of their own. Slow and
oversized clients are stopped before a request reaches the app (service/connection_guard.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from service import events as ev
from service import messages, tracing
from service.broker import Broker, BrokerUnavailable, Outgoing, Publisher
from service.files_endpoint import FileIngest
from service.hosts import TrustedHosts
from service.inbound import (
    RETRY_AFTER_SECONDS,
    BodyIncomplete,
    BodyTooLarge,
    RecentIdentities,
    SourceConfig,
    read_body,
    source_configs,
)
from service.metrics import Metrics, create_metrics
from service.openapi import openapi_document
from service.problems import problem
from service.settings import Settings
from service.signatures import SignatureError
from service.topology import Topology

log = logging.getLogger("payrelay.receiver")

_ACCEPTED_TYPES = {*ev.STRUCTURED, ev.BATCH}


class Ingest:
    """The ingest endpoint with everything it needs, built once per app."""

    def __init__(
        self, settings: Settings, publisher: Publisher, topology: Topology, metrics: Metrics
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.topology = topology
        self.metrics = metrics
        self.sources = source_configs(settings)
        self.recent = RecentIdentities()
        # Bounded: the labels are configured sources (or "unknown"), event types and statuses.
        self._children: dict[tuple[Any, ...], Any] = {}

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        name = request.path_params["source"]
        source = self.sources.get(name)
        label = name if source is not None else "unknown"
        try:
            response, types = await self._handle(request, source)
        except Exception:
            # Answered here rather than by Starlette so that the 500 is counted and timed, and
            # the sender gets problem+json without a traceback. The sender retries on any non-2xx.
            log.exception("ingest from %s failed unexpectedly", label)
            detail = "internal error in the receiver; retry the request"
            response, types = problem(500, detail, title="Internal Server Error"), {}
        status = str(response.status_code)
        self._counted(self.metrics.ingest_requests, label, status).inc()
        for event_type, count in types.items():
            self._counted(self.metrics.ingest_events, label, event_type, status).inc(count)
        self._counted(self.metrics.ingest_duration, label).observe(time.perf_counter() - started)
        return response

    def _counted(self, metric: Any, *labels: str) -> Any:
        """The metric's child for these labels, looked up once (labels() costs a lock and a hash)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    async def _handle(self, request: Request, source: SourceConfig | None) -> tuple[Response, dict[str, int]]:
        if source is None:
            return problem(404, "unknown source; sources are configured in [sources.NAME]"), {}
        media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if media_type not in _ACCEPTED_TYPES:
            return problem(415, f"content type must be one of {', '.join(sorted(_ACCEPTED_TYPES))}"), {}
        limits = self.settings.receiver
        try:
            body = await read_body(request, limits.max_body_bytes, limits.body_timeout_seconds)
        except BodyTooLarge:
            return problem(413, f"body is larger than {limits.max_body_bytes} bytes"), {}
        except BodyIncomplete:
            detail = f"the body did not arrive within {limits.body_timeout_seconds:g} s"
            return problem(408, detail, headers={"Connection": "close"}), {}
        headers = request.headers
        try:
            source.verifier.verify(
                headers.get("webhook-id"),
                headers.get("webhook-timestamp"),
                headers.get("webhook-signature"),
                body,
                time.time(),
            )
        except SignatureError as exc:
            return problem(401, str(exc)), {}
        try:
            items, is_batch = ev.parse_body(body, media_type)
        except ev.BodyError as exc:
            return problem(400, str(exc)), {}
        limit = self.settings.receiver.max_batch_events
        if is_batch and not 0 < len(items) <= limit:
            detail = f"a batch holds 1 to {limit} events; this one has {len(items)}"
            return problem(422, detail, errors=[]), {}
        try:
            events = ev.validate_batch(items, source.types)
        except ev.ContractError as exc:
            failing = sorted({e.index for e in exc.errors if e.index is not None})
            extra: dict[str, Any] = {"invalid_indexes": failing} if is_batch else {}
            errors = [
                e.as_dict() if is_batch else {"field": e.field, "message": e.message} for e in exc.errors
            ]
            return problem(422, "invalid event" + ("s" if is_batch else ""), errors=errors, **extra), {
                "invalid": len(items)
            }
        return await self._publish(request, source, events, body if not is_batch else None)

    async def _publish(
        self, request: Request, source: SourceConfig, events: list[ev.Event], single_body: bytes | None
    ) -> tuple[Response, dict[str, int]]:
        types: dict[str, int] = {}
        outgoing: list[Outgoing] = []
        identities = []
        headers: dict[str, Any] = {messages.SOURCE: source.name}
        traceparent = tracing.valid(request.headers.get("traceparent"))
        if traceparent:
            headers["traceparent"] = traceparent
        for event in events:
            types[event.type] = types.get(event.type, 0) + 1
            identity = messages.identity(source.name, event.source, event.id)
            if identity in self.recent or identity in identities:
                continue
            identities.append(identity)
            outgoing.append(
                Outgoing(
                    exchange=self.topology.events,
                    routing_key=event.type,
                    body=single_body if single_body is not None else orjson.dumps(event.raw),
                    message_id=event.id,
                    headers=headers,
                    type=event.type,
                )
            )
        if outgoing:
            started = time.perf_counter()
            try:
                await self.publisher.publish(outgoing)
            except BrokerUnavailable as exc:
                log.warning("ingest from %s not accepted: %s", source.name, exc)
                return problem(
                    503,
                    "the event could not be stored; retry later",
                    headers={"Retry-After": RETRY_AFTER_SECONDS},
                ), types
            self.metrics.publish_duration.observe(time.perf_counter() - started)
            for identity in identities:
                self.recent.add(identity)
            # DEBUG: one line per request at INFO cost a tenth of the receiver's time; the
            # payrelay_ingest_* metrics count what is accepted, and the consumer logs each payment.
            log.debug(
                "accepted %d event(s) from %s, first %r%s",
                len(outgoing),
                source.name,
                outgoing[0].message_id,
                tracing.log_suffix(traceparent),
            )
        body = {"accepted": len(events), "published": len(outgoing), "ids": [e.id for e in events]}
        return Response(orjson.dumps(body), status_code=202, media_type="application/json"), types


_INGEST = "/v1/ingest/"


class ReceiverApp(Starlette):
    """Starlette, with `POST /v1/ingest/{source}` answered before Starlette's own layers.

    The ingest route is the one every payment takes: its handler answers every outcome itself
    (problem+json, a 500 included), so Starlette's error and exception middleware and its router
    only cost it time (a fifth of a single-event request). The host check stays outermost, for
    it and for everything else; any other path, or another method, goes through Starlette.
    """

    ingest: Ingest
    trusted: tuple[str, ...]

    def build_middleware_stack(self) -> ASGIApp:
        return TrustedHosts(_IngestFirst(super().build_middleware_stack(), self.ingest), self.trusted)


class _IngestFirst:
    def __init__(self, app: ASGIApp, ingest: Ingest) -> None:
        self.app = app
        self.ingest = ingest

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path: str = scope["path"]
            if path.startswith(_INGEST):
                source = path[len(_INGEST) :]
                if source and "/" not in source:  # as Route's {source}: one non-empty segment
                    scope["path_params"] = {"source": source}
                    response = await self.ingest.handle(Request(scope, receive))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)


def create_app(
    settings: Settings, *, publisher: Publisher | None = None, metrics: Metrics | None = None
) -> Starlette:
    """The receiver ASGI app. Without `publisher`, the lifespan opens (and closes) a `Broker`."""
    metrics = metrics or create_metrics()
    topology = settings.broker.topology()
    owned: Broker | None = None
    if publisher is None:
        publisher = owned = settings.broker.broker("payrelay-receiver")
    the_publisher = publisher
    ingest = Ingest(settings, the_publisher, topology, metrics)
    files = FileIngest(settings, the_publisher, topology, metrics, ingest.sources, ingest.recent)
    document = orjson.dumps(openapi_document(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if owned is not None:
            await owned.start(wait=5.0)
        try:
            yield
        finally:
            if owned is not None:
                await owned.stop()

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if the_publisher.ready:
            return JSONResponse({"status": "ready", "broker": "open"})
        return JSONResponse({"status": "not ready", "broker": "closed"}, status_code=503)

    async def openapi(request: Request) -> Response:
        return Response(document, media_type="application/json")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem(exc.status_code, str(exc.detail), headers=exc.headers)

    app = ReceiverApp(
        exception_handlers={HTTPException: http_error},
        routes=[
            Route("/v1/ingest/{source}", ingest.handle, methods=["POST"]),
            Route("/v1/files/{source}", files.handle, methods=["POST"]),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/openapi.json", openapi),
        ],
        lifespan=lifespan,
    )
    app.ingest, app.trusted = ingest, tuple(settings.receiver.trusted_hosts)
    # `/v1/ingest/acme-bank/` is a 404, not a redirect to whatever Host the request named.
    app.router.redirect_slashes = False
    app.state.publisher = the_publisher
    app.state.metrics = metrics
    app.state.healthz, app.state.readyz = healthz, readyz
    return app


def create_metrics_app(receiver: Starlette) -> Starlette:
    """`/metrics` for Prometheus, with `/healthz` and `/readyz`, for `receiver_metrics_port`.

    Never on the public port: the series name every source, and an exporter should not be one more
    thing the internet can make the receiver do. Rendering opens nothing: no broker call per scrape.
    """
    metrics: Metrics = receiver.state.metrics

    async def metrics_endpoint(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    return Starlette(
        routes=[
            Route("/metrics", metrics_endpoint),
            Route("/healthz", receiver.state.healthz),
            Route("/readyz", receiver.state.readyz),
        ]
    )
