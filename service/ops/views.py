"""HTML fragments for the ops pages: rows, tables, facts. Pure functions of data to `Html`.

Formatting here is mirrored by `static/ops.js`, which redraws the dashboard from `/api/overview`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from service.dead_letters import Letter
from service.ops.templating import Html, escape, join, tag
from service.queue_stats import QueueStat

DASH = "—"
LEDGER_STATES = (
    ("recorded", "Recorded"),
    ("failed", "Failed, retrying"),
    ("dead_lettered", "Dead-lettered"),
    ("in_progress", "In progress"),
)
STATE_TONE = {"recorded": "good", "failed": "warn", "dead_lettered": "bad", "in_progress": "info"}


def count(value: int | None) -> str:
    return DASH if value is None else str(value)


def rate(value: float | None) -> str:
    return DASH if value is None else f"{value:.1f}"


def percent(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.1f}%"


def when(value: str | None) -> Html:
    """An RFC 3339 time as `<time>`, shown to the second in UTC."""
    if not value:
        return Html(DASH)
    shown = value.replace("T", " ")[:19] + " UTC"
    return tag("time", shown, datetime=value)


def dom_key(queue: str, prefix: str) -> str:
    """A queue name as an id fragment: `p.retry.5s` -> `retry-5s`."""
    return queue.removeprefix(prefix + ".").replace(".", "-")


def queue_row(name: str, stat: QueueStat | None, label: str, prefix: str) -> Html:
    """One queue's row; every figure cell carries `data-queue`/`data-field` for the live refresh."""
    key = dom_key(name, prefix)
    cells = [tag("th", join([label, " ", tag("span", name, class_="qname")]), scope="row")]
    values = {
        "ready": count(stat.ready if stat else None),
        "unacked": count(stat.unacked if stat else None),
        "consumers": count(stat.consumers if stat else None),
        "publish_rate": rate(stat.publish_rate if stat else None),
        "deliver_rate": rate(stat.deliver_rate if stat else None),
    }
    for field, shown in values.items():
        cells.append(tag("td", shown, class_="num", id=f"q-{key}-{field}", data_queue=name, data_field=field))
    return tag("tr", join(cells), data_queue_row=name)


def ledger_counts(counts: dict[str, int]) -> Html:
    items = [
        tag("div", join([tag("dt", label), tag("dd", counts.get(state, 0), data_count=state)]))
        for state, label in LEDGER_STATES
    ]
    return join(items, "\n")


def state_badge(state: str) -> Html:
    return tag("span", state.replace("_", " "), class_=f"badge {STATE_TONE.get(state, 'info')}")


def lookup_link(value: str | None) -> Html:
    if not value:
        return Html(DASH)
    return tag("a", value, href=f"/lookup?{urlencode({'q': value})}")


def recent_row(entry: dict[str, Any]) -> Html:
    detail = entry.get("transaction_id") or entry.get("reason") or entry.get("last_error") or ""
    return tag(
        "tr",
        join(
            [
                tag("td", when(entry["updated_at"])),
                tag("td", lookup_link(entry["event_id"]), class_="mono"),
                tag("td", entry["origin"]),
                tag("td", lookup_link(entry.get("invoice_id"))),
                tag("td", state_badge(entry["state"])),
                tag("td", entry["attempts"], class_="num"),
                tag("td", _short(str(detail), 80), class_="detail", title=detail or None),
            ]
        ),
    )


