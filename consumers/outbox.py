"""Confirmations are never lost: published after the ledger says recorded, or later by a drainer.

The ledger stores each recorded payment's confirmations with it (SPEC §4 "Confirmations are
never lost"). The worker publishes them at once and marks them confirmed; if the broker refuses
them for a while, the message is still acknowledged (the payment is recorded: redelivering it
would only spend the work queue's delivery limit), and `drain_forever` publishes what the ledger
still holds unconfirmed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from consumers import confirmations
from service.broker import Broker, BrokerUnavailable, Outgoing
from service.ledger import EventKey, Ledger
from service.metrics import Metrics

log = logging.getLogger("payrelay.consumer")

DRAIN_EVERY_SECONDS = 5.0
# The worker normally confirms within milliseconds; a payment unconfirmed this long is the drainer's.
STUCK_AFTER_SECONDS = 30.0


class Outbox:
    def __init__(self, broker: Broker, ledger: Ledger, metrics: Metrics) -> None:
        self.broker = broker
        self.ledger = ledger
        self.metrics = metrics
        self.exchange = broker.topology.confirmations

    async def send(self, key: EventKey, recorded: list[tuple[str, bytes]], headers: dict[str, Any]) -> bool:
        """Publish the confirmations of recorded parts and mark them; False if they stay in the outbox."""
        if not recorded:
            return True
        outgoing: list[Outgoing] = []
        for _, stored in recorded:
            outgoing += confirmations.outgoing(self.exchange, stored, headers)
        try:
            await self.broker.publish(outgoing)
        except BrokerUnavailable as exc:
            log.warning("confirmations of %r wait in the outbox: %s", key[2], exc)
            return False
        try:
            for part, _ in recorded:
                await self.ledger.mark_confirmed(key, part)
        except Exception as exc:  # the drainer will publish them again: a duplicate, never a loss
            log.warning("could not mark the confirmations of %r sent: %s", key[2], type(exc).__name__)
        return True

    async def drain(self, older_than: float = STUCK_AFTER_SECONDS) -> int:
        """Publish every confirmation still unconfirmed after `older_than` seconds; returns how many."""
        waiting = await self.ledger.unconfirmed(older_than=older_than)
        self.metrics.confirmations_pending.set(len(waiting))
        sent = 0
        for item in waiting:
            if not await self.send(item.key, [(item.part, item.confirmation)], {}):
                break  # the broker is still away: the rest waits for the next round
            sent += 1
        if sent:
            log.info("published the confirmations of %d recorded payment(s) from the outbox", sent)
            self.metrics.confirmations_pending.set(len(waiting) - sent)
        return sent

    async def drain_forever(self, every: float = DRAIN_EVERY_SECONDS) -> None:
        while True:
            await asyncio.sleep(every)
            try:
                await self.drain()
            except Exception:
                log.exception("draining the confirmations outbox failed")
