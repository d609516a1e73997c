"""The dead-letter keeper: moves each letter from `payrelay.dead-letter` into the ledger database.

RabbitMQ cannot browse a queue, so payrelay does not try: the queue only carries letters to the
keeper, which stores each one durably (`ledger.letters.keep`, one transaction per batch) and only
then acks it. A crash between the two leaves the letter in the queue, and taking it in again
stores nothing new (the digest). While the database is unreachable the keeper pauses and the
letters wait in the queue, where the at-least-once dead-lettering put them.

The consumer process keeps letters continuously (`keep_forever`); every `dlq` command and the ops
app take in what waits before they look (`take_in`), so a letter is visible wherever one looks.
Letters already in the queue when this version first starts are taken in the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import aiormq
from aio_pika.abc import AbstractIncomingMessage, AbstractQueue

from service.broker import Broker, BrokerUnavailable
from service.ledger import Ledger
from service.ledger.letters import Incoming
from service.metrics import Metrics
from service.topology import Topology

log = logging.getLogger("payrelay.dead_letters")

BATCH = 100  # letters stored per transaction
POLL_SECONDS = 1.0  # how soon a new dead letter reaches the table
PAUSE_SECONDS = (1.0, 30.0)  # the pause after a database failure: first, longest


class Keeper:
    """Takes dead letters off the queue into the ledger; over a broker connection the caller runs."""

    def __init__(self, broker: Broker, topology: Topology, ledger: Ledger, metrics: Metrics | None = None):
        self.broker = broker
        self.topology = topology
        self.ledger = ledger
        self.table = ledger.letters(topology.dead_letter)
        self.metrics = metrics
        self._lock = asyncio.Lock()  # one take at a time per process: each stores what it took

    async def take_in(self, limit: int | None = None) -> int:
        """Store what waits in the queue now (up to `limit`), then ack it; returns how many were taken.

        Raises BrokerUnavailable without a connection, and whatever the database raises: the
        letters not stored go back to the queue, in order, when the channel closes.
        """
        connection = self.broker.connection
        if connection is None or connection.is_closed:
            raise BrokerUnavailable("no connection to the broker")
        taken = 0
        async with self._lock:
            channel = await connection.channel()
            try:
                queue = await channel.get_queue(self.topology.dead_letter, ensure=False)
                while limit is None or taken < limit:
                    batch = await _take(queue, BATCH if limit is None else min(BATCH, limit - taken))
                    if not batch:
                        break
                    await self.table.keep([_incoming(m) for m in batch], datetime.now(UTC))
                    await batch[-1].ack(multiple=True)  # only once the batch is committed
                    taken += len(batch)
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
        if taken:
            log.info("kept %d dead letter(s) in the ledger", taken)
        return taken

    async def count(self) -> int:
        """The letters waiting for an operator; kept in the `payrelay_dead_letters_waiting` gauge."""
        waiting = await self.table.count()
        if self.metrics is not None:
            self.metrics.dead_letters_waiting.set(waiting)
        return waiting

    async def keep_forever(self) -> None:
        """The consumer's loop: take in what arrives; pause (letters wait) while the database fails."""
        pause = PAUSE_SECONDS[0]
        while True:
            try:
                if self.broker.ready:
                    await self.take_in()
                    await self.count()  # operators' replays and purges lower it too
                pause = PAUSE_SECONDS[0]
            except asyncio.CancelledError:
                raise
            except (BrokerUnavailable, aiormq.exceptions.AMQPError, ConnectionError):
                pass  # the broker's supervisor reconnects; try again on the next round
            except Exception as exc:  # the database: its drivers raise many kinds
                log.warning(
                    "dead-letter keeper paused for %.0fs: the ledger database failed (%s); "
                    "the letters wait in the queue",
                    pause,
                    type(exc).__name__,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, PAUSE_SECONDS[1])
                continue
            await asyncio.sleep(POLL_SECONDS)


async def _take(queue: AbstractQueue, count: int) -> list[AbstractIncomingMessage]:
    got: list[AbstractIncomingMessage] = []
    for _ in range(count):
        message = await queue.get(fail=False, no_ack=False)
        if message is None:
            break
        got.append(message)
    return got


def _incoming(message: AbstractIncomingMessage) -> Incoming:
    return Incoming(
        message_id=message.message_id,
        headers=dict(message.headers or {}),
        body=message.body,
        content_type=message.content_type,
        message_type=message.type,
    )
