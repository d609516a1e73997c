"""The dead-letter browser: list with filters, detail, and replay / edit-and-replay / purge actions.

Actions post a form to `/dead-letters/action`. A dry run, and any purge, first answer with a
preview of exactly what would be touched and a form to confirm it; a confirmed action redirects
(303) back to the list, which says what was done. The view models only these pages use (the
detail, the bulk form, the preview) are here; the rows they share with other pages in `views.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from pydantic import ValidationError
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.dead_letters import EDITABLE, SELECTORS, EditError, Filter, Letter, Outcome, chargebee_figures
from service.events import FILE_ATTRIBUTES, attribute_text
from service.messages import DEAD_LETTER_REASONS
from service.ops import views
from service.ops.api import query_filter
from service.ops.auth import Operator
from service.ops.layout import Form, Layout, first, read_form
from service.ops.operations import DEFAULT_LIST_LIMIT, BadRequest, Ops, PurgeRequest, ReplayRequest
from service.ops.views import Cell, LetterRow

EVENT_TYPES = (("", "Any"), ("bank.deposit", "bank.deposit"), ("check.scan", "check.scan"))
REASONS = (("", "Any"), *((reason, reason) for reason in DEAD_LETTER_REASONS))


@dataclass(frozen=True, slots=True)
class Option:
    """One choice of a `<select>`."""

    value: str
    label: str
    selected: bool = False


def options(values: Iterable[tuple[str, str]], selected: str | None) -> list[Option]:
    return [Option(value, label, value == selected) for value, label in values]


@dataclass(frozen=True, slots=True)
class Fact:
    label: str
    value: Cell


@dataclass(frozen=True, slots=True)
class LetterDetail:
    """One dead letter's page: its facts, the edit form's choices, the event and headers as text."""

    id: str
    reason: str
    error: str
    facts: tuple[Fact, ...]
    fields: tuple[Option, ...]
    edit_value: str
    chargebee_error: str | None
    event: str
    headers: tuple[tuple[str, str], ...]  # (name, value), sorted by name


@dataclass(frozen=True, slots=True)
class Bulk:
    """The list's form acting on every match: the filter it carries as (name, value), its scope."""

    fields: tuple[tuple[str, str], ...]
    scope: str


@dataclass(frozen=True, slots=True)
class Preview:
    """A dry run, or a purge to confirm: what it touches, and the fields that confirm exactly that."""

    kind: str  # "replay" or "purge"
    rows: list[LetterRow]
    keep: tuple[tuple[str, str], ...]
    edit: tuple[str, str] | None  # (field, new value) of an edit-and-replay
    work_queue: str

    @property
    def count(self) -> str:
        return f"{len(self.rows)} {views.dead_letters_noun(len(self.rows))}"

    @property
    def heading(self) -> str:
        if self.kind == "replay":
            return f"Dry run: replay would move {self.count}"
        return f"Purge {self.count}?"


def facts(letter: Letter) -> tuple[Fact, ...]:
    return (
        Fact("Event id", views.text(letter.event_id)),
        Fact("State", views.text(letter.state)),
        Fact("Reason", views.text(letter.reason)),
        Fact("Attempts", views.text(letter.attempts)),
        Fact("Failed at", views.when(letter.failed_at)),
        Fact("Origin (configured source)", views.text(letter.origin)),
        Fact("CloudEvent source", views.text(letter.source)),
        Fact("Type", views.text(letter.type)),
        Fact("Invoice", views.lookup_link(letter.invoice_id)),
        Fact("Amount", views.text(views.amount(letter))),
        Fact("Earlier replays", views.text(letter.summary()["replays"])),
        Fact("Story", views.lookup_link(letter.event_id)),
        *file_facts(letter.event),
    )


