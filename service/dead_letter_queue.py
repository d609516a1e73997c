"""The dead-letter queue's I/O: list, replay (with edits) and purge over AMQP, with an audit.

RabbitMQ cannot browse a queue, so every operation takes up to a snapshot's worth of messages
unacked (`basic.get`), acts on those that match, and returns the others by closing the channel: a
quorum queue hands returned messages back in their original order. A replay publishes to the work
queue with confirms *before* it acks the dead letter, so a crash in between leaves a duplicate
(harmless: the ledger), never a loss. What a letter is and which ones an operation touches is
`service.dead_letters`, pure and unit-tested.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

from service.broker import Broker, Outgoing
from service.dead_letters import Filter, Letter, Outcome, apply_edits, check_edits, decode, replay_headers
from service.ledger import Ledger
from service.topology import Topology

Progress = Callable[[int, int], None]
RETURN_WAIT_SECONDS = 2.0


@dataclass
class Taken:
    """Messages taken from the dead-letter queue, and how many of them were acked (removed)."""

    messages: list[AbstractIncomingMessage] = field(default_factory=list)
    acked: int = 0


class DeadLetterQueue:
    """Operations on one prefix's dead-letter queue, over a connection the caller owns."""

    def __init__(
        self, connection: AbstractConnection, broker: Broker, topology: Topology, ledger: Ledger | None = None
    ) -> None:
        self.connection = connection
        self.broker = broker
        self.topology = topology
        self.ledger = ledger

    @contextlib.asynccontextmanager
    async def _taken(self, limit: int | None) -> AsyncIterator[Taken]:
        """Up to `limit` messages taken unacked; whatever is not acked goes back, in order, on exit."""
        channel = await self.connection.channel()
        taken = Taken()
        available = 0
        try:
            queue = await channel.declare_queue(self.topology.dead_letter, passive=True)
            available = queue.declaration_result.message_count or 0
            count = available if limit is None else min(available, limit)
            for _ in range(count):
                message = await queue.get(fail=False, no_ack=False)
                if message is None:
                    break
                taken.messages.append(message)
            yield taken
        finally:
            await channel.close()
            await self._settled(available - taken.acked)

    async def _settled(self, expected: int, within: float = RETURN_WAIT_SECONDS) -> None:
        """Wait (bounded) until the messages handed back are ready again.

        A quorum queue applies the return of a closed channel's messages asynchronously: without
        this, a browse straight after another could find the queue short, even empty.
        """
        if expected <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                # Polling is the only way: the broker does not announce returned messages.
                while await self.count() < expected:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)

    async def count(self) -> int:
        channel = await self.connection.channel()
        try:
            queue = await channel.declare_queue(self.topology.dead_letter, passive=True)
            return queue.declaration_result.message_count or 0
        finally:
            await channel.close()

    async def list(self, selector: Filter | None = None, limit: int | None = 1000) -> list[Letter]:
        """Dead letters matching `selector` (all when None), oldest first; the queue is left as it was."""
        now = datetime.now(UTC)
        async with self._taken(limit) as taken:
            letters = [decode(m.message_id, dict(m.headers or {}), m.body) for m in taken.messages]
        if selector is None:
            return letters
        return [letter for letter in letters if selector.matches(letter, now)]

    async def replay(
        self,
        selector: Filter,
        *,
        actor: str,
        edits: dict[str, str] | None = None,
        dry_run: bool = False,
        rate: float | None = None,
        progress: Progress | None = None,
    ) -> Outcome:
        """Move matching dead letters back to the work queue; nothing else is touched."""
        check = (lambda letter: check_edits(letter, edits)) if edits else None
        outcome = await self._each(selector, dry_run, progress, self._replay_one(actor, edits, rate), check)
        if not dry_run and self.ledger is not None and outcome.moved:
            await self.ledger.append_audit(
                actor=actor,
                action="edit-replay" if edits else "replay",
                selector=selector.describe(),
                count=outcome.moved,
                details={"ids": [m.id for m in outcome.matched][:1000], "edits": edits or {}},
            )
        return outcome

    async def purge(
        self, selector: Filter, *, actor: str, dry_run: bool = False, progress: Progress | None = None
    ) -> Outcome:
        """Delete matching dead letters for good."""

        async def drop(message: AbstractIncomingMessage, letter: Letter) -> None:
            await message.ack()

        outcome = await self._each(selector, dry_run, progress, drop)
        if not dry_run and self.ledger is not None and outcome.moved:
            await self.ledger.append_audit(
                actor=actor,
                action="purge",
                selector=selector.describe(),
                count=outcome.moved,
                details={"ids": [m.id for m in outcome.matched][:1000]},
            )
        return outcome

    def _replay_one(
        self, actor: str, edits: dict[str, str] | None, rate: float | None
    ) -> Callable[[AbstractIncomingMessage, Letter], Any]:
        interval = 1.0 / rate if rate else 0.0

        async def replay(message: AbstractIncomingMessage, letter: Letter) -> None:
            body = message.body
            if edits and letter.event is not None:  # checked for every letter before the first move
                body = orjson.dumps(apply_edits(letter.event, edits))
            headers = replay_headers(
                dict(message.headers or {}),
                actor=actor,
                at=datetime.now(UTC),
                edits=edits,
                original=message.body,
            )
            await self.broker.publish(
                [
                    Outgoing(
                        exchange="",
                        routing_key=self.topology.work_queue,
                        body=body,
                        message_id=message.message_id or letter.id,
                        headers=headers,
                        content_type=message.content_type or "application/cloudevents+json",
                        type=message.type,
                    )
                ]
            )
            await message.ack()  # only after the broker confirmed the copy in the work queue
            if interval:
                await asyncio.sleep(interval)

        return replay

    async def _each(
        self,
        selector: Filter,
        dry_run: bool,
        progress: Progress | None,
        act: Callable[[AbstractIncomingMessage, Letter], Any],
        check: Callable[[Letter], None] | None = None,
    ) -> Outcome:
        outcome = Outcome(dry_run=dry_run)
        now = datetime.now(UTC)
        async with self._taken(None) as taken:
            outcome.scanned = len(taken.messages)
            chosen = []
            for message in taken.messages:
                letter = decode(message.message_id, dict(message.headers or {}), message.body)
                if selector.matches(letter, now):
                    chosen.append((message, letter))
            outcome.matched = [letter for _, letter in chosen]
            if check is not None:
                for _, letter in chosen:  # all or nothing: every edit is checked before anything moves
                    check(letter)
            for done, (message, letter) in enumerate(chosen, start=1):
                if not dry_run:
                    await act(message, letter)
                    outcome.moved += 1
                    taken.acked += 1
                if progress is not None:
                    progress(done, len(chosen))
        return outcome
