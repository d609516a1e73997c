"""What operators do with dead letters (SPEC §6): list, show, preview, replay and purge, audited.

Shared by `payrelay dlq` and the ops app. Letters live in the ledger database (the keeper puts them
there); every look first takes in what still waits in the queue. An action is two steps: a
preview selects letters, and the action takes exactly the letter ids previewed, so what a person
confirmed is what moves, even if more letters arrived meanwhile. A replay publishes each batch to
the work queue with confirms, then marks those letters replayed with the batch's audit row in
one transaction: a crash in between leaves a letter that a second replay sends again, which
the ledger makes harmless (the payment is recorded once), never one that is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

import orjson

from service.broker import BrokerUnavailable, Outgoing, Publisher
from service.dead_letter_queue import Keeper
from service.dead_letters import EditError, Filter, Letter, Outcome, apply_edits, check_edits, replay_headers
from service.ledger import Ledger
from service.ledger.letters import Stored
from service.topology import Topology

Progress = Callable[[int, int], None]
BATCH = 100  # letters per publish, settle and audit row


class DeadLetterStore:
    """Dead letters of one prefix, kept in `ledger`, replayed through `publisher`."""

    def __init__(self, keeper: Keeper, publisher: Publisher, topology: Topology, ledger: Ledger) -> None:
        self.keeper = keeper
        self.publisher = publisher
        self.topology = topology
        self.ledger = ledger
        self.table = keeper.table

    async def _fresh(self) -> None:
        """Take in what waits in the queue; without the broker the table is still the truth."""
        with contextlib.suppress(BrokerUnavailable):
            await self.keeper.take_in()

    async def browse(self, selection: Filter | None = None, limit: int | None = 1000) -> list[Letter]:
        """Waiting letters matching `selection` (all when None), oldest first; nothing changes."""
        await self._fresh()
        return await self.table.select(selection, now=datetime.now(UTC), limit=limit)

    async def show(self, wanted: str) -> list[Letter]:
        """The letter with this letter id, or every letter of this event id, in any state."""
        await self._fresh()
        states = ("dead", "replayed", "purged")
        return await self.table.select(Filter(ids=(wanted,)), now=datetime.now(UTC), states=states)

    async def count(self) -> int:
        await self._fresh()
        return await self.keeper.count()

    async def preview(self, selection: Filter, *, edits: dict[str, str] | None = None) -> Outcome:
        """The letters an action on `selection` would take; with `edits`, each one checked first.

        Raises EditError when an edit cannot apply to one of them, or the event is recorded already.
        """
        await self._fresh()
        matched = await self.table.select(selection, now=datetime.now(UTC))
        if edits:
            for letter in matched:
                check_edits(letter, edits)
            await self._not_recorded(matched)
        return Outcome(matched=matched, scanned=await self.keeper.count(), dry_run=True)

    async def _not_recorded(self, letters: Sequence[Letter]) -> None:
        """An edit changes nothing on an event the ledger has recorded: say so instead of dropping it."""
        for letter in letters:
            recorded = [
                e
                for e in await self.ledger.find(event_id=letter.event_id)
                if e.state == "recorded" and e.key[0] == letter.origin and e.key[1] == letter.source
            ]
            if recorded:
                raise EditError(
                    f"{letter.id}: event {letter.event_id!r} is already recorded on "
                    f"{', '.join(sorted({e.invoice_id or '?' for e in recorded}))}; an edit would not "
                    "apply (replay it without --set, or purge it)"
                )

    async def replay(
        self,
        ids: Sequence[str],
        *,
        actor: str,
        selector: str,
        edits: dict[str, str] | None = None,
        rate: float | None = None,
        progress: Progress | None = None,
    ) -> Outcome:
        """Move exactly these letters (their letter ids, as previewed) back to the work queue."""
        stored = await self.table.stored(ids)
        if edits:  # all or nothing: every edit is checked before the first letter moves
            for item in stored:
                check_edits(item.letter, edits)
            await self._not_recorded([item.letter for item in stored])
        outcome = self._begun(ids, stored)
        interval = 1.0 / rate if rate else 0.0
        details = {"edits": edits or {}}
        for start in range(0, len(stored), BATCH):
            batch = stored[start : start + BATCH]
            if interval:  # throttled: one at a time
                for item in batch:
                    await self.publisher.publish([self._copy(item, actor, edits)])
                    await asyncio.sleep(interval)
            else:
                await self.publisher.publish([self._copy(item, actor, edits) for item in batch])
            settled = await self.table.settle(
                [item.number for item in batch],
                "replayed",
                actor=actor,
                action="edit-replay" if edits else "replay",
                selector=selector,
                details=details | {"event_ids": [item.letter.event_id for item in batch]},
                now=datetime.now(UTC),
            )
            self._advance(outcome, batch, settled, progress)
        return outcome

    async def purge(
        self, ids: Sequence[str], *, actor: str, selector: str, progress: Progress | None = None
    ) -> Outcome:
        """Mark exactly these letters purged (the body is kept for the retention period)."""
        stored = await self.table.stored(ids)
        outcome = self._begun(ids, stored)
        for start in range(0, len(stored), BATCH):
            batch = stored[start : start + BATCH]
            settled = await self.table.settle(
                [item.number for item in batch],
                "purged",
                actor=actor,
                action="purge",
                selector=selector,
                details={"event_ids": [item.letter.event_id for item in batch]},
                now=datetime.now(UTC),
            )
            self._advance(outcome, batch, settled, progress)
        return outcome

    def _begun(self, ids: Sequence[str], stored: list[Stored]) -> Outcome:
        found = {item.letter.id for item in stored}
        return Outcome(
            matched=[item.letter for item in stored],
            scanned=len(ids),
            skipped=[i for i in ids if i not in found],
        )

    @staticmethod
    def _advance(
        outcome: Outcome, batch: list[Stored], settled: list[int], progress: Progress | None
    ) -> None:
        done = set(settled)
        outcome.moved += len(done)
        outcome.skipped += [item.letter.id for item in batch if item.number not in done]
        if progress is not None:
            progress(outcome.moved + len(outcome.skipped), len(outcome.matched))

    def _copy(self, item: Stored, actor: str, edits: dict[str, str] | None) -> Outgoing:
        body = item.body
        if edits and item.letter.event is not None:
            body = orjson.dumps(apply_edits(item.letter.event, edits))
        headers = replay_headers(
            item.headers, actor=actor, at=datetime.now(UTC), edits=edits, original=item.body
        )
        return Outgoing(
            exchange="",
            routing_key=self.topology.work_queue,
            body=body,
            message_id=item.letter.event_id,
            headers=headers,
            content_type=item.content_type or "application/cloudevents+json",
            type=item.message_type,
        )
