"""View models of the lookup page (a payment's story, now and before) and of the audit page.

Pure functions of what `Ops.lookup` and the audit return, formatted with `views`' helpers; the
ledger entries arrive as `Entry.as_dict()` gives them, so the page shows what the JSON API says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

from service.ops.operations import Story
from service.ops.views import DASH, Badge, Cell, LetterRow, letter_rows, lookup_link, short, state_badge, when


@dataclass(frozen=True, slots=True)
class FileStory:
    """A bank file's facts of a payment: the file (a link listing its every payment), format, entry."""

    file: Cell
    format: str
    entry: str


def file_story(file: dict[str, Any] | None) -> FileStory | None:
    """`Entry.as_dict()["file"]` as shown; None for a payment that came from no file."""
    if not file:
        return None
    return FileStory(lookup_link(file.get("id")), file.get("format") or DASH, file.get("entry") or DASH)


@dataclass(frozen=True, slots=True)
class EntryRow:
    """A payment as the ledger has it now; a recorded one shows no reason or error (see `Earlier`)."""

    updated: Cell
    event_id: str
    origin: str
    state: Badge
    invoice: Cell
    attempts: int
    transaction: str
    reason: str
    last_error: str
    reference: Cell  # the payment's reference number, a link to every payment carrying it
    file: FileStory | None  # where in a bank file the payment came from


@dataclass(frozen=True, slots=True)
class Earlier:
    """A failure a payment had before Chargebee recorded it (the ledger keeps the last one)."""

    event_id: str
    invoice: str
    reason: str
    error: str


@dataclass(frozen=True, slots=True)
class AuditRow:
    at: Cell
    actor: str
    action: str
    selector: str
    count: int
    details: str


@dataclass(frozen=True, slots=True)
class Lookup:
    """An event's story, the current state first, then its history.

    Current: the ledger's entries and the dead letters still waiting. History: the failures of
    payments since recorded, the dead letters replayed or purged, and the audit. The letter lists
    are None when the letters could not be read.
    """

    entries: list[EntryRow]
    waiting: list[LetterRow] | None
    earlier: list[Earlier]
    settled: list[LetterRow] | None  # replayed or purged
    audit: list[AuditRow]


def lookup(story: Story) -> Lookup:
    entries = [e.as_dict() for e in story.entries]
    letters = story.dead_letters
    return Lookup(
        entries=entry_rows(entries),
        waiting=None if letters is None else letter_rows(d for d in letters if d.state == "dead"),
        earlier=earlier_failures(entries),
        settled=None if letters is None else letter_rows(d for d in letters if d.state != "dead"),
        audit=audit_rows(r.as_dict() for r in story.audit),
    )


def entry_rows(entries: Iterable[dict[str, Any]]) -> list[EntryRow]:
    """Ledger entries (as `Entry.as_dict()` gives them) as they stand now, for the lookup page."""
    rows = []
    for e in entries:
        now = e["state"] != "recorded"  # a recorded entry's reason and error are history
        rows.append(
            EntryRow(
                updated=when(e["updated_at"]),
                event_id=e["event_id"],
                origin=e["origin"],
                state=state_badge(e["state"]),
                invoice=lookup_link(e.get("invoice_id")),
                attempts=e["attempts"],
                transaction=e.get("transaction_id") or DASH,
                reason=(e.get("reason") if now else None) or DASH,
                last_error=short((e.get("last_error") if now else None) or DASH, 120),
                reference=lookup_link(e.get("reference_number")),
                file=file_story(e.get("file")),
            )
        )
    return rows


def earlier_failures(entries: Iterable[dict[str, Any]]) -> list[Earlier]:
    """What recorded entries failed with before they were recorded (their reason and error stay)."""
    return [
        Earlier(
            event_id=e["event_id"],
            invoice=e.get("invoice_id") or DASH,
            reason=e.get("reason") or DASH,
            error=short(e.get("last_error") or DASH, 120),
        )
        for e in entries
        if e["state"] == "recorded" and (e.get("reason") or e.get("last_error"))
    ]


def audit_rows(records: Iterable[dict[str, Any]]) -> list[AuditRow]:
    """Audit records (as `AuditRecord.as_dict()` gives them), their details as one line of JSON."""
    return [
        AuditRow(
            at=when(r["at"]),
            actor=r["actor"],
            action=r["action"],
            selector=r["selector"],
            count=r["count"],
            details=short(orjson.dumps(r["details"]).decode(), 200),
        )
        for r in records
    ]
