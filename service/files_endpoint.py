"""`POST /v1/files/{source}`: a bank file, answered 202 only once RabbitMQ holds every event of it.

The same order of checks as events (service/receiver.py): unknown source (404), body size while
streaming (413, `max_file_bytes`) and time (408), signature over the raw bytes (401), then the
file (400 for a DTD or entities, 422 with where and why for anything else), and only then the
publish: all of the file's events or a 503, so the bank sends the file again (duplicates are
harmless: each event's identity is the bank's reference). The content type is not checked: banks
send files as whatever their software labels them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from service import tracing
from service.bankfiles import intake
from service.bankfiles.model import FileRejected, UnsafeDocument
from service.broker import BrokerUnavailable, Publisher
from service.inbound import (
    RETRY_AFTER_SECONDS,
    BodyIncomplete,
    BodyTooLarge,
    RecentIdentities,
    SourceConfig,
    read_body,
)
from service.metrics import Metrics
from service.problems import problem
from service.settings import Settings
from service.signatures import SignatureError
from service.topology import Topology

log = logging.getLogger("payrelay.receiver")


class FileIngest:
    """The bank-file endpoint, sharing the ingest endpoint's sources, publisher and recent identities."""

    def __init__(
        self,
        settings: Settings,
        publisher: Publisher,
        topology: Topology,
        metrics: Metrics,
        sources: dict[str, SourceConfig],
        recent: RecentIdentities,
    ) -> None:
        self.settings = settings
        self.publisher = publisher
        self.topology = topology
        self.metrics = metrics
        self.sources = sources
        self.recent = recent

    async def handle(self, request: Request) -> Response:
        name = request.path_params["source"]
        source = self.sources.get(name)
        label = name if source is not None else "unknown"
        try:
            response, file_format = await self._handle(request, source)
        except Exception:
            log.exception("bank file from %s failed unexpectedly", label)
            detail = "internal error in the receiver; send the file again"
            response, file_format = problem(500, detail, title="Internal Server Error"), "unknown"
        self.metrics.files.labels(label, file_format, str(response.status_code)).inc()
        return response

    async def _handle(self, request: Request, source: SourceConfig | None) -> tuple[Response, str]:
        if source is None:
            return problem(404, "unknown source; sources are configured in [sources.NAME]"), "unknown"
        limits = self.settings.files
        try:
            body = await read_body(request, limits.max_file_bytes, limits.body_timeout_seconds)
        except BodyTooLarge:
            detail = f"file is larger than {limits.max_file_bytes} bytes (max_file_bytes)"
            return problem(413, detail), "unknown"
        except BodyIncomplete:
            detail = f"the file did not arrive within {limits.body_timeout_seconds:g} s"
            return problem(408, detail, headers={"Connection": "close"}), "unknown"
        headers = request.headers
        file_id = headers.get("webhook-id")
        try:
            source.verifier.verify(
                file_id, headers.get("webhook-timestamp"), headers.get("webhook-signature"), body, time.time()
            )
        except SignatureError as exc:
            return problem(401, str(exc)), "unknown"
        settings = self.settings.sources[source.name]
        try:
            # Off the event loop: a 25 MiB statement takes a while, and other requests go on meanwhile.
            read = await asyncio.to_thread(
                intake.read,
                body,
                expected=settings.format,
                options=settings.file_options(),
                file_id=file_id or "",  # verify() has refused a request without one
                key=limits.key(),
            )
        except UnsafeDocument as exc:
            return problem(400, str(exc)), "unknown"
        except FileRejected as exc:
            errors = [{"where": exc.where, "why": exc.why}]
            return problem(422, f"the file cannot be read: {exc}", errors=errors), "unknown"
        not_allowed = sorted({e.type for e in read.events} - set(source.types))
        if not_allowed:
            kinds = ", ".join(not_allowed)
            detail = f"this file holds {kinds} events, which this source may not send (its types)"
            return problem(422, detail, errors=[]), read.statement.format
        return await self._publish(request, source.name, read), read.statement.format

    async def _publish(self, request: Request, origin: str, read: intake.Intake) -> Response:
        traceparent = tracing.valid(request.headers.get("traceparent"))
        fresh = intake.outgoing(read, origin, self.topology.events, traceparent)
        identities = [(origin, e.source, e.id) for e in read.events]
        keep = [identity not in self.recent for identity in identities]
        messages = [m for m, new in zip(fresh, keep, strict=True) if new]
        file_format = read.statement.format
        if messages:
            started = time.perf_counter()
            within = intake.publish_within(self.settings.broker.publish_timeout_seconds, len(messages))
            try:
                await self.publisher.publish(messages, within=within)
            except BrokerUnavailable as exc:
                log.warning("bank file %r from %s not accepted: %s", read.file_id, origin, exc)
                return problem(
                    503,
                    "the file's events could not all be stored; send the file again later",
                    headers={"Retry-After": RETRY_AFTER_SECONDS},
                )
            self.metrics.publish_duration.observe(time.perf_counter() - started)
            for identity, new in zip(identities, keep, strict=True):
                if new:
                    self.recent.add(identity)
        self._count(origin, read, len(messages))
        log.info(
            "accepted bank file %r from %s: %s, %d event(s), %d published, %d skipped%s",
            read.file_id,
            origin,
            file_format,
            len(read.events),
            len(messages),
            len(read.statement.skipped),
            tracing.log_suffix(traceparent),
        )
        body: dict[str, Any] = read.answer(published=len(messages))
        return Response(orjson.dumps(body), status_code=202, media_type="application/json")

    def _count(self, origin: str, read: intake.Intake, published: int) -> None:
        file_format = read.statement.format
        entries = self.metrics.file_entries
        entries.labels(origin, file_format, "published").inc(published)
        entries.labels(origin, file_format, "duplicate").inc(len(read.events) - published)
        for item in read.statement.skipped:
            entries.labels(origin, file_format, f"skipped_{item.reason}").inc()
        for event in read.events:
            self.metrics.ingest_events.labels(origin, event.type, "202").inc()
