"""The dead-letter browser: list with filters, detail, and replay / edit-and-replay / purge actions.

Actions post a form to `/dead-letters/action`. A dry run, and any purge, first answer with a
preview of exactly what would be touched and a form to confirm it; a confirmed action redirects
(303) back to the list, which says what was done.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service.dead_letters import EDITABLE, EditError, Filter, Outcome
from service.messages import DEAD_LETTER_REASONS
from service.ops import views
from service.ops.api import query_filter
from service.ops.auth import Operator
from service.ops.layout import Form, Layout, first, read_form
from service.ops.operations import DEFAULT_LIST_LIMIT, BadRequest, Ops, PurgeRequest, ReplayRequest
from service.ops.templating import Html, join, tag

REASONS = DEAD_LETTER_REASONS
SELECTOR_FIELDS = ("reason", "source", "type", "invoice", "older_than", "newer_than")


class DeadLetterPages:
    def __init__(self, ops: Ops, layout: Layout) -> None:
        self.ops = ops
        self.layout = layout
        self.templates = layout.templates

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
        in_queue = await self.ops.dead_letters().count()
        operator: Operator = request.state.operator
        main = self.templates.render(
            "dead_letters",
            notice=_notice(params.get("done"), params.get("n")),
            reason=params.get("reason", ""),
            reason_options=join(tag("option", value=r) for r in REASONS),
            source=params.get("source", ""),
            type_options=views.options(
                [("", "Any"), ("bank.deposit", "bank.deposit"), ("check.scan", "check.scan")],
                params.get("type"),
            ),
            invoice=params.get("invoice", ""),
            older_than=params.get("older_than", ""),
            newer_than=params.get("newer_than", ""),
            limit=limit,
            count_text=f"{len(letters)} shown; {in_queue} in the dead-letter queue.",
            table=views.dead_letter_table(letters, "Dead letters, oldest first"),
            bulk=self._bulk(params, selector, operator) if letters else "",
        )
        return self.layout.page(request, "Dead letters", main)

    def _bulk(self, params: Any, selector: Filter | None, operator: Operator) -> Html:
        fields = [views.hidden("csrf", operator.csrf or "")]
        fields += [views.hidden(f, params[f]) for f in SELECTOR_FIELDS if params.get(f)]
        if selector is None:
            fields.append(views.hidden("all", "1"))
        scope = "all dead letters" if selector is None else "all dead letters matching the filter"
        buttons = [
            tag("button", f"Replay {scope}…", type="submit", name="action", value="replay"),
            tag("button", f"Purge {scope}…", type="submit", name="action", value="purge", class_="danger"),
        ]
        body = join(
            [
                tag("h2", "Act on every match", id="bulk-heading"),
                tag("p", "Each shows what it would touch and asks you to confirm first.", class_="help"),
                *fields,
                views.hidden("mode", "preview"),
                tag("div", join(buttons), class_="button-row"),
            ]
        )
        return tag(
            "form",
            body,
            method="post",
            action="/dead-letters/action",
            class_="bulk",
            aria_labelledby="bulk-heading",
        )

    async def detail(self, request: Request) -> Response:
        letter = await self.ops.dead_letter(request.path_params["id"])
        if letter is None:
            return self.layout.message(
                request, 404, "Not found", "No dead letter has this id (it may have been replayed)."
            )
        operator: Operator = request.state.operator
        chargebee = ""
        if letter.chargebee_error is not None:
            chargebee = join(
                [
                    tag("h2", "Chargebee error", id="chargebee-heading"),
                    tag("pre", views.pretty(letter.chargebee_error), class_="code", tabindex="0"),
                ]
            )
            chargebee = tag("section", chargebee, aria_labelledby="chargebee-heading")
        main = self.templates.render(
            "dead_letter",
            id=letter.id,
            reason=letter.reason,
            error=letter.error,
            facts=views.facts(letter),
            csrf=operator.csrf or "",
            field_options=views.options(((f, f) for f in EDITABLE), "invoice_id"),
            edit_value=letter.invoice_id or "",
            chargebee=chargebee,
            event=views.pretty(letter.event) if letter.event is not None else letter.body,
            headers=views.header_rows(letter.detail()["headers"]),
        )
        return self.layout.page(request, f"Dead letter {letter.id}", main)

    async def action(self, request: Request) -> Response:
        operator: Operator = request.state.operator
        try:
            form = await read_form(request)
            kind, mode = first(form, "action"), first(form, "mode")
            selection: dict[str, Any] = {f: first(form, f) or None for f in SELECTOR_FIELDS}
            selection["ids"] = [i for i in form.get("ids", []) if i]
            selection["all"] = first(form, "all") == "1"
            if kind == "replay":
                field = first(form, "field")
                edits = {field: (form.get("value") or [""])[0]} if field else {}
                replay = ReplayRequest.model_validate({**selection, "set": edits, "dry_run": mode != "run"})
                outcome = await self.ops.replay(replay, operator.actor)
                if outcome.dry_run:
                    return self._preview(request, operator, "replay", form, outcome, edits)
                return _done("replayed", outcome.moved)
            if kind == "purge":
                confirmed = mode == "run" and first(form, "confirm") == "yes"
                purge = PurgeRequest.model_validate(
                    {**selection, "confirm": confirmed, "dry_run": not confirmed}
                )
                outcome = await self.ops.purge(purge, operator.actor)
                if outcome.dry_run:
                    return self._preview(request, operator, "purge", form, outcome, {})
                return _done("purged", outcome.moved)
            return self.layout.message(request, 400, "Unknown action", "Choose replay or purge.")
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                for e in exc.errors(include_input=False, include_url=False)
            )
            return self.layout.message(request, 422, "Nothing was changed", problems)
        except (EditError, BadRequest) as exc:
            return self.layout.message(request, 422, "Nothing was changed", str(exc))

    def _preview(
        self,
        request: Request,
        operator: Operator,
        kind: str,
        form: Form,
        outcome: Outcome,
        edits: dict[str, str],
    ) -> Response:
        n = len(outcome.matched)
        noun = "dead letter" if n == 1 else "dead letters"
        keep = [
            views.hidden("csrf", operator.csrf or ""),
            views.hidden("action", kind),
            views.hidden("mode", "run"),
        ]
        keep += [
            views.hidden(f, first(form, f)) for f in (*SELECTOR_FIELDS, "all", "field") if first(form, f)
        ]
        keep += [views.hidden("ids", i) for i in form.get("ids", []) if i]
        if edits:
            keep.append(views.hidden("value", (form.get("value") or [""])[0]))
        if kind == "replay":
            heading = f"Dry run: replay would move {n} {noun}"
            explanation = (
                f"Nothing has moved yet. Confirm to republish them to {self.ops.topology.work_queue}"
                " with a fresh attempt count; each leaves the dead-letter queue only once the broker has it."
            )
            button = tag("button", f"Replay {n} {noun}", type="submit", class_="primary")
            confirm = join(keep + [button])
        else:
            heading = f"Purge {n} {noun}?"
            explanation = "Purged messages are deleted for good; the purge is recorded in the audit."
            check = Html(
                '<div class="check"><input type="checkbox" id="confirm" name="confirm" value="yes" required>'
                f'<label for="confirm">I understand that {n} {noun} will be deleted permanently</label></div>'
            )
            button = tag("button", f"Purge {n} {noun}", type="submit", class_="danger")
            confirm = join(keep + [check, button])
        edit_note = ""
        if edits:
            field, value = next(iter(edits.items()))
            edit_note = tag(
                "p", join(["Edit: ", tag("code", f"data.{field}"), " becomes ", tag("code", value)])
            )
        main = self.templates.render(
            "preview",
            heading=heading,
            explanation=explanation,
            edits=edit_note,
            table=views.dead_letter_table(outcome.matched, "Dead letters this action touches"),
            confirm=tag("form", confirm, method="post", action="/dead-letters/action", class_="stack confirm")
            if n
            else tag("p", join([tag("a", "Back to the dead letters", href="/dead-letters")])),
        )
        return self.layout.page(request, heading, main)


def _done(what: str, n: int) -> Response:
    return RedirectResponse(f"/dead-letters?{urlencode({'done': what, 'n': n})}", status_code=303)


def _notice(done: str | None, n: str | None) -> Html | str:
    if done not in ("replayed", "purged") or not (n or "").isdigit():
        return Html('<p class="notice" role="status" id="notice"></p>')
    count = int(n or 0)
    noun = "dead letter" if count == 1 else "dead letters"
    where = " to the work queue" if done == "replayed" else ""
    return tag(
        "p", f"{done.capitalize()} {count} {noun}{where}.", class_="notice shown", role="status", id="notice"
    )
