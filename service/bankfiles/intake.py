"""One path for a bank file, shared by `POST /v1/files/{source}` and `payrelay import`. Pure.

Parse with the source's format and options, turn the credits into events, refuse a file that
names one transaction twice, and say what will be published and what was skipped. Publishing
itself is the caller's (the receiver's publisher, or the CLI's broker): `outgoing` builds the
messages exactly as the ingest endpoint does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from service import events as ev
from service import messages
from service.bankfiles import events as bank_events
from service.bankfiles import formats
from service.bankfiles.model import FileInvalid, Options, Statement
from service.broker import Outgoing


@dataclass(frozen=True, slots=True)
class Intake:
    """A file read: what it is, and its credits as events (file order)."""

    file_id: str
    statement: Statement
    events: tuple[ev.Event, ...]

    def summary(self) -> dict[str, Any]:
        """The `file` object of the answer (SPEC §9)."""
        s = self.statement
        return {
            "id": self.file_id,
            "format": s.format,
            "version": s.version,
            "accounts": s.accounts,
            "entries": s.entries,
        }

    def answer(self, published: int) -> dict[str, Any]:
        """The 202 body: the file, how many events were accepted and published, what was skipped."""
        return {
            "file": self.summary(),
            "accepted": len(self.events),
            "published": published,
            "skipped": [item.as_dict() for item in self.statement.skipped],
            "ids": [event.id for event in self.events],
        }


def read(data: bytes, *, expected: str, options: Options, file_id: str, key: bytes | None) -> Intake:
    """Parse `data` into events; FileRejected (with where and why) when it cannot be taken whole."""
    return read_statement(formats.parse(data, expected, options), file_id=file_id, key=key)


def read_statement(statement: Statement, *, file_id: str, key: bytes | None) -> Intake:
    """A parsed file's credits as events; FileInvalid when two of them are one transaction."""
    events = bank_events.to_events(statement, file_id, key)
    _one_transaction_once(statement, events)
    return Intake(file_id=file_id, statement=statement, events=tuple(events))


def _one_transaction_once(statement: Statement, events: list[ev.Event]) -> None:
    """Two credits of one file with one identity would be recorded as one: refuse the file instead,
    so nobody's payment disappears into another's."""
    first: dict[tuple[str, str], str] = {}
    for credit, event in zip(statement.credits, events, strict=True):
        seen = first.setdefault((event.source, event.id), credit.entry)
        if seen != credit.entry:
            raise FileInvalid(
                credit.entry,
                f"has the same bank reference {event.id!r} as {seen}: the file names "
                "one transaction twice, or its references are not unique",
            )


_CONFIRM_SECONDS_PER_EVENT = 0.002  # a large file's confirms take longer than one event's


def publish_within(timeout: float, count: int) -> float:
    """How long publishing `count` events of a file may wait for confirms: `timeout` and a little
    more per event."""
    return timeout + count * _CONFIRM_SECONDS_PER_EVENT


def outgoing(intake: Intake, origin: str, exchange: str, traceparent: str | None = None) -> list[Outgoing]:
    """The messages that publish the file's events, as the ingest endpoint publishes events."""
    headers: dict[str, Any] = {messages.SOURCE: origin}
    if traceparent:
        headers[messages.TRACEPARENT] = traceparent
    return [
        Outgoing(
            exchange=exchange,
            routing_key=event.type,
            body=orjson.dumps(event.raw),
            message_id=event.id,
            headers=headers,
            type=event.type,
        )
        for event in intake.events
    ]