def file_facts(event: dict[str, Any] | None) -> tuple[Fact, ...]:
    """Where in a bank file the event came from (SPEC §9), the file a link to its every payment;
    nothing for an event that names no file."""
    file_id, file_format, entry = (attribute_text(event or {}, name) for name in FILE_ATTRIBUTES)
    if file_id is None:
        return ()
    return (
        Fact("Bank file", views.lookup_link(file_id)),
        Fact("File format", views.text(file_format)),
        Fact("Entry in the file", views.text(entry)),
    )


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def header_rows(headers: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    """(name, value) sorted by name; a value that is not text is shown as JSON."""
    return tuple(
        (name, value if isinstance(value, str) else orjson.dumps(value).decode())
        for name, value in sorted(headers.items())
    )


def letter_detail(letter: Letter) -> LetterDetail:
    return LetterDetail(
        id=letter.id,
        reason=letter.reason,
        error=chargebee_figures(letter.error, letter.currency),
        facts=facts(letter),
        fields=tuple(options(((f, f) for f in EDITABLE), "invoice_id")),
        edit_value=letter.invoice_id or "",
        chargebee_error=None if letter.chargebee_error is None else pretty(letter.chargebee_error),
        event=pretty(letter.event) if letter.event is not None else letter.body,
        headers=header_rows(letter.detail()["headers"]),
    )


def bulk(params: QueryParams, selector: Filter | None) -> Bulk:
    """The filter as hidden fields; with no filter at all, an explicit `all`."""
    fields = [(f, params[f]) for f in SELECTORS if params.get(f)]
    if selector is None:
        fields.append(("all", "1"))
    scope = "all dead letters" if selector is None else "all dead letters matching the filter"
    return Bulk(tuple(fields), scope)


def notice(done: str | None, n: str | None) -> str:
    """What the list says after a confirmed action redirected to it; "" when nothing was done."""
    if done not in ("replayed", "purged") or not (n or "").isdigit():
        return ""
    moved = int(n or 0)
    where = " to the work queue" if done == "replayed" else ""
    return f"{done.capitalize()} {moved} {views.dead_letters_noun(moved)}{where}."


def came_from(form: Form) -> str:
    """The page an action was posted from: one letter's page, or the list with its filter."""
    ids = [i for i in form.get("ids", []) if i]
    if len(ids) == 1:
        return views.detail_href(ids[0])
    filters = [(f, first(form, f)) for f in SELECTORS if first(form, f)]
    return f"/dead-letters?{urlencode(filters)}" if filters else "/dead-letters"


def kept_fields(form: Form, outcome: Outcome, edits: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The letters previewed, by their own ids (and the edit): confirming acts on exactly those."""
    keep = [("ids", letter.id) for letter in outcome.matched]
    if edits:
        keep += [("field", first(form, "field")), ("value", (form.get("value") or [""])[0])]
    return tuple(keep)


class DeadLetterPages:
    def __init__(self, ops: Ops, layout: Layout) -> None:
        self.ops = ops
        self.layout = layout

    async def index(self, request: Request) -> Response:
        params = request.query_params
        try:
            selector = query_filter(params)
            raw_limit = params.get("limit") or str(DEFAULT_LIST_LIMIT)
            if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
                raise BadRequest("show at most 1 to 1000 dead letters")
            limit = int(raw_limit)
        except BadRequest as exc:
            return self.layout.message(request, 422, "Invalid filter", str(exc))
        letters = await self.ops.list_dead_letters(selector, limit)
        return self.layout.page(
            request,
            "dead_letters.html",
            notice=notice(params.get("done"), params.get("n")),
            filters={f: params.get(f, "") for f in SELECTORS},
            reasons=options(REASONS, params.get("reason")),
            types=options(EVENT_TYPES, params.get("type")),
            limit=limit,
            rows=views.letter_rows(letters),
            in_queue=await self.ops.letters.count(),
            bulk=bulk(params, selector),
        )

    async def detail(self, request: Request) -> Response:
        letter = await self.ops.dead_letter(request.path_params["id"])
        if letter is None:
            return self.layout.message(
                request, 404, "Not found", "No dead letter has this id (it may have been replayed)."
            )
        return self.layout.page(request, "dead_letter.html", letter=letter_detail(letter))

    async def action(self, request: Request) -> Response:
        operator: Operator = request.state.operator
        back = "/dead-letters"  # where a refusal's page leads: to what the action came from
        try:
            form = await read_form(request)
            back = came_from(form)
            kind, mode = first(form, "action"), first(form, "mode")
            selection: dict[str, Any] = {f: first(form, f) or None for f in SELECTORS}
            selection["ids"] = [i for i in form.get("ids", []) if i]
            selection["all"] = first(form, "all") == "1"
            if kind == "replay":
                field = first(form, "field")
                edits = {field: (form.get("value") or [""])[0]} if field else {}
                replay = ReplayRequest.model_validate({**selection, "set": edits, "dry_run": mode != "run"})
                outcome = await self.ops.replay(replay, operator.actor)
                if outcome.dry_run:
                    return self._preview(request, "replay", form, outcome, edits)
                return _done("replayed", outcome.moved)
            if kind == "purge":
                confirmed = mode == "run" and first(form, "confirm") == "yes"
                purge = PurgeRequest.model_validate(
                    {**selection, "confirm": confirmed, "dry_run": not confirmed}
                )
                outcome = await self.ops.purge(purge, operator.actor)
                if outcome.dry_run:
                    return self._preview(request, "purge", form, outcome, {})
                return _done("purged", outcome.moved)
            return self.layout.message(request, 400, "Unknown action", "Choose replay or purge.")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            return self.layout.message(request, 422, "Nothing was changed", problems, back)
        except (EditError, BadRequest) as exc:
            return self.layout.message(request, 422, "Nothing was changed", str(exc), back)

    def _preview(
        self, request: Request, kind: str, form: Form, outcome: Outcome, edits: dict[str, str]
    ) -> Response:
        preview = Preview(
            kind=kind,
            rows=views.letter_rows(outcome.matched),
            keep=kept_fields(form, outcome, edits),
            edit=next(iter(edits.items()), None),
            work_queue=self.ops.topology.work_queue,
        )
        return self.layout.page(request, "preview.html", preview=preview)


def _done(what: str, n: int) -> Response:
    return RedirectResponse(f"/dead-letters?{urlencode({'done': what, 'n': n})}", status_code=303)
