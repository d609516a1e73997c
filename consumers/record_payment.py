"""The record-payment worker: decide each message's fate once, then ack, retry or dead-letter it.

For each message: validate the event, record its parts (`recording.py`: ledger, reconciliation,
the invoice check, `record_payment`), hand the recorded parts' confirmations to the outbox, and
ack once the ledger says recorded. When recording stopped, `decide` picks the disposition once;
the ledger is told of it; then it is applied. A crash anywhere before the ack redelivers the
message; the ledger (reconciling whatever may have reached Chargebee) makes that harmless.

Consuming and publishing use separate connections (`intake` and `broker`): a resource alarm
blocks the publishing one, and acknowledgements must still flow.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage, AbstractQueue

from consumers.dispositions import Ack, DeadLetter, Disposition, Requeue, Retry, Review, decide
from consumers.errors import (
    Busy,
    ConfigurationFault,
    InvalidEvent,
    NeedsReview,
    OutcomeUnknown,
    PaymentError,
    TransientError,
    UnreadableAnswer,
)
from consumers.outbox import Outbox
from consumers.recording import Attempt, Recorder, Stopped
from consumers.review import review_of
from service import events, messages, tracing
from service.broker import Broker, BrokerUnavailable, Outgoing
from service.ledger import EventKey, Ledger
from service.metrics import Metrics
from service.review.model import NewReview
from service.review.service import REVIEW_HEADER
from service.settings import Settings

log = logging.getLogger("payrelay.consumer")

# A message held while Chargebee refuses our configuration goes back after this long, well within
# RabbitMQ's consumer timeout (30 minutes by default), costing one delivery instead of many.
HOLD_WHILE_PAUSED_SECONDS = 600.0
# When the broker refuses a retry or dead-letter copy, the message waits this long at most (its
# retry delay, Retry-After included, if shorter) before it goes back to the queue.
BROKER_TROUBLE_WAIT_SECONDS = 30.0


class RecordPaymentWorker:
    """Consumes the work queue; `on_connect` is the intake broker's hook after each (re)connect."""

    def __init__(
        self,
        settings: Settings,
        *,
        broker: Broker,
        recorder: Recorder,
        outbox: Outbox,
        ledger: Ledger,
        metrics: Metrics,
        owner: str,
        intake: Broker | None = None,
    ) -> None:
        self.settings = settings
        self.broker = broker  # publishes retries, dead letters and confirmations
        self.intake = intake or broker  # the connection messages arrive (and are acked) on
        self.topology = broker.topology
        self.recorder = recorder
        self.chargebee = recorder.chargebee
        self.outbox = outbox
        self.ledger = ledger
        self.metrics = metrics
        self.owner = owner
        self.rng = random.Random()
        self.paused_reason: str | None = None
        self.stopping = False
        self._resumed = asyncio.Event()
        self._resumed.set()
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._auth_task: asyncio.Task[None] | None = None

    # -- consuming ---------------------------------------------------------------------------

    @property
    def consuming(self) -> bool:
        return self._tag is not None and self.intake.ready

    async def on_connect(self, connection: AbstractConnection) -> None:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=self.settings.consumer.prefetch)
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
        self._resumed.set()  # messages held while paused go back now
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
        attempts = messages.count(headers, messages.ATTEMPTS)
        # One owner per delivery, not per process: two copies of an event in flight in this very
        # process must not both pass the claim.
        owner = f"{self.owner}/{uuid.uuid4().hex[:12]}"
        while True:
            if not await self._held():
                return Requeue("stopping, or Chargebee still refuses our configuration")
            try:
                key, attempt = await self._attempt(message, headers, owner)
                if key is not None:
                    await self.outbox.send(key, attempt.recorded, _trace_headers(headers))
            except Exception as exc:
                # The ledger unreachable, or a bug: not the message's fault, and a plain requeue
                # would spend the delivery limit in seconds. Retry it on the tiers.
                log.exception("unexpected error on message %r", message.message_id)
                internal = TransientError(f"internal error: {type(exc).__name__}: {str(exc)[:300]}")
                return decide(
                    internal,
                    attempts,
                    self.settings.consumer.max_attempts,
                    self.topology.retry_tiers,
                    self.rng,
                )
            stopped = attempt.stopped
            if stopped is None:
                return Ack("recorded" if attempt.new else "duplicate")
            if isinstance(stopped.error, NeedsReview):
                assert key is not None
                await self._note(key, stopped, owner, None)  # an overpayment's claim is let go
                return Review(review_of(message, headers, key, stopped.error))
            if isinstance(stopped.error, ConfigurationFault):
                assert key is not None
                await self._note(key, stopped, owner, None)
                await self._pause(str(stopped.error))
                continue  # held until Chargebee accepts us again, then tried afresh
            disposition = decide(
                stopped.error,
                attempts,
                self.settings.consumer.max_attempts,
                self.topology.retry_tiers,
                self.rng,
            )
            if isinstance(disposition, DeadLetter) and stopped.invoice_id is not None:
                disposition = dataclasses.replace(disposition, invoice_id=stopped.invoice_id)
            if key is not None:
                await self._note(key, stopped, owner, disposition)
            return disposition

    async def _attempt(
        self, message: AbstractIncomingMessage, headers: dict[str, Any], owner: str
    ) -> tuple[EventKey | None, Attempt]:
        origin = messages.text(headers, messages.SOURCE) or "unknown"
        try:
            event = events.validate(orjson.loads(message.body))
        except (orjson.JSONDecodeError, events.ContractError) as exc:
            return None, Attempt(stopped=Stopped(InvalidEvent(f"invalid event: {exc}")))
        key = messages.identity(origin, event.source, event.id)
        attempt = await self.recorder.record(
            event,
            key,
            generation=messages.count(headers, messages.GENERATION),
            owner=owner,
            traceparent=messages.text(headers, messages.TRACEPARENT),
            reviewed=REVIEW_HEADER in headers,
        )
        if attempt.new:
            log.debug("event %r: %d part(s) recorded%s", event.id, attempt.new, _trace(headers))
        return key, attempt

    async def _note(
        self, key: EventKey, stopped: Stopped, owner: str, disposition: Disposition | None
    ) -> None:
        """Tell the ledger how the attempt ended, as decided; a failure here is logged, not fatal.

        A lost write is safe: the claim's lease lapses, and whoever takes it over reconciles.
        """
        error = stopped.error
        final = isinstance(disposition, DeadLetter)
        if isinstance(error, Busy) or not (stopped.claimed or final):
            return
        unreadable = isinstance(error, UnreadableAnswer | OutcomeUnknown)
        maybe = unreadable or (isinstance(error, TransientError) and error.maybe_recorded)
        try:
            await self.ledger.record_failure(
                key,
                owner=owner,
                error=str(error),
                reason=disposition.reason if isinstance(disposition, DeadLetter) else None,
                final=final,
                part=stopped.part,
                maybe_recorded=maybe,
                unreadable_200=unreadable,
            )
        except Exception as exc:
            log.warning("could not note the failure of %r in the ledger: %s", key[2], type(exc).__name__)

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
                case Review(item):
                    await self._review(message, item, disposition)
                case Requeue(why, delay):
                    log.info("returning message %r to the queue: %s", message.message_id, why)
                    await asyncio.sleep(delay)
                    await message.nack(requeue=True)
                    self.metrics.consumer_outcomes.labels("requeued", "").inc()
        except BrokerUnavailable as exc:
            # Chargebee is not called again at once: the message waits, then goes back.
            wait = _trouble_wait(disposition)
            log.warning(
                "could not move message %r (%s); returning it to the queue in %.0fs",
                message.message_id,
                exc,
                wait,
            )
            await asyncio.sleep(wait)
            with contextlib.suppress(Exception):
                await message.nack(requeue=True)
        except Exception as exc:  # the channel is gone: the broker redelivers the message
            log.warning("could not settle message %r: %s", message.message_id, type(exc).__name__)

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
            messages.ATTEMPTS: retry.attempts,
            messages.LAST_ERROR: retry.error[:1000],
        }
        await self.broker.publish([self._copy(message, "", retry.tier.queue, headers, retry.delay)])
        await message.ack()
        self.metrics.retries.labels(retry.tier.queue.rsplit(".", 1)[-1]).inc()
        self.metrics.consumer_outcomes.labels("retried", "").inc()

    async def _dead_letter(self, message: AbstractIncomingMessage, dead: DeadLetter) -> None:
        headers = {
            **(message.headers or {}),
            messages.REASON: dead.reason,
            messages.ERROR: dead.error[:2000],
            messages.ATTEMPTS: dead.attempts,
            messages.FAILED_AT: messages.rfc3339(datetime.now(UTC)),
        }
        if dead.chargebee is not None:
            headers[messages.CHARGEBEE_ERROR] = orjson.dumps(dead.chargebee).decode()[:4000]
        if dead.invoice_id is not None:
            headers[messages.INVOICE] = dead.invoice_id
        await self.broker.publish([self._copy(message, self.topology.dead_letter, "", headers)])
        await message.ack()
        log.warning("dead-lettered %r: %s (%r)", message.message_id, dead.reason, dead.error)
        self.metrics.dead_letters.labels(dead.reason).inc()
        self.metrics.consumer_outcomes.labels("dead_lettered", dead.reason).inc()

    async def _review(self, message: AbstractIncomingMessage, new: NewReview, disposition: Review) -> None:
        """Keep the item durably, then ack; a resend of a payment a person rejected is a dead letter."""
        try:
            item = await self.ledger.reviews.add(new)
        except Exception as exc:
            why = type(exc).__name__
            log.warning("could not keep %r in review (%s); returning it", message.message_id, why)
            await asyncio.sleep(BROKER_TROUBLE_WAIT_SECONDS / 6)
            await message.nack(requeue=True)
            return
        if item.state == "rejected":
            error = f"rejected in review {item.id} by {item.decided_by}"
            attempts = messages.count(dict(message.headers or {}), messages.ATTEMPTS)
            await self._dead_letter(message, DeadLetter("unmatched_invoice", error, attempts))
            return
        await message.ack()
        log.info("payment %r waits in review as %s (%s)", new.key[2], item.id, new.why)
        self.metrics.consumer_outcomes.labels("review", new.why).inc()

    # -- configuration pause -----------------------------------------------------------------

    async def _held(self) -> bool:
        """Wait while consuming is paused; False when stopping or after the hold limit."""
        if not self._resumed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._resumed.wait(), HOLD_WHILE_PAUSED_SECONDS)
        return self._resumed.is_set() and not self.stopping

    async def _pause(self, why: str) -> None:
        """Stop taking messages; the ones in flight are held (no delivery spent) until resumed."""
        if self.paused_reason is not None:
            return
        self.paused_reason = why
        self._resumed.clear()
        self.metrics.chargebee_auth_failing.set(1)
        log.error(
            "Chargebee refuses payrelay's configuration (%s); consuming paused, re-checked every %.0fs",
            why,
            self.settings.consumer.auth_retry_seconds,
        )
        self._auth_task = asyncio.get_running_loop().create_task(self._recheck())
        await self._stop_consuming()

    async def _recheck(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.settings.consumer.auth_retry_seconds)
            try:
                await self.chargebee.check_auth()
            except PaymentError as exc:
                log.warning("Chargebee still refuses payrelay: %s", exc.status or type(exc).__name__)
                continue
            self.paused_reason = None
            self.metrics.chargebee_auth_failing.set(0)
            self._resumed.set()
            log.info("Chargebee accepts payrelay's configuration again; consuming resumed")
            await self._start_consuming()
            return


def _trouble_wait(disposition: Disposition) -> float:
    delay = disposition.delay if isinstance(disposition, Retry | Requeue) else BROKER_TROUBLE_WAIT_SECONDS
    return min(max(delay, 1.0), BROKER_TROUBLE_WAIT_SECONDS)


def _trace_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {messages.TRACEPARENT: headers[messages.TRACEPARENT]} if messages.TRACEPARENT in headers else {}


def _trace(headers: dict[str, Any]) -> str:
    return tracing.log_suffix(messages.text(headers, messages.TRACEPARENT))