def _short(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def detail_href(letter_id: str) -> str:
    return f"/dead-letters/{quote(letter_id, safe='')}"


DEAD_LETTER_COLUMNS = (
    "Event id",
    "Reason",
    "Error",
    "Attempts",
    "Failed at",
    "Origin",
    "Type",
    "Invoice",
    "Amount",
)


def dead_letter_table(letters: Sequence[Letter], caption: str, *, links: bool = True) -> Html:
    if not letters:
        return tag("p", "No dead letters match.", class_="empty")
    head = tag("tr", join(tag("th", c, scope="col") for c in DEAD_LETTER_COLUMNS))
    rows = [_dead_letter_row(letter, links) for letter in letters]
    table = tag(
        "table",
        join(
            [tag("caption", caption, class_="visually-hidden"), tag("thead", head), tag("tbody", join(rows))]
        ),
        class_="data",
        id="dead-letter-table",
    )
    return tag("div", table, class_="table-wrap")


def _dead_letter_row(letter: Letter, links: bool) -> Html:
    ident = tag("a", letter.id, href=detail_href(letter.id)) if links else escape(letter.id)
    amount = f"{letter.amount} {letter.currency or ''}".strip() if letter.amount else DASH
    cells = [
        tag("th", ident, scope="row", class_="mono"),
        tag("td", tag("span", letter.reason, class_="badge bad")),
        tag("td", _short(letter.error, 90), class_="detail", title=letter.error or None),
        tag("td", letter.attempts, class_="num"),
        tag("td", when(letter.failed_at)),
        tag("td", letter.origin or DASH),
        tag("td", letter.type or DASH),
        tag("td", letter.invoice_id or DASH),
        tag("td", amount, class_="num"),
    ]
    return tag("tr", join(cells), data_dead_letter=letter.id)


def facts(letter: Letter) -> Html:
    rows = [
        ("Reason", letter.reason),
        ("Attempts", letter.attempts),
        ("Failed at", when(letter.failed_at)),
        ("Origin (configured source)", letter.origin or DASH),
        ("CloudEvent source", letter.source or DASH),
        ("Type", letter.type or DASH),
        ("Invoice", lookup_link(letter.invoice_id)),
        ("Amount", f"{letter.amount} {letter.currency or ''}".strip() if letter.amount else DASH),
        ("Earlier replays", letter.summary()["replays"]),
        ("Story", lookup_link(letter.id)),
    ]
    return join((tag("div", join([tag("dt", k), tag("dd", v)])) for k, v in rows), "\n")


def pretty(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode()


def header_rows(headers: dict[str, Any]) -> Html:
    rows = []
    for name in sorted(headers):
        value = headers[name]
        shown = value if isinstance(value, str) else orjson.dumps(value).decode()
        rows.append(
            tag("tr", join([tag("th", name, scope="row", class_="mono"), tag("td", shown, class_="mono")]))
        )
    return join(rows, "\n")


def options(values: Iterable[tuple[str, str]], selected: str | None) -> Html:
    return join(tag("option", label, value=value, selected=value == selected) for value, label in values)


def hidden(name: str, value: str) -> Html:
    return Html(f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">')


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], caption: str) -> Html:
    head = tag("tr", join(tag("th", c, scope="col") for c in columns))
    body = join(tag("tr", join(tag("td", cell) for cell in row)) for row in rows)
    inner = join([tag("caption", caption, class_="visually-hidden"), tag("thead", head), tag("tbody", body)])
    return tag("div", tag("table", inner, class_="data"), class_="table-wrap")


def ledger_table(entries: Sequence[dict[str, Any]]) -> Html:
    if not entries:
        return tag("p", "No ledger entry names this id.", class_="empty")
    columns = (
        "Updated",
        "Event",
        "Origin",
        "State",
        "Invoice",
        "Attempts",
        "Transaction",
        "Reason",
        "Last error",
    )
    rows = [
        (
            when(e["updated_at"]),
            tag("span", e["event_id"], class_="mono"),
            e["origin"],
            state_badge(e["state"]),
            e.get("invoice_id") or DASH,
            e["attempts"],
            e.get("transaction_id") or DASH,
            e.get("reason") or DASH,
            _short(e.get("last_error") or DASH, 120),
        )
        for e in entries
    ]
    return table(columns, rows, "Ledger entries")


def audit_table(records: Sequence[dict[str, Any]]) -> Html:
    if not records:
        return tag("p", "No audit records.", class_="empty")
    columns = ("At", "Actor", "Action", "Selector", "Count", "Details")
    rows = [
        (
            when(r["at"]),
            r["actor"],
            r["action"],
            r["selector"],
            r["count"],
            _short(orjson.dumps(r["details"]).decode(), 200),
        )
        for r in records
    ]
    return table(columns, rows, "Audit records")
