"""The record-payment worker: ledger, Chargebee, confirmations, then ack / retry / dead-letter.

For each message: validate the event, find its invoice, claim its identity in the ledger, call
`record_payment` with an idempotency key, store the outcome, publish the confirmations with
confirms, and only then ack. A crash anywhere before the ack redelivers the message; the ledger
(and, within its 30-minute window, Chargebee's idempotency key) makes that harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from consumers import confirmations
from consumers.chargebee import ChargebeeClient
from consumers.dispositions import Ack, DeadLetter, Disposition, Requeue, Retry, busy, decide
from consumers.errors import ConfigurationFault, InvalidEvent, PaymentError, TransientError, UnmatchedInvoice
from consumers.mapping import find_invoice, invoice_pattern, to_request
from service import events, tracing
from service.broker import Broker, BrokerUnavailable, Outgoing
from service.ledger import EventKey, Ledger, Recorded
from service.metrics import Metrics
from service.settings import Settings

log = logging.getLogger("payrelay.consumer")

ATTEMPTS = "x-payrelay-attempts"
GENERATION = "x-payrelay-generation"
SOURCE = "x-payrelay-source"
REQUEUE_DELAY = 2.0


def _header(headers: dict[str, Any], name: str) -> str | None:
    value = headers.get(name)
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return None if value is None else str(value)


def _int_header(headers: dict[str, Any], name: str) -> int:
    try:
        return max(0, int(_header(headers, name) or 0))
    except ValueError:
        return 0


def _now() -> datetime:
    return datetime.now(UTC)


class RecordPaymentWorker:
    """Consumes the work queue; `on_connect` is the broker supervisor's hook after each (re)connect."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: Broker,
        ledger: Ledger,
        chargebee: ChargebeeClient,
        metrics: Metrics,
        owner: str,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.topology = broker.topology
        self.ledger = ledger
        self.chargebee = chargebee
        self.metrics = metrics
        self.owner = owner
        self.rng = random.Random()
        self.paused_reason: str | None = None
        self.stopping = False
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._auth_task: asyncio.Task[None] | None = None

    # -- consuming ---------------------------------------------------------------------------

    @property
    def consuming(self) -> bool:
        return self._tag is not None and self.broker.ready

    async def on_connect(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.consumer_prefetch)
        self._queue = await channel.get_queue(self.topology.work_queue, ensure=False)
        self._tag = None
        if not self.stopping and self.paused_reason is None:
            await self._start_consuming()

    async def _start_consuming(self) -> None:
        if self._queue is not None and self._tag is None:
            self._tag = await self._queue.consume(self._on_message)
            log.info("consuming %s", self.topology.work_queue)

    async def _stop_consuming(self) -> None:
        tag, self._tag = self._tag, None
        if tag is not None and self._queue is not None:
            with contextlib.suppress(Exception):
                await self._queue.cancel(tag)

    async def stop(self, grace: float) -> None:
        """Stop taking messages, give in-flight ones `grace` seconds, then return the rest."""
        self.stopping = True
        await self._stop_consuming()
        if self._auth_task is not None:
            self._auth_task.cancel()
        if self._in_flight:
            _, pending = await asyncio.wait(set(self._in_flight), timeout=grace)
            for task in pending:
                task.cancel()  # unacked messages go back to the queue when the channel closes

    # -- one message -------------------------------------------------------------------------

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        self.metrics.consumer_in_flight.inc()
        try:
            disposition = await self._handle(message)
            await self._apply(message, disposition)
        finally:
            self._in_flight.discard(task)
            self.metrics.consumer_in_flight.dec()

    async def _handle(self, message: AbstractIncomingMessage) -> Disposition:
        headers = dict(message.headers or {})
        attempts = _int_header(headers, ATTEMPTS)
        try:
            return await self._record(message, headers, attempts)
        except PaymentError as error:
            if isinstance(error, ConfigurationFault):
                # Stop deliveries before the message goes back, or it would bounce straight back
                # to us and spend the queue's delivery limit.
                await self._pause(str(error))
            return decide(error, attempts, self.settings.max_attempts, self.topology.retry_tiers, self.rng)
        except BrokerUnavailable as exc:
            # The payment is recorded but its confirmations are not out: try again, the ledger
            # turns the redelivery into a republish.
            return Requeue(f"confirmations not published: {exc}", delay=REQUEUE_DELAY)
        except Exception as exc:
            # The ledger unreachable, or a bug: not the message's fault, and a plain requeue would
            # spend the delivery limit in seconds. Retry it on the tiers like any transient error.
            log.exception("unexpected error on message %s", message.message_id)
            internal = TransientError(f"internal error: {type(exc).__name__}: {str(exc)[:300]}")
            return decide(internal, attempts, self.settings.max_attempts, self.topology.retry_tiers, self.rng)

    async def _record(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], attempts: int
    ) -> Disposition:
        origin = _header(headers, SOURCE) or "unknown"
        try:
            event = events.validate(orjson.loads(message.body))
        except (orjson.JSONDecodeError, events.EventInvalid) as exc:
            raise InvalidEvent(f"invalid event: {exc}") from None
        key: EventKey = (origin, event.source, event.id)
        invoice_id = find_invoice(event.payment, invoice_pattern(self.settings, origin))
        if invoice_id is None:
            error = UnmatchedInvoice("no invoice_id, and invoice_pattern found none in remittance or memo")
            await self.ledger.record_failure(
                key, owner=self.owner, error=str(error), reason=error.reason, final=True
            )
            raise error
        generation = _int_header(headers, GENERATION)
        # One owner per delivery, not per process: two copies of an event in flight in this very
        # process must not both pass the claim.
        owner = f"{self.owner}/{uuid.uuid4().hex[:12]}"
        claim = await self.ledger.claim(
            key,
            owner=owner,
            lease_seconds=self.settings.ledger_lease_seconds,
            invoice_id=invoice_id,
            generation=generation,
        )
        if claim.status == "recorded":
            assert claim.recorded is not None
            await self._confirm(claim.recorded.confirmation, headers)
            return Ack("duplicate")
        if claim.status == "busy":
            return busy(self.topology.retry_tiers, attempts, self.rng)
        request = to_request(self.settings, key, event.payment, invoice_id, generation)
        try:
            result = await self.chargebee.record_payment(request, _header(headers, "traceparent"))
        except PaymentError as error:
            await self._note_failure(key, owner, error, attempts)
            raise
        now = _now()
        stored = confirmations.encode(confirmations.build(key, event, invoice_id, result, now))
        await self.ledger.record_success(
            key,
            Recorded(
                transaction_id=result.transaction_id,
                invoice_id=invoice_id,
                invoice_status=result.invoice_status,
                amount_due=result.amount_due,
                amount=event.payment.amount,
                currency=event.payment.currency,
                recorded_at=now,
                confirmation=stored,
            ),
            owner=owner,
        )
        await self._confirm(stored, headers)
        log.info(
            "recorded %s from %s on %s: %s %s, transaction %s, invoice %s%s",
            event.id,
            origin,
            invoice_id,
            event.payment.amount,
            event.payment.currency,
            result.transaction_id,
            result.invoice_status,
            tracing.log_suffix(_header(headers, "traceparent")),
        )
        return Ack("recorded")

    async def _note_failure(self, key: EventKey, owner: str, error: PaymentError, attempts: int) -> None:
        disposition = decide(error, attempts, self.settings.max_attempts, self.topology.retry_tiers, self.rng)
        final = isinstance(disposition, DeadLetter)
        reason = disposition.reason if isinstance(disposition, DeadLetter) else None
        await self.ledger.record_failure(key, owner=owner, error=str(error), reason=reason, final=final)

    async def _confirm(self, stored: bytes, headers: dict[str, Any]) -> None:
        extra = {"traceparent": headers["traceparent"]} if "traceparent" in headers else {}
        await self.broker.publish(confirmations.outgoing(self.topology.confirmations, stored, extra))

    # -- dispositions ------------------------------------------------------------------------

    async def _apply(self, message: AbstractIncomingMessage, disposition: Disposition) -> None:
        try:
            match disposition:
                case Ack(outcome):
                    await message.ack()
                    self.metrics.consumer_outcomes.labels(outcome, "").inc()
                case Retry():
                    await self._republish(message, disposition)
                case DeadLetter():
                    await self._dead_letter(message, disposition)
                case Requeue(why, delay):
                    log.info("returning message %s to the queue: %s", message.message_id, why)
                    await asyncio.sleep(delay)
                    await message.nack(requeue=True)
                    self.metrics.consumer_outcomes.labels("requeued", "").inc()
        except BrokerUnavailable as exc:
            log.warning("could not move message %s (%s); returning it to the queue", message.message_id, exc)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        except Exception as exc:  # the channel is gone: the broker redelivers the message
            log.warning("could not settle message %s: %s", message.message_id, type(exc).__name__)

    def _copy(
        self,
        message: AbstractIncomingMessage,
        exchange: str,
        routing_key: str,
        headers: dict[str, Any],
        expiration: float | None = None,
    ) -> Outgoing:
        return Outgoing(
            exchange=exchange,
            routing_key=routing_key,
            body=message.body,
            message_id=message.message_id or "",
            headers=headers,
            content_type=message.content_type or "application/cloudevents+json",
            type=message.type,
            expiration=expiration,
        )

    async def _republish(self, message: AbstractIncomingMessage, retry: Retry) -> None:
        headers = {
            **(message.headers or {}),
            ATTEMPTS: retry.attempts,
            "x-payrelay-last-error": retry.error[:1000],
        }
        await self.broker.publish([self._copy(message, "", retry.tier.queue, headers, retry.delay)])
        await message.ack()
        self.metrics.retries.labels(retry.tier.queue.rsplit(".", 1)[-1]).inc()
        self.metrics.consumer_outcomes.labels("retried", "").inc()

    async def _dead_letter(self, message: AbstractIncomingMessage, dead: DeadLetter) -> None:
        headers = {
            **(message.headers or {}),
            "x-payrelay-reason": dead.reason,
            "x-payrelay-error": dead.error[:2000],
            ATTEMPTS: dead.attempts,
            "x-payrelay-failed-at": _now().isoformat().replace("+00:00", "Z"),
        }
        if dead.chargebee is not None:
            headers["x-payrelay-chargebee-error"] = orjson.dumps(dead.chargebee).decode()[:4000]
        await self.broker.publish([self._copy(message, self.topology.dead_letter, "", headers)])
        await message.ack()
        log.warning("dead-lettered %s: %s (%s)", message.message_id, dead.reason, dead.error)
        self.metrics.dead_letters.labels(dead.reason).inc()
        self.metrics.consumer_outcomes.labels("dead_lettered", dead.reason).inc()

    # -- credentials pause -------------------------------------------------------------------

    async def _pause(self, why: str) -> None:
        if self.paused_reason is not None:
            return
        self.paused_reason = why
        self.metrics.chargebee_auth_failing.set(1)
        log.error(
            "Chargebee refused the API key; consuming paused, credentials re-checked every %.0fs",
            self.settings.auth_retry_seconds,
        )
        self._auth_task = asyncio.get_running_loop().create_task(self._recheck_credentials())
        await self._stop_consuming()

    async def _recheck_credentials(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.settings.auth_retry_seconds)
            try:
                await self.chargebee.check_auth()
            except PaymentError as exc:
                log.warning("credentials still refused: %s", exc.status or type(exc).__name__)
                continue
            self.paused_reason = None
            self.metrics.chargebee_auth_failing.set(0)
            log.info("Chargebee accepts the API key again; consuming resumed")
            await self._start_consuming()
            return
